import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import type { Socket } from 'node:net';
import { describe, it } from 'node:test';
import { http2Preface, sniffProtocol, type SniffedProtocol } from './egress-sniff.ts';

/** Feeds chunks to a sniffer over a PassThrough standing in for the socket. */
function sniff(chunks: readonly Buffer[], timeoutMs = 1_000) {
  const socket = new PassThrough();
  const outcome = new Promise<{ protocol?: SniffedProtocol; why?: string; rest: Buffer }>(
    (resolve) => {
      sniffProtocol(socket as unknown as Socket, {
        timeoutMs,
        onProtocol: (protocol) => resolve({ protocol, rest: socket.read() as Buffer }),
        onGiveUp: (why) => resolve({ why, rest: Buffer.alloc(0) }),
      });
    },
  );
  for (const chunk of chunks) socket.write(chunk);
  return outcome;
}

describe('sniffProtocol', () => {
  it('recognizes the preface split byte by byte, and puts every byte back', async () => {
    const bytes = Buffer.concat([http2Preface, Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]);
    const result = await sniff(
      [...bytes.subarray(0, 24)].map((byte) => Buffer.from([byte])).concat(bytes.subarray(24)),
    );
    assert.equal(result.protocol, 'h2');
    assert.ok(result.rest.subarray(0, 24).equals(http2Preface));
  });

  it('decides HTTP/1.1 at the first byte that differs', async () => {
    const result = await sniff([Buffer.from('GET / HTTP/1.1\r\n')]);
    assert.equal(result.protocol, 'http/1.1');
    assert.equal(result.rest.toString(), 'GET / HTTP/1.1\r\n');
  });

  it('decides HTTP/1.1 for a request that starts like the preface and then differs', async () => {
    const result = await sniff([Buffer.from('PRI * HTTP/1.1\r\n')]);
    assert.equal(result.protocol, 'http/1.1');
  });

  it('gives up on a partial preface that stops, at the deadline', async () => {
    const result = await sniff([http2Preface.subarray(0, 10)], 100);
    assert.match(result.why ?? '', /no request within 100 ms/);
  });
});
