import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { formatDuration, parseDuration } from './duration.ts';

describe('parseDuration', () => {
  const valid: Array<[string, number]> = [
    ['0ms', 0],
    ['250ms', 250],
    ['2s', 2000],
    ['1.5s', 1500],
    ['5m', 300_000],
    ['1h', 3_600_000],
    ['0.5h', 1_800_000],
    ['007s', 7000],
  ];
  for (const [text, ms] of valid) {
    it(`reads ${text} as ${ms} ms`, () => {
      assert.equal(parseDuration(text), ms);
    });
  }

  it('rounds to whole milliseconds', () => {
    assert.equal(parseDuration('1.4ms'), 1);
    assert.equal(parseDuration('1.5ms'), 2);
    assert.equal(parseDuration('0.0004s'), 0);
  });

  it('ignores white space around the duration', () => {
    assert.equal(parseDuration(' 2s\n'), 2000);
  });

  const invalid = [
    '10',
    '',
    '10x',
    '10d',
    '2S',
    '2 s',
    '-1s',
    '+1s',
    '.5s',
    '5.s',
    '1e3ms',
    '1s500ms',
    'ms',
    '0x10s',
    '1,5s',
  ];
  for (const text of invalid) {
    it(`refuses ${JSON.stringify(text)}`, () => {
      assert.equal(parseDuration(text), undefined);
    });
  }

  it('refuses a number too large to be finite', () => {
    assert.equal(parseDuration(`${'9'.repeat(400)}ms`), undefined);
  });

  it('refuses any bare number, so that no reader has to guess the unit', () => {
    fc.assert(
      fc.property(fc.nat(), (n) => {
        assert.equal(parseDuration(String(n)), undefined);
      }),
    );
  });
});

describe('formatDuration', () => {
  it('writes whole seconds in seconds', () => {
    assert.equal(formatDuration(0), '0s');
    assert.equal(formatDuration(2000), '2s');
    assert.equal(formatDuration(300_000), '300s');
  });

  it('writes anything else in milliseconds', () => {
    assert.equal(formatDuration(250), '250ms');
    assert.equal(formatDuration(1500), '1500ms');
  });

  it('writes any whole number of ms so that parseDuration reads it back', () => {
    fc.assert(
      fc.property(fc.nat({ max: 1e12 }), (ms) => {
        assert.equal(parseDuration(formatDuration(ms)), ms);
      }),
    );
  });
});
