/**
 * The results: each metric's median per contender, as a ratio to `direct` and to the best peer
 * (the best of the contenders that are neither direct nor revtun), printed as a table and written
 * as JSON with the raw samples, the options and the machine.
 */
import type { Machine } from './tools.ts';

export interface Metric {
  readonly figure: string;
  readonly name: string;
  readonly unit: string;
  readonly better: 'higher' | 'lower';
  /** Samples per contender (one per round). */
  readonly samples: Map<string, number[]>;
  /** Why a contender has no value here (failed, not available, not measured). */
  readonly notes: Map<string, string>;
  /** Errors (non-2xx, socket errors) seen per contender across rounds. */
  readonly errors: Map<string, number>;
}

export function newMetric(
  figure: string,
  name: string,
  unit: string,
  better: 'higher' | 'lower',
): Metric {
  return { figure, name, unit, better, samples: new Map(), notes: new Map(), errors: new Map() };
}

export function addSample(metric: Metric, contender: string, value: number, errors = 0): void {
  const list = metric.samples.get(contender) ?? [];
  list.push(value);
  metric.samples.set(contender, list);
  if (errors > 0) metric.errors.set(contender, (metric.errors.get(contender) ?? 0) + errors);
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  if (sorted.length === 0) return Number.NaN;
  return sorted.length % 2 === 1
    ? (sorted[mid] ?? Number.NaN)
    : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

export interface Row {
  readonly contender: string;
  readonly median?: number;
  readonly samples: readonly number[];
  readonly vsDirect?: number;
  readonly vsBestPeer?: number;
  readonly bestPeer?: string;
  readonly errors: number;
  readonly note?: string;
}

export function rows(metric: Metric, order: readonly string[], peers: ReadonlySet<string>): Row[] {
  const medians = new Map([...metric.samples].map(([name, values]) => [name, median(values)]));
  const direct = medians.get('direct');
  let bestPeer: string | undefined;
  for (const [name, value] of medians) {
    if (!peers.has(name) || Number.isNaN(value)) continue;
    const best = bestPeer === undefined ? undefined : medians.get(bestPeer);
    if (best === undefined || (metric.better === 'higher' ? value > best : value < best))
      bestPeer = name;
  }
  const best = bestPeer === undefined ? undefined : medians.get(bestPeer);
  return order
    .filter((name) => medians.has(name) || metric.notes.has(name))
    .map((name) => {
      const value = medians.get(name);
      const note = metric.notes.get(name);
      return {
        contender: name,
        samples: metric.samples.get(name) ?? [],
        errors: metric.errors.get(name) ?? 0,
        ...(value === undefined ? {} : { median: value }),
        ...(value !== undefined && direct !== undefined && direct !== 0
          ? { vsDirect: value / direct }
          : {}),
        ...(value !== undefined && best !== undefined && best !== 0
          ? { vsBestPeer: value / best }
          : {}),
        ...(bestPeer === undefined ? {} : { bestPeer }),
        ...(note === undefined ? {} : { note }),
      };
    });
}

function formatNumber(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  if (Math.abs(value) >= 1000) return Math.round(value).toLocaleString('en-US');
  if (Math.abs(value) >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

const ratio = (value: number | undefined) => (value === undefined ? '—' : `${value.toFixed(2)}×`);

/** A plain-text table, one block per metric. */
export function table(
  metrics: readonly Metric[],
  order: readonly string[],
  peers: ReadonlySet<string>,
): string {
  const lines: string[] = [];
  const header = ['figure', 'contender', 'median', '× direct', '× best peer', 'rounds', 'note'];
  const body: string[][] = [];
  for (const metric of metrics) {
    for (const row of rows(metric, order, peers)) {
      body.push([
        `${metric.figure}: ${metric.name} (${metric.unit}, ${metric.better} is better)`,
        row.contender,
        row.median === undefined ? '—' : formatNumber(row.median) + (row.errors > 0 ? ' !' : ''),
        ratio(row.vsDirect),
        row.vsBestPeer === undefined ? '—' : `${ratio(row.vsBestPeer)} (${row.bestPeer ?? ''})`,
        row.samples.map(formatNumber).join(' '),
        [row.note, row.errors > 0 ? `${row.errors} errors` : undefined].filter(Boolean).join('; '),
      ]);
    }
  }
  const widths = header.map((h, i) =>
    Math.max(h.length, ...body.map((cells) => (cells[i] ?? '').length)),
  );
  const format = (cells: readonly string[]) =>
    cells
      .map((cell, i) => cell.padEnd(widths[i] ?? 0))
      .join(' | ')
      .trimEnd();
  lines.push(format(header), widths.map((w) => '-'.repeat(w)).join('-|-'));
  let previous = '';
  for (const cells of body) {
    if (cells[0] === previous) lines.push(format(['', ...cells.slice(1)]));
    else lines.push(format(cells));
    previous = cells[0] ?? '';
  }
  return lines.join('\n');
}

export interface Results {
  readonly startedAt: string;
  readonly quick: boolean;
  readonly options: Record<string, unknown>;
  readonly machine: Machine;
  readonly contenders: Record<string, { description: string; error?: string }>;
  /** Raw figures of revtun's scale measurements, per round. */
  readonly details: readonly Record<string, unknown>[];
  readonly metrics: readonly {
    figure: string;
    name: string;
    unit: string;
    better: string;
    rows: Row[];
  }[];
  readonly failures: readonly string[];
}
