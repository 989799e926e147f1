/**
 * A caller's request headers while the egress listener works on them: what a request script may
 * read and change before the request is routed and forwarded. Names are lower-case, as Node gives
 * them; a repeated header reads as its values joined with ", " (as Envoy's Lua `get`). The
 * request's pseudo-headers (`:method`, `:path`, `:authority`, `:scheme`) can be read, not changed,
 * and are not part of `toObject()`: the forwarded request takes them from the request itself.
 */
import type { IncomingHttpHeaders } from 'node:http';

export class RequestHeaders {
  /**
   * The headers as received, until the first change: most requests are never changed (no script,
   * no credential to remove), and copying every header of every request showed in profiles.
   */
  readonly #received: IncomingHttpHeaders;
  #fields: Map<string, string[]> | undefined;
  readonly pseudo: Readonly<Record<string, string>>;

  constructor(headers: IncomingHttpHeaders, pseudo: Readonly<Record<string, string>> = {}) {
    this.pseudo = pseudo;
    this.#received = headers;
  }

  get(name: string): string | undefined {
    const key = name.toLowerCase();
    if (key.startsWith(':')) return this.pseudo[key];
    if (this.#fields !== undefined) return this.#fields.get(key)?.join(', ');
    // Own fields only: Node's header object is a plain one, and `constructor` is no header.
    const value = Object.hasOwn(this.#received, key) ? this.#received[key] : undefined;
    return Array.isArray(value) ? value.join(', ') : value;
  }

  /** Adds a value, keeping those already there. */
  add(name: string, value: string): void {
    const key = name.toLowerCase();
    const fields = this.#changed();
    const values = fields.get(key);
    if (values === undefined) fields.set(key, [value]);
    else values.push(value);
  }

  /** Sets the header to this one value. */
  replace(name: string, value: string): void {
    this.#changed().set(name.toLowerCase(), [value]);
  }

  remove(name: string): void {
    const key = name.toLowerCase();
    if (this.#fields === undefined && !Object.hasOwn(this.#received, key)) return;
    this.#changed().delete(key);
  }

  /** Every header, as Node's outgoing header objects take them. */
  toObject(): Record<string, string | string[]> {
    const out: Record<string, string | string[]> = {};
    if (this.#fields === undefined) {
      for (const name of Object.keys(this.#received)) {
        const value = this.#received[name];
        if (value === undefined) continue;
        out[name] = Array.isArray(value) && value.length === 1 ? (value[0] as string) : value;
      }
      return out;
    }
    for (const [name, values] of this.#fields)
      out[name] = values.length === 1 ? (values[0] as string) : values;
    return out;
  }

  /**
   * Every header, for reading once: the received object itself while nothing changed (a list
   * value may then be a one-element array where `toObject` gives a string; both send one field).
   */
  view(): Readonly<Record<string, string | string[] | undefined>> {
    return this.#fields === undefined ? this.#received : this.toObject();
  }

  /** The fields to change, copied from the received headers on the first change. */
  #changed(): Map<string, string[]> {
    if (this.#fields !== undefined) return this.#fields;
    const fields = new Map<string, string[]>();
    for (const [name, value] of Object.entries(this.#received)) {
      if (value === undefined) continue;
      fields.set(name, Array.isArray(value) ? [...value] : [value]);
    }
    this.#fields = fields;
    return fields;
  }
}
