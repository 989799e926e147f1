import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Histogram } from '../shared/stats.ts';
import { envoyNumber, quantilesOf } from './stats-histogram.ts';

describe('quantilesOf', () => {
  it('has nothing to say of an empty histogram', () => {
    assert.equal(quantilesOf(new Histogram([1, 10]).snapshot()), undefined);
  });

  it('interpolates within the bucket that holds the rank', () => {
    const histogram = new Histogram([10, 20]);
    for (const ms of [1, 2, 3, 15]) histogram.observe(ms);
    const [p0, p25, p50, p75, , , , , , p100] = quantilesOf(histogram.snapshot()) ?? [];
    assert.equal(p0, 0);
    assert.equal(p25, 10 / 3);
    assert.equal(p50, 20 / 3);
    assert.equal(p75, 10);
    assert.equal(p100, 20);
  });

  it('reads samples above every bound as the last bound', () => {
    const histogram = new Histogram([10]);
    histogram.observe(50);
    assert.deepEqual(new Set(quantilesOf(histogram.snapshot())), new Set([10]));
  });
});

describe('envoyNumber', () => {
  it("prints as Envoy's admin does: %g-like, six significant digits", () => {
    assert.deepEqual(
      [0.5, 1, 209.99, 600000, 1800000, 3600000, 2 / 3, Number.NaN].map(envoyNumber),
      ['0.5', '1', '209.99', '600000', '1.8e+06', '3.6e+06', '0.666667', 'nan'],
    );
  });
});
