/**
 * The stats registry. Names are Envoy's (protocol reference §9) and are the source of truth; admin/
 * renders snapshots of this registry and owns no state. Stats are declared by the code that counts
 * them, like Envoy's ALL_*_STATS macros next to their filter.
 *
 * A stat, once created, lives as long as the registry (as in Envoy), unless its owner removes it: a
 * gauge for a node that went away reads 0 rather than vanishing, until the responder's bound on
 * such gauges (`max_departed_stats`) removes the oldest.
 */

export type StatType = 'counter' | 'gauge';

export interface StatSnapshot {
  readonly name: string;
  readonly type: StatType;
  readonly value: number;
}

export class Counter {
  #value = 0;

  get value(): number {
    return this.#value;
  }

  inc(by = 1): void {
    this.#value += by;
  }
}

export class Gauge {
  #value = 0;

  get value(): number {
    return this.#value;
  }

  set(value: number): void {
    this.#value = value;
  }

  inc(by = 1): void {
    this.#value += by;
  }

  dec(by = 1): void {
    this.#value -= by;
  }
}

export class StatsRegistry {
  readonly #stats = new Map<string, Counter | Gauge>();

  /** Returns the counter with this name, creating it at 0. */
  counter(name: string): Counter {
    return this.#get(name, Counter);
  }

  /** Returns the gauge with this name, creating it at 0. */
  gauge(name: string): Gauge {
    return this.#get(name, Gauge);
  }

  /** The current value of a stat, or undefined when it was never created. */
  value(name: string): number | undefined {
    return this.#stats.get(name)?.value;
  }

  /** Removes a stat; a later `counter`/`gauge` call with its name starts it at 0 again. */
  remove(name: string): void {
    this.#stats.delete(name);
  }

  /** Every stat, sorted by name (Envoy's `/stats` order). */
  snapshot(): StatSnapshot[] {
    const rows: StatSnapshot[] = [];
    for (const [name, stat] of this.#stats) {
      rows.push({ name, type: stat instanceof Counter ? 'counter' : 'gauge', value: stat.value });
    }
    return rows.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  #get<T extends Counter | Gauge>(name: string, kind: new () => T): T {
    const existing = this.#stats.get(name);
    if (existing !== undefined) {
      if (!(existing instanceof kind)) {
        throw new TypeError(`stat ${name} already exists as a ${existing.constructor.name}`);
      }
      return existing;
    }
    const created = new kind();
    this.#stats.set(name, created);
    return created;
  }
}
