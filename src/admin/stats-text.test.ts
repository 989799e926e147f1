import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { renderStatsText } from './stats-text.ts';
import { StatsRegistry, type StatSnapshot } from '../shared/stats.ts';

const rows: StatSnapshot[] = [
  { name: 'reverse_connections.clusters.downstream-cluster', type: 'gauge', value: 1 },
  { name: 'reverse_connections.nodes.downstream-node', type: 'gauge', value: 1 },
  { name: 'server.live', type: 'gauge', value: 1 },
];

describe('renderStatsText', () => {
  it('writes one "name: value" line per stat', () => {
    assert.equal(
      renderStatsText(rows),
      'reverse_connections.clusters.downstream-cluster: 1\n' +
        'reverse_connections.nodes.downstream-node: 1\n' +
        'server.live: 1\n',
    );
  });

  it('writes nothing for no stats', () => {
    assert.equal(renderStatsText([]), '');
  });

  it('keeps only the stats whose names match the filter', () => {
    assert.equal(
      renderStatsText(rows, /nodes\./),
      'reverse_connections.nodes.downstream-node: 1\n',
    );
    assert.equal(
      renderStatsText(rows, /^reverse_connections\./),
      'reverse_connections.clusters.downstream-cluster: 1\n' +
        'reverse_connections.nodes.downstream-node: 1\n',
    );
  });

  it('writes nothing when the filter matches no name', () => {
    assert.equal(renderStatsText(rows, /no-such-stat/), '');
  });

  it('writes counters and gauges alike, including 0 and negative values', () => {
    const stats = new StatsRegistry();
    stats.counter('a.total');
    stats.gauge('b.level').dec(2);
    assert.equal(renderStatsText(stats.snapshot()), 'a.total: 0\nb.level: -2\n');
  });

  it("writes a registry's stats in its name order", () => {
    const stats = new StatsRegistry();
    stats.gauge('z').set(3);
    stats.counter('a').inc(2);
    stats.gauge('m').set(1);
    assert.equal(renderStatsText(stats.snapshot()), 'a: 2\nm: 1\nz: 3\n');
  });

  it('keeps the order it is given', () => {
    const reversed = [...rows].reverse();
    assert.equal(renderStatsText(reversed).split('\n')[0], 'server.live: 1');
  });
});

describe('renderStatsText with histograms', () => {
  it("writes Envoy's quantile line, or No recorded values, in name order", () => {
    const stats = new StatsRegistry();
    stats.counter('a.total').inc();
    stats.histogram('b.time').observe(3);
    stats.histogram('c.time');
    assert.equal(
      renderStatsText(stats.snapshot()),
      'a.total: 1\n' +
        'b.time: P0(nan,1) P25(nan,2) P50(nan,3) P75(nan,4) P90(nan,4.6) P95(nan,4.8) ' +
        'P99(nan,4.96) P99.5(nan,4.98) P99.9(nan,4.996) P100(nan,5)\n' +
        'c.time: No recorded values\n',
    );
  });

  it("writes Envoy's cumulative buckets with histogram_buckets=cumulative", () => {
    const stats = new StatsRegistry();
    stats.histogram('h1').observe(300);
    assert.equal(
      renderStatsText(stats.snapshot(), undefined, 'cumulative'),
      'h1: B0.5(nan,0) B1(nan,0) B5(nan,0) B10(nan,0) B25(nan,0) B50(nan,0) B100(nan,0) ' +
        'B250(nan,0) B500(nan,1) B1000(nan,1) B2500(nan,1) B5000(nan,1) B10000(nan,1) ' +
        'B30000(nan,1) B60000(nan,1) B300000(nan,1) B600000(nan,1) B1.8e+06(nan,1) B3.6e+06(nan,1)\n',
    );
  });
});
