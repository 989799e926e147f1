import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Backoff } from './backoff.ts';

/** The host dialler's settings: 1 s base, Envoy's default 30 s cap. */
const envoy = { baseMs: 1000, maxMs: 30_000 };
const schedule = [1000, 2000, 4000, 8000, 16_000, 30_000, 30_000];

function delays(backoff: Backoff, count: number): number[] {
  return Array.from({ length: count }, () => backoff.fail());
}

describe('Backoff', () => {
  it('waits 1, 2, 4, 8, 16, 30, 30 s after consecutive failures without jitter', () => {
    const backoff = new Backoff({ ...envoy, jitter: 0 });
    assert.deepEqual(delays(backoff, 7), schedule);
  });

  it('adds no jitter when random returns 0', () => {
    const backoff = new Backoff({ ...envoy, jitter: 0.15, random: () => 0 });
    assert.deepEqual(delays(backoff, 7), schedule);
  });

  it('adds just under 15 % when random returns 0.999', () => {
    const backoff = new Backoff({ ...envoy, jitter: 0.15, random: () => 0.999 });
    const actual = delays(backoff, 7);
    // delay × (1 + 0.15 × 0.999), rounded to whole ms.
    assert.deepEqual(actual, [1150, 2300, 4599, 9199, 18_398, 34_496, 34_496]);
    actual.forEach((ms, index) => {
      const delay = schedule[index] as number;
      assert.ok(ms >= delay && ms <= delay * 1.15, `${ms} ms for a ${delay} ms delay`);
    });
  });

  it('keeps every jittered delay between the delay and 15 % more', () => {
    fc.assert(
      fc.property(
        fc.array(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true })),
        (draws) => {
          let next = 0;
          const backoff = new Backoff({ ...envoy, jitter: 0.15, random: () => draws[next++] ?? 0 });
          draws.forEach((_, index) => {
            const delay = schedule[Math.min(index, schedule.length - 1)] as number;
            const ms = backoff.fail();
            assert.ok(ms >= delay && ms <= Math.round(delay * 1.15), `${ms} ms for ${delay} ms`);
          });
        },
      ),
    );
  });

  it('uses Math.random when no random is given, within the jitter bounds', () => {
    const backoff = new Backoff({ ...envoy, jitter: 0.15 });
    const ms = backoff.fail();
    assert.ok(ms >= 1000 && ms <= 1150, `${ms} ms`);
  });

  it('starts again at the base delay after a reset', () => {
    const backoff = new Backoff({ ...envoy, jitter: 0 });
    assert.deepEqual(delays(backoff, 4), [1000, 2000, 4000, 8000]);
    backoff.reset();
    assert.equal(backoff.failures, 0);
    assert.deepEqual(delays(backoff, 3), [1000, 2000, 4000]);
  });

  it('stays at the base delay with atBase, still counting the failures', () => {
    const backoff = new Backoff({ baseMs: 1000, maxMs: 30_000, jitter: 0, random: () => 0 });
    const delays = [1, 2, 3, 4].map(() => backoff.fail({ atBase: true }));
    assert.deepEqual(delays, [1000, 1000, 1000, 1000]);
    assert.equal(backoff.failures, 4);
    assert.equal(backoff.fail(), 16_000);
  });

  it('counts consecutive failures', () => {
    const backoff = new Backoff({ ...envoy, jitter: 0 });
    assert.equal(backoff.failures, 0);
    delays(backoff, 3);
    assert.equal(backoff.failures, 3);
  });

  it('stays at the cap however many times it fails', () => {
    const backoff = new Backoff({ ...envoy, jitter: 0 });
    const actual = delays(backoff, 200);
    assert.equal(actual.at(-1), 30_000);
    assert.ok(actual.every((ms) => Number.isFinite(ms) && ms <= 30_000));
  });

  it('honours a cap below the base delay from the first failure', () => {
    const backoff = new Backoff({ baseMs: 1000, maxMs: 500, jitter: 0 });
    assert.deepEqual(delays(backoff, 2), [500, 500]);
  });

  it('honours a cap that is not a power of two of the base', () => {
    const backoff = new Backoff({ baseMs: 1000, maxMs: 5000, jitter: 0 });
    assert.deepEqual(delays(backoff, 5), [1000, 2000, 4000, 5000, 5000]);
  });
});
