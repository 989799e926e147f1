import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { RequestHeadParser, ResponseHeadParser, headerValues } from './http1-head.ts';

const hex = (text: string): Buffer => Buffer.from(text.replace(/\s+/g, ''), 'hex');

// "GET /r HTTP/1.1\r\nHost: a\r\nX-A:  v \r\n\r\n" followed by "RPING".
const requestWithTunnelBytes = hex(`
  47 45 54 20 2f 72 20 48 54 54 50 2f 31 2e 31 0d 0a
  48 6f 73 74 3a 20 61 0d 0a
  58 2d 41 3a 20 20 76 20 0d 0a
  0d 0a
  52 50 49 4e 47`);

describe('RequestHeadParser', () => {
  it('parses a request head and keeps the bytes after it as tunnel bytes', () => {
    const result = new RequestHeadParser().push(requestWithTunnelBytes);
    assert.equal(result.state, 'complete');
    assert.equal(result.head.method, 'GET');
    assert.equal(result.head.target, '/r');
    assert.equal(result.head.version, 'HTTP/1.1');
    assert.deepEqual(result.head.headers, [
      ['host', 'a'],
      ['x-a', 'v'],
    ]);
    assert.equal(result.rest.toString('latin1'), 'RPING');
  });

  it('gives the same result however the bytes are split into chunks', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.integer({ min: 1, max: requestWithTunnelBytes.length - 1 }), {
          maxLength: 8,
        }),
        (cuts) => {
          const parser = new RequestHeadParser();
          const points = [0, ...cuts.sort((a, b) => a - b), requestWithTunnelBytes.length];
          let complete;
          for (let i = 1; i < points.length; i += 1) {
            const chunk = requestWithTunnelBytes.subarray(points[i - 1], points[i]);
            if (complete !== undefined) {
              complete.rest = Buffer.concat([complete.rest, chunk]);
              continue;
            }
            const result = parser.push(chunk);
            assert.notEqual(result.state, 'error');
            if (result.state === 'complete') complete = { head: result.head, rest: result.rest };
          }
          assert.ok(complete !== undefined);
          assert.equal(complete.head.target, '/r');
          assert.equal(complete.rest.toString('latin1'), 'RPING');
        },
      ),
    );
  });

  it('reports incomplete until the blank line arrives', () => {
    const parser = new RequestHeadParser();
    assert.equal(parser.push(Buffer.from('GET / HTTP/1.1\r\nhost: a\r\n')).state, 'incomplete');
    assert.equal(parser.push(Buffer.from('\r')).state, 'incomplete');
    assert.equal(parser.push(Buffer.from('\n')).state, 'complete');
  });

  it('skips empty lines before the request line', () => {
    const result = new RequestHeadParser().push(Buffer.from('\r\n\r\nGET / HTTP/1.1\r\n\r\n'));
    assert.equal(result.state, 'complete');
    assert.equal(result.head.target, '/');
  });

  const malformed: Array<[string, string, RegExp]> = [
    ['a bare LF', 'GET / HTTP/1.1\nhost: a\r\n\r\n', /bare LF/],
    ['a bare CR', 'GET / HTTP/1.1\rhost: a\r\n\r\n', /bare CR/],
    ['obsolete line folding', 'GET / HTTP/1.1\r\nx-a: b\r\n c\r\n\r\n', /folding/],
    ['whitespace before the colon', 'GET / HTTP/1.1\r\nx-a : b\r\n\r\n', /invalid header name/],
    ['a header line without a colon', 'GET / HTTP/1.1\r\nnocolon\r\n\r\n', /malformed header/],
    ['a NUL in a value', 'GET / HTTP/1.1\r\nx-a: b\x00c\r\n\r\n', /invalid characters/],
    ['a request line with two spaces', 'GET  / HTTP/1.1\r\n\r\n', /malformed request line/],
    ['HTTP/2 in a request line', 'GET / HTTP/2.0\r\n\r\n', /unsupported protocol version/],
    ['a method that is not a token', 'G(T / HTTP/1.1\r\n\r\n', /invalid method/],
    ['garbage', '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n', /malformed request line/],
  ];
  for (const [what, text, reason] of malformed) {
    it(`rejects ${what}`, () => {
      const result = new RequestHeadParser().push(Buffer.from(text, 'latin1'));
      assert.equal(result.state, 'error');
      assert.match(result.reason, reason);
      assert.equal(result.tooLarge, false);
    });
  }

  it('rejects a bare LF as soon as it arrives, before the head is complete', () => {
    const result = new RequestHeadParser().push(Buffer.from('GET / HTTP/1.1\n'));
    assert.equal(result.state, 'error');
  });

  it('keeps a bare LF after the head as tunnel bytes, in the same chunk or a later one', () => {
    const head = 'GET / HTTP/1.1\r\nhost: a\r\n\r\n';
    const whole = new RequestHeadParser().push(Buffer.from(`${head}x\ny`));
    assert.equal(whole.state, 'complete');
    assert.equal(whole.state === 'complete' && whole.rest.toString('latin1'), 'x\ny');
    const parser = new RequestHeadParser();
    assert.equal(parser.push(Buffer.from(head.slice(0, -2))).state, 'incomplete');
    const split = parser.push(Buffer.from('\r\n\n'));
    assert.equal(split.state === 'complete' && split.rest.toString('latin1'), '\n');
  });

  it('rejects a head larger than the byte cap, even one byte at a time', () => {
    const parser = new RequestHeadParser({ maxHeadBytes: 64, maxHeaders: 100 });
    const text = Buffer.from(`GET / HTTP/1.1\r\nx-long: ${'a'.repeat(100)}\r\n\r\n`);
    let result;
    for (const byte of text) {
      result = parser.push(Buffer.of(byte));
      if (result.state !== 'incomplete') break;
    }
    assert.equal(result?.state, 'error');
    assert.equal(result.tooLarge, true);
  });

  it('accepts a head of exactly the byte cap', () => {
    const text = 'GET / HTTP/1.1\r\nx: 1\r\n\r\n';
    const result = new RequestHeadParser({ maxHeadBytes: text.length, maxHeaders: 1 }).push(
      Buffer.from(text),
    );
    assert.equal(result.state, 'complete');
  });

  it('rejects more header fields than the cap', () => {
    const fields = Array.from({ length: 3 }, (_, i) => `x-${i}: v\r\n`).join('');
    const result = new RequestHeadParser({ maxHeadBytes: 8192, maxHeaders: 2 }).push(
      Buffer.from(`GET / HTTP/1.1\r\n${fields}\r\n`),
    );
    assert.equal(result.state, 'error');
    assert.match(result.reason, /more than 2 header fields/);
  });

  it('refuses to be fed after it finished', () => {
    const parser = new RequestHeadParser();
    parser.push(Buffer.from('GET / HTTP/1.1\r\n\r\n'));
    assert.throws(() => parser.push(Buffer.from('x')), /already finished/);
  });
});

describe('ResponseHeadParser', () => {
  it("parses Envoy's accepting response exactly", () => {
    // "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    const bytes = hex(`
      48 54 54 50 2f 31 2e 31 20 32 30 30 20 4f 4b 0d 0a
      43 6f 6e 74 65 6e 74 2d 4c 65 6e 67 74 68 3a 20 30 0d 0a
      0d 0a`);
    const result = new ResponseHeadParser().push(bytes);
    assert.equal(result.state, 'complete');
    assert.equal(result.head.status, 200);
    assert.equal(result.head.reason, 'OK');
    assert.deepEqual(headerValues(result.head.headers, 'Content-Length'), ['0']);
    assert.equal(result.rest.length, 0);
  });

  it('accepts a status line without a reason phrase', () => {
    const result = new ResponseHeadParser().push(Buffer.from('HTTP/1.1 429\r\n\r\n'));
    assert.equal(result.state, 'complete');
    assert.equal(result.head.status, 429);
  });

  it('rejects a status line that is not HTTP/1.x', () => {
    const result = new ResponseHeadParser().push(Buffer.from('SSH-2.0-OpenSSH\r\n\r\n'));
    assert.equal(result.state, 'error');
    assert.match(result.reason, /malformed status line/);
  });
});
