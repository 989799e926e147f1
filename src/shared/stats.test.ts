import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Counter, Gauge, Histogram, StatsRegistry } from './stats.ts';

describe('Counter', () => {
  it('starts at 0 and counts up by 1 or by the amount given', () => {
    const counter = new Counter();
    assert.equal(counter.value, 0);
    counter.inc();
    counter.inc(5);
    assert.equal(counter.value, 6);
  });
});

describe('Gauge', () => {
  it('starts at 0, goes up and down, and can be set', () => {
    const gauge = new Gauge();
    assert.equal(gauge.value, 0);
    gauge.inc();
    gauge.inc(4);
    gauge.dec();
    assert.equal(gauge.value, 4);
    gauge.dec(2);
    assert.equal(gauge.value, 2);
    gauge.set(42);
    assert.equal(gauge.value, 42);
  });

  it('can go below 0', () => {
    const gauge = new Gauge();
    gauge.dec();
    assert.equal(gauge.value, -1);
  });
});

describe('Histogram', () => {
  it('counts each sample in the first bucket whose bound is at or above it, cumulatively', () => {
    const histogram = new Histogram([1, 10, 100]);
    for (const value of [0.5, 1, 2, 10, 50, 1000]) histogram.observe(value);
    assert.deepEqual(histogram.snapshot(), {
      bounds: [1, 10, 100],
      cumulative: [2, 4, 5],
      count: 6,
      sum: 1063.5,
    });
  });

  it('is listed by the registry with its count as value and its buckets', () => {
    const stats = new StatsRegistry();
    stats.histogram('a.rq_time').observe(3);
    const [row] = stats.snapshot();
    assert.equal(row?.type, 'histogram');
    assert.equal(row?.value, 1);
    assert.equal(row?.histogram?.count, 1);
    assert.equal(stats.value('a.rq_time'), 1);
    assert.throws(() => stats.counter('a.rq_time'), /already exists as a Histogram/);
  });
});

describe('StatsRegistry', () => {
  it('creates a stat at 0 and returns the same one for the same name', () => {
    const stats = new StatsRegistry();
    const counter = stats.counter('reverse_tunnel_initiator.handshake_failed');
    assert.equal(counter.value, 0);
    counter.inc();
    assert.equal(stats.counter('reverse_tunnel_initiator.handshake_failed'), counter);
    assert.equal(stats.counter('reverse_tunnel_initiator.handshake_failed').value, 1);
    const gauge = stats.gauge('reverse_tunnel_acceptor.nodes.n1');
    assert.equal(stats.gauge('reverse_tunnel_acceptor.nodes.n1'), gauge);
  });

  it('reads a value by name, and undefined for a stat never created', () => {
    const stats = new StatsRegistry();
    assert.equal(stats.value('a'), undefined);
    stats.gauge('a').set(3);
    stats.counter('b');
    assert.equal(stats.value('a'), 3);
    assert.equal(stats.value('b'), 0);
  });

  it('refuses to make a gauge of a counter or a counter of a gauge', () => {
    const stats = new StatsRegistry();
    stats.counter('c');
    stats.gauge('g');
    assert.throws(() => stats.gauge('c'), {
      name: 'TypeError',
      message: 'stat c already exists as a Counter',
    });
    assert.throws(() => stats.counter('g'), {
      name: 'TypeError',
      message: 'stat g already exists as a Gauge',
    });
  });

  it('snapshots every stat sorted by name, with its type and value', () => {
    const stats = new StatsRegistry();
    stats.gauge('reverse_connections.nodes.n2').set(1);
    stats.counter('reverse_connections.accepted').inc(7);
    stats.gauge('reverse_connections.clusters.c1').set(2);
    stats.gauge('reverse_connections.nodes.n1');
    assert.deepEqual(stats.snapshot(), [
      { name: 'reverse_connections.accepted', type: 'counter', value: 7 },
      { name: 'reverse_connections.clusters.c1', type: 'gauge', value: 2 },
      { name: 'reverse_connections.nodes.n1', type: 'gauge', value: 0 },
      { name: 'reverse_connections.nodes.n2', type: 'gauge', value: 1 },
    ]);
  });

  it('sorts names by code unit, so upper case comes before lower case', () => {
    const stats = new StatsRegistry();
    for (const name of ['b', 'a_b', 'B', 'a.b', 'a']) stats.counter(name);
    assert.deepEqual(
      stats.snapshot().map((stat) => stat.name),
      ['B', 'a', 'a.b', 'a_b', 'b'],
    );
  });

  it('takes a snapshot that later counting does not change', () => {
    const stats = new StatsRegistry();
    const counter = stats.counter('x');
    counter.inc();
    const before = stats.snapshot();
    counter.inc();
    assert.deepEqual(before, [{ name: 'x', type: 'counter', value: 1 }]);
    assert.equal(stats.snapshot()[0]?.value, 2);
  });

  it('keeps a gauge that went back to 0 in the snapshot', () => {
    const stats = new StatsRegistry();
    const gauge = stats.gauge('reverse_connections.nodes.gone');
    gauge.inc();
    gauge.dec();
    assert.deepEqual(stats.snapshot(), [
      { name: 'reverse_connections.nodes.gone', type: 'gauge', value: 0 },
    ]);
  });

  it('snapshots nothing when no stat was created', () => {
    assert.deepEqual(new StatsRegistry().snapshot(), []);
  });
});

describe('StatsRegistry tags', () => {
  it("lists a stat's tags, the first creator's, until the stat is removed", () => {
    const stats = new StatsRegistry();
    stats.gauge('sp.nodes.n.1', { name: 'sp.nodes', labels: { node: 'n.1' } }).inc();
    stats.gauge('sp.nodes.n.1', { name: 'other', labels: {} }).inc();
    stats.counter('plain');
    assert.deepEqual(stats.snapshot(), [
      { name: 'plain', type: 'counter', value: 0 },
      {
        name: 'sp.nodes.n.1',
        type: 'gauge',
        value: 2,
        tags: { name: 'sp.nodes', labels: { node: 'n.1' } },
      },
    ]);
    stats.remove('sp.nodes.n.1');
    stats.gauge('sp.nodes.n.1');
    assert.equal(stats.snapshot()[1]?.tags, undefined);
  });
});
