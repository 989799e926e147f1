/**
 * The stats registry. Names are Envoy's (protocol reference §9) and are the source of truth; admin/
 * renders snapshots of this registry and owns no state. Stats are declared by the code that counts
 * them, like Envoy's ALL_*_STATS macros next to their filter.
 *
 * A stat, once created, lives as long as the registry (as in Envoy), unless its owner removes it: a
 * gauge for a node that went away reads 0 rather than vanishing, until the responder's bound on
 * such gauges (`max_departed_stats`) removes the oldest.
 */

export type StatType = 'counter' | 'gauge' | 'histogram';

/**
 * A stat's name with its variable parts taken out as labels (Envoy's tag extraction), given by the
 * code that creates the stat, which knows which part of the name is a node id, a cluster or a host
 * (ids may contain dots, so the name alone cannot say). `/stats/prometheus` renders `name` with
 * these labels, so that a family stays one family whatever the number of nodes; `/stats` and JSON
 * keep the full name.
 */
export interface StatTags {
  /** The name without the tagged parts, e.g. `reverse_tunnel_acceptor.nodes` for a node gauge. */
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
}

export interface StatSnapshot {
  readonly name: string;
  readonly type: StatType;
  /** A counter's or gauge's value; a histogram's count of samples. */
  readonly value: number;
  /** For a histogram only: its buckets at the time of the snapshot. */
  readonly histogram?: HistogramSnapshot;
  /** The tags its creator gave, if any. */
  readonly tags?: StatTags;
}

export interface HistogramSnapshot {
  /** Upper bounds, ascending (Envoy's `supported_buckets`). */
  readonly bounds: readonly number[];
  /** Samples at or below each bound, cumulative (as Prometheus' `_bucket{le=…}`). */
  readonly cumulative: readonly number[];
  readonly count: number;
  readonly sum: number;
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

/**
 * Envoy's default histogram buckets (`stats_config.histogram_bucket_settings` unset), in the
 * stat's unit: milliseconds for the `_time`/`_ms` histograms revtun keeps.
 */
export const defaultBuckets: readonly number[] = [
  0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 300_000, 600_000,
  1_800_000, 3_600_000,
];

/** A cumulative histogram with fixed buckets: O(buckets) memory whatever the number of samples. */
export class Histogram {
  readonly bounds: readonly number[];
  /** Samples per bucket (not cumulative); the last slot is above every bound. */
  readonly #counts: number[];
  #count = 0;
  #sum = 0;

  constructor(bounds: readonly number[] = defaultBuckets) {
    this.bounds = bounds;
    this.#counts = new Array<number>(bounds.length + 1).fill(0);
  }

  get count(): number {
    return this.#count;
  }

  get sum(): number {
    return this.#sum;
  }

  observe(value: number): void {
    let slot = 0;
    while (slot < this.bounds.length && value > (this.bounds[slot] as number)) slot++;
    this.#counts[slot] = (this.#counts[slot] as number) + 1;
    this.#count++;
    this.#sum += value;
  }

  snapshot(): HistogramSnapshot {
    const cumulative: number[] = [];
    let running = 0;
    for (let slot = 0; slot < this.bounds.length; slot++) {
      running += this.#counts[slot] as number;
      cumulative.push(running);
    }
    return { bounds: this.bounds, cumulative, count: this.#count, sum: this.#sum };
  }
}

type Stat = Counter | Gauge | Histogram;

export class StatsRegistry {
  readonly #stats = new Map<string, Stat>();
  /** Tags of the stats created with some; the first creator's tags stay. */
  readonly #tags = new Map<string, StatTags>();

  /** Returns the counter with this name, creating it at 0 (with `tags`, if given). */
  counter(name: string, tags?: StatTags): Counter {
    return this.#get(name, Counter, tags);
  }

  /** Returns the gauge with this name, creating it at 0 (with `tags`, if given). */
  gauge(name: string, tags?: StatTags): Gauge {
    return this.#get(name, Gauge, tags);
  }

  /** Returns the histogram with this name, creating it empty (with `tags`, if given). */
  histogram(name: string, tags?: StatTags): Histogram {
    return this.#get(name, Histogram, tags);
  }

  /** A counter's or gauge's value, a histogram's count, or undefined when it was never created. */
  value(name: string): number | undefined {
    const stat = this.#stats.get(name);
    return stat instanceof Histogram ? stat.count : stat?.value;
  }

  /** Removes a stat; a later `counter`/`gauge` call with its name starts it at 0 again. */
  remove(name: string): void {
    this.#stats.delete(name);
    this.#tags.delete(name);
  }

  /** Every stat, sorted by name (Envoy's `/stats` order). */
  snapshot(): StatSnapshot[] {
    const rows: StatSnapshot[] = [];
    for (const [name, stat] of this.#stats) {
      const tags = this.#tags.get(name);
      const row: StatSnapshot =
        stat instanceof Histogram
          ? { name, type: 'histogram', value: stat.count, histogram: stat.snapshot() }
          : { name, type: stat instanceof Counter ? 'counter' : 'gauge', value: stat.value };
      rows.push(tags === undefined ? row : { ...row, tags });
    }
    return rows.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  #get<T extends Stat>(name: string, kind: new () => T, tags: StatTags | undefined): T {
    const existing = this.#stats.get(name);
    if (existing !== undefined) {
      if (!(existing instanceof kind)) {
        throw new TypeError(`stat ${name} already exists as a ${existing.constructor.name}`);
      }
      return existing;
    }
    const created = new kind();
    this.#stats.set(name, created);
    if (tags !== undefined) this.#tags.set(name, tags);
    return created;
  }
}
