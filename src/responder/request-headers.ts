/**
 * A caller's request headers while the egress listener works on them: what a request script may
 * read and change before the request is routed and forwarded. Names are lower-case, as Node gives
 * them; a repeated header reads as its values joined with ", " (as Envoy's Lua `get`). The
 * request's pseudo-headers (`:method`, `:path`, `:authority`, `:scheme`) can be read, not changed,
 * and are not part of `toObject()`: the forwarded request takes them from the request itself.
 */
import type { IncomingHttpHeaders } from 'node:http';

export class RequestHeaders {
  readonly #fields = new Map<string, string[]>();
  readonly pseudo: Readonly<Record<string, string>>;

  constructor(headers: IncomingHttpHeaders, pseudo: Readonly<Record<string, string>> = {}) {
    this.pseudo = pseudo;
    for (const [name, value] of Object.entries(headers)) {
      if (value === undefined) continue;
      this.#fields.set(name, Array.isArray(value) ? [...value] : [value]);
    }
  }

  get(name: string): string | undefined {
    const key = name.toLowerCase();
    if (key.startsWith(':')) return this.pseudo[key];
    return this.#fields.get(key)?.join(', ');
  }

  /** Adds a value, keeping those already there. */
  add(name: string, value: string): void {
    const key = name.toLowerCase();
    const values = this.#fields.get(key);
    if (values === undefined) this.#fields.set(key, [value]);
    else values.push(value);
  }

  /** Sets the header to this one value. */
  replace(name: string, value: string): void {
    this.#fields.set(name.toLowerCase(), [value]);
  }

  remove(name: string): void {
    this.#fields.delete(name.toLowerCase());
  }

  /** Every header, as Node's outgoing header objects take them. */
  toObject(): Record<string, string | string[]> {
    const out: Record<string, string | string[]> = {};
    for (const [name, values] of this.#fields)
      out[name] = values.length === 1 ? (values[0] as string) : values;
    return out;
  }
}
