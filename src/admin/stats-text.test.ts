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
