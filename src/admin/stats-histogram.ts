/**
 * What the three `/stats` renderings share about histograms: Envoy's quantile list, quantiles
 * estimated from revtun's fixed buckets, and numbers printed the way Envoy prints them.
 *
 * Envoy keeps a log-linear histogram (circllhist) per stat and prints quantiles computed from it;
 * revtun keeps Envoy's default fixed buckets only (shared/stats.ts), so its quantiles are
 * estimates: linear within the bucket that holds the rank, as Prometheus' `histogram_quantile`
 * does, and a sample above the last bound reads as that bound. Envoy also prints an "interval"
 * value (samples since the last stats flush); revtun keeps no flush interval, so the interval is
 * `nan` in text and `null` in JSON, which is what Envoy prints for an interval without samples.
 */
import type { HistogramSnapshot } from '../shared/stats.ts';

/** Envoy's `supported_quantiles`, in percent. */
export const supportedQuantiles: readonly number[] = [0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100];

/** The histogram's value at each of `supportedQuantiles`, or undefined with no samples. */
export function quantilesOf(histogram: HistogramSnapshot): number[] | undefined {
  if (histogram.count === 0) return undefined;
  return supportedQuantiles.map((percent) => quantile(histogram, percent / 100));
}

function quantile(histogram: HistogramSnapshot, q: number): number {
  const { bounds, cumulative, count } = histogram;
  const rank = q * count;
  let below = 0;
  for (let slot = 0; slot < bounds.length; slot++) {
    const atOrBelow = cumulative[slot] as number;
    // The first bucket that reaches the rank; for q = 0, the first that holds any sample.
    if (atOrBelow > 0 && atOrBelow >= rank) {
      const lower = slot === 0 ? 0 : (bounds[slot - 1] as number);
      const upper = bounds[slot] as number;
      return lower + ((upper - lower) * (rank - below)) / (atOrBelow - below);
    }
    below = atOrBelow;
  }
  // The rank lies above every bound: the last bound is all that is known.
  return bounds[bounds.length - 1] ?? 0;
}

/**
 * A number as Envoy's fmt `{}` prints a double in these places, %g-like with six significant
 * digits: `0.5`, `209.99`, `600000`, `1.8e+06`.
 */
export function envoyNumber(value: number): string {
  if (Number.isNaN(value)) return 'nan';
  if (!Number.isFinite(value)) return value > 0 ? 'inf' : '-inf';
  if (Number.isInteger(value) && Math.abs(value) < 1e6) return String(value);
  const text = value.toPrecision(6);
  const [mantissa = text, exponent] = text.split('e');
  const trimmed = mantissa.includes('.') ? mantissa.replace(/\.?0+$/, '') : mantissa;
  if (exponent === undefined) return trimmed;
  const power = Number(exponent);
  return `${trimmed}e${power < 0 ? '-' : '+'}${String(Math.abs(power)).padStart(2, '0')}`;
}
