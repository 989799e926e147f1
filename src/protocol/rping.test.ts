import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { RPING, RpingEchoReader, RpingInterceptor, echoBudgetWindowMs } from './rping.ts';

const bytes = (text: string): Buffer => Buffer.from(text, 'latin1');

/** Feeds chunks to a fresh interceptor at one instant and sums what comes out. */
function intercept(chunks: Buffer[]): { echoes: number; data: string; flood: boolean } {
  const interceptor = new RpingInterceptor();
  let echoes = 0;
  let data = '';
  for (const chunk of chunks) {
    const result = interceptor.feed(chunk, 0);
    echoes += result.echoes;
    if (result.data !== null) data += result.data.toString('latin1');
    if (result.flood) return { echoes, data, flood: true };
  }
  return { echoes, data, flood: false };
}

describe('RpingInterceptor', () => {
  it('matches the five bytes 52 50 49 4E 47', () => {
    assert.equal(RPING.toString('hex'), '5250494e47');
  });

  it('echoes a ping split as "RPI" + "NG" once', () => {
    const interceptor = new RpingInterceptor();
    assert.deepEqual(interceptor.feed(bytes('RPI'), 0), { echoes: 0, data: null, flood: false });
    assert.equal(interceptor.held, 3);
    assert.deepEqual(interceptor.feed(bytes('NG'), 0), { echoes: 1, data: null, flood: false });
    assert.equal(interceptor.latched, false);
  });

  it('echoes "RPING" coalesced with " GET /" once and delivers " GET /"', () => {
    assert.deepEqual(intercept([bytes('RPING GET /')]), {
      echoes: 1,
      data: ' GET /',
      flood: false,
    });
  });

  it('latches off at "HELLO": the RPING after it is data and gets no echo', () => {
    assert.deepEqual(intercept([bytes('HELLO'), bytes('RPING')]), {
      echoes: 0,
      data: 'HELLORPING',
      flood: false,
    });
  });

  it('hands back a held prefix with the byte that broke it', () => {
    // "RP" then the HTTP/2 preface: the held "RP" is data, followed by "PRI * ...".
    assert.deepEqual(intercept([bytes('RPINGRP'), bytes('PRI * HTTP/2.0')]), {
      echoes: 1,
      data: 'RPPRI * HTTP/2.0',
      flood: false,
    });
  });

  it('starts HTTP/2 at a preface right after pings', () => {
    const preface = bytes('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
    assert.deepEqual(intercept([Buffer.concat([RPING, RPING, preface])]), {
      echoes: 2,
      data: preface.toString('latin1'),
      flood: false,
    });
  });

  it('resets on a flood of 13 200 RPINGs in one burst, at the 13 108th echo (as Envoy)', () => {
    const flood = Buffer.concat(Array.from({ length: 13_200 }, () => RPING));
    assert.deepEqual(intercept([flood]), { echoes: 13_108, data: '', flood: true });
  });

  it('refills the echo budget after the window', () => {
    const interceptor = new RpingInterceptor();
    const burst = Buffer.concat(Array.from({ length: 13_000 }, () => RPING));
    assert.equal(interceptor.feed(burst, 0).flood, false);
    assert.equal(interceptor.feed(burst, echoBudgetWindowMs).flood, false);
  });

  it('gives the same result for any split of any input', () => {
    const alphabet = fc.constantFrom(...'RPINGX'.split(''));
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.constant('RPING'), alphabet), { maxLength: 30 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        (parts, cuts) => {
          const input = bytes(parts.join(''));
          const points = [
            ...new Set([0, ...cuts.map((c) => c % (input.length + 1)), input.length]),
          ].sort((a, b) => a - b);
          const chunks = points.slice(1).map((end, i) => input.subarray(points[i], end));
          assert.deepEqual(intercept(chunks), intercept([input]));
        },
      ),
    );
  });

  it('strips exactly the leading complete RPINGs and delivers everything from the first other byte', () => {
    fc.assert(
      fc.property(
        fc.nat({ max: 20 }),
        fc.string({ minLength: 1, maxLength: 20 }),
        (pings, tail) => {
          fc.pre(!'RPING'.startsWith(tail.slice(0, 5)) || tail.length === 0);
          const input = Buffer.concat([
            ...Array.from({ length: pings }, () => RPING),
            Buffer.from(tail, 'latin1'),
          ]);
          const result = intercept([input]);
          assert.equal(result.echoes, pings);
          assert.equal(result.data, Buffer.from(tail, 'latin1').toString('latin1'));
        },
      ),
    );
  });
});

describe('RpingEchoReader', () => {
  it('counts complete echoes and holds a split one', () => {
    const reader = new RpingEchoReader();
    assert.deepEqual(reader.feed(bytes('RPINGRP')), { echoes: 1, violation: false });
    assert.equal(reader.held, 2);
    assert.deepEqual(reader.feed(bytes('ING')), { echoes: 1, violation: false });
    assert.equal(reader.held, 0);
  });

  it('flags any byte that cannot be part of an echo', () => {
    assert.deepEqual(new RpingEchoReader().feed(bytes('RPINGHELLO')), {
      echoes: 1,
      violation: true,
    });
    assert.deepEqual(new RpingEchoReader().feed(bytes('XXXXX')), { echoes: 0, violation: true });
  });
});
