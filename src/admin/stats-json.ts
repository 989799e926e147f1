/**
 * Envoy's `/stats?format=json` rendering: `{"stats":[{"name":…,"value":…}, …]}`, counters and
 * gauges in name order, then, when any histogram is listed, one last element
 * `{"histograms":{"supported_quantiles":[…],"computed_quantiles":[{"name":…,"values":[{"interval":
 * null,"cumulative":…}, …]}]}}`, or with `histogram_buckets=cumulative`
 * `{"histograms":[{"name":…,"buckets":[{"upper_bound":…,"interval":null,"cumulative":…}, …]}]}`
 * (envoy source/server/admin/stats_render.cc; the shapes of its admin tests). A histogram with no
 * samples has null quantiles.
 */
import type { StatSnapshot } from '../shared/stats.ts';
import { quantilesOf, supportedQuantiles } from './stats-histogram.ts';
import type { HistogramBuckets } from './stats-text.ts';

export function renderStatsJson(
  stats: readonly StatSnapshot[],
  filter?: RegExp,
  buckets: HistogramBuckets = 'summary',
): string {
  const rows: unknown[] = [];
  const histograms: StatSnapshot[] = [];
  for (const stat of stats) {
    if (filter !== undefined && !filter.test(stat.name)) continue;
    if (stat.histogram === undefined) rows.push({ name: stat.name, value: stat.value });
    else histograms.push(stat);
  }
  if (histograms.length > 0) {
    rows.push({
      histograms: buckets === 'cumulative' ? bucketsOf(histograms) : summaryOf(histograms),
    });
  }
  return `${JSON.stringify({ stats: rows })}\n`;
}

function summaryOf(histograms: readonly StatSnapshot[]): unknown {
  return {
    supported_quantiles: supportedQuantiles,
    computed_quantiles: histograms.map((stat) => {
      const values = stat.histogram === undefined ? undefined : quantilesOf(stat.histogram);
      return {
        name: stat.name,
        values: supportedQuantiles.map((_percent, index) => ({
          interval: null,
          cumulative: values?.[index] ?? null,
        })),
      };
    }),
  };
}

function bucketsOf(histograms: readonly StatSnapshot[]): unknown {
  return histograms.map((stat) => ({
    name: stat.name,
    buckets: (stat.histogram?.bounds ?? []).map((bound, slot) => ({
      upper_bound: bound,
      interval: null,
      cumulative: stat.histogram?.cumulative[slot] ?? 0,
    })),
  }));
}
