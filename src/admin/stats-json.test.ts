import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Histogram, StatsRegistry } from '../shared/stats.ts';
import { renderStatsJson } from './stats-json.ts';

describe('renderStatsJson', () => {
  it("writes Envoy's {stats: [{name, value}]} without a histograms element when there are none", () => {
    const stats = new StatsRegistry();
    stats.counter('c1').inc(10);
    stats.gauge('g1').set(-1);
    assert.deepEqual(JSON.parse(renderStatsJson(stats.snapshot())), {
      stats: [
        { name: 'c1', value: 10 },
        { name: 'g1', value: -1 },
      ],
    });
  });

  it('adds one histograms element with the quantiles last', () => {
    const stats = new StatsRegistry();
    stats.counter('c1').inc(10);
    stats.histogram('h1').observe(3);
    stats.histogram('h2');
    const rows = (JSON.parse(renderStatsJson(stats.snapshot())) as { stats: unknown[] }).stats;
    assert.deepEqual(rows[0], { name: 'c1', value: 10 });
    const last = rows[1] as {
      histograms: {
        supported_quantiles: number[];
        computed_quantiles: Array<{ name: string; values: Array<{ cumulative: number | null }> }>;
      };
    };
    assert.equal(rows.length, 2);
    assert.deepEqual(
      last.histograms.supported_quantiles,
      [0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100],
    );
    const [h1, h2] = last.histograms.computed_quantiles;
    assert.equal(h1?.name, 'h1');
    assert.equal(h1?.values[9]?.cumulative, 5);
    assert.equal(h2?.name, 'h2');
    assert.equal(h2?.values[0]?.cumulative, null);
  });

  it('writes buckets with histogram_buckets=cumulative, and applies the filter', () => {
    const stats = new StatsRegistry();
    stats.counter('c1');
    const histogram = stats.histogram('h1');
    histogram.observe(0.2);
    histogram.observe(2);
    const parsed = JSON.parse(renderStatsJson(stats.snapshot(), /^h/, 'cumulative')) as {
      stats: Array<{ histograms: Array<{ name: string; buckets: unknown[] }> }>;
    };
    assert.equal(parsed.stats.length, 1);
    const [h1] = parsed.stats[0]?.histograms ?? [];
    assert.equal(h1?.name, 'h1');
    assert.deepEqual(h1?.buckets.slice(0, 3), [
      { upper_bound: 0.5, interval: null, cumulative: 1 },
      { upper_bound: 1, interval: null, cumulative: 1 },
      { upper_bound: 5, interval: null, cumulative: 2 },
    ]);
    assert.equal(h1?.buckets.length, new Histogram().bounds.length);
  });
});
