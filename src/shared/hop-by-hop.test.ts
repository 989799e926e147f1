import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { forEachEndToEndHeader, type HeaderValue } from './hop-by-hop.ts';

/** The fields forEachEndToEndHeader keeps, in the order it keeps them. */
function endToEnd(headers: Record<string, HeaderValue>): Array<[string, string | string[]]> {
  const kept: Array<[string, string | string[]]> = [];
  forEachEndToEndHeader(headers, (name, value) => kept.push([name, value]));
  return kept;
}

describe('forEachEndToEndHeader', () => {
  it('keeps end-to-end fields with their values, in order', () => {
    assert.deepEqual(
      endToEnd({ host: 'example.com', accept: '*/*', 'set-cookie': ['a=1', 'b=2'] }),
      [
        ['host', 'example.com'],
        ['accept', '*/*'],
        ['set-cookie', ['a=1', 'b=2']],
      ],
    );
  });

  it("drops every field in Go's ReverseProxy hop-by-hop list", () => {
    assert.deepEqual(
      endToEnd({
        connection: 'close',
        'proxy-connection': 'keep-alive',
        'keep-alive': 'timeout=5',
        'proxy-authenticate': 'Basic',
        'proxy-authorization': 'Basic Zm9vOmJhcg==',
        te: 'gzip',
        trailer: 'x-checksum',
        'transfer-encoding': 'chunked',
        upgrade: 'websocket',
        'x-kept': 'yes',
      }),
      [['x-kept', 'yes']],
    );
  });

  it('drops every field the Connection header names, whatever their case (RFC 9110 §7.6.1)', () => {
    assert.deepEqual(
      endToEnd({
        connection: 'keep-alive, X-Hop , x-other',
        'x-hop': 'a',
        'x-other': 'b',
        'x-end': 'c',
      }),
      [['x-end', 'c']],
    );
  });

  it('reads the Connection header when it arrives as several lines', () => {
    assert.deepEqual(
      endToEnd({ connection: ['x-one', 'x-two'], 'x-one': '1', 'x-two': '2', 'x-three': '3' }),
      [['x-three', '3']],
    );
  });

  it('ignores empty tokens in the Connection header', () => {
    assert.deepEqual(endToEnd({ connection: ', ,x-hop,', 'x-hop': 'a', accept: '*/*' }), [
      ['accept', '*/*'],
    ]);
  });

  it('keeps te: trailers, which HTTP/2 allows (RFC 9113 §8.2.2)', () => {
    assert.deepEqual(endToEnd({ te: 'trailers' }), [['te', 'trailers']]);
  });

  it('keeps te: trailers written in another case or as several lines, normalised', () => {
    assert.deepEqual(endToEnd({ te: ' Trailers ' }), [['te', 'trailers']]);
    assert.deepEqual(endToEnd({ te: ['trailers', 'trailers'] }), [['te', 'trailers']]);
  });

  it('drops te: gzip', () => {
    assert.deepEqual(endToEnd({ te: 'gzip' }), []);
  });

  it('keeps only trailers from a te that asks for trailers and something else', () => {
    assert.deepEqual(endToEnd({ te: 'trailers, deflate' }), [['te', 'trailers']]);
  });

  it('drops an empty te', () => {
    assert.deepEqual(endToEnd({ te: '' }), []);
  });

  it('keeps te: trailers when Connection names te, as RFC 9110 §10.1.4 requires of HTTP/1.1 senders', () => {
    assert.deepEqual(endToEnd({ connection: 'te', te: 'trailers' }), [['te', 'trailers']]);
  });

  it('skips pseudo-headers', () => {
    assert.deepEqual(
      endToEnd({
        ':method': 'GET',
        ':path': '/',
        ':authority': 'example.com',
        ':scheme': 'http',
        ':status': 200,
        accept: '*/*',
      }),
      [['accept', '*/*']],
    );
  });

  it('writes numbers as strings', () => {
    assert.deepEqual(endToEnd({ 'content-length': 42, 'x-zero': 0 }), [
      ['content-length', '42'],
      ['x-zero', '0'],
    ]);
  });

  it('skips fields whose value is undefined', () => {
    assert.deepEqual(endToEnd({ accept: undefined, host: 'h' }), [['host', 'h']]);
  });

  it('keeps nothing from no headers', () => {
    assert.deepEqual(endToEnd({}), []);
  });
});
