/**
 * Envoy's `/stats` text rendering (protocol reference §9): one line per stat, sorted by name,
 * `name: value` for counters and gauges. `filter` is a regular expression over names. (Envoy
 * prints histograms after the other stats; revtun keeps the one name order the reference states,
 * which scripts that `sort` or `grep` the output see either way.)
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
  for (const stat of stats) {
    if (filter !== undefined && !filter.test(stat.name)) continue;
    const value = stat.histogram === undefined ? String(stat.value) : histogramText(stat, buckets);
    text += `${stat.name}: ${value}\n`;
  }
  return text;
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
