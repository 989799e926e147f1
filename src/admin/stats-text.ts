/**
 * Envoy's `/stats` text rendering (protocol reference §9): one `name: value` line per counter and
 * gauge, sorted by name, then one line per histogram, as Envoy prints them after the others.
 * `filter` is a regular expression over names.
 *
 * A histogram line is Envoy's quantile summary,
 * `name: P0(nan,1) P25(nan,1.25) … P100(nan,5)` (interval,cumulative; see stats-histogram.ts for
 * why the interval is `nan` and the quantiles estimates), or `name: No recorded values`. With
 * `histogram_buckets=cumulative` it is Envoy's bucket form, `name: B0.5(nan,0) B1(nan,2) …`, which
 * carries the exact counts.
 */
import type { StatSnapshot } from '../shared/stats.ts';
import { envoyNumber, quantilesOf, supportedQuantiles } from './stats-histogram.ts';

export type HistogramBuckets = 'summary' | 'cumulative';

export function renderStatsText(
  stats: readonly StatSnapshot[],
  filter?: RegExp,
  buckets: HistogramBuckets = 'summary',
): string {
  let text = '';
  let histograms = '';
  for (const stat of stats) {
    if (filter !== undefined && !filter.test(stat.name)) continue;
    if (stat.histogram === undefined) text += `${stat.name}: ${stat.value}\n`;
    else histograms += `${stat.name}: ${histogramText(stat, buckets)}\n`;
  }
  return text + histograms;
}

function histogramText(stat: StatSnapshot, buckets: HistogramBuckets): string {
  const histogram = stat.histogram;
  if (histogram === undefined) return String(stat.value);
  if (buckets === 'cumulative') {
    return histogram.bounds
      .map((bound, slot) => `B${envoyNumber(bound)}(nan,${histogram.cumulative[slot] ?? 0})`)
      .join(' ');
  }
  const values = quantilesOf(histogram);
  if (values === undefined) return 'No recorded values';
  return supportedQuantiles
    .map((percent, index) => `P${percent}(nan,${envoyNumber(values[index] as number)})`)
    .join(' ');
}
