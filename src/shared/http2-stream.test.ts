import assert from 'node:assert/strict';
import http2, { type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { pollUntil } from '../../test/helpers/process.ts';
import { contentLength, watchEndStream } from './http2-stream.ts';

/**
 * Streams read only after their whole exchange arrived. The soak (`npm run soak`, roles in separate
 * processes) found the case where Node then closes the stream before it pushes the EOF, as for a
 * reset, and took 1.6 % of its requests (every response with an empty body, at times); this
 * in-process setup does not reproduce that order reliably, so these tests pin what must hold
 * either way: a complete response is complete, a cut-off one with RST_STREAM(NO_ERROR) is not.
 */
describe('watchEndStream on a stream read late', () => {
  let server: http2.Http2Server;
  let client: ClientHttp2Session;
  const serverClosed = new Map<string, Promise<void>>();

  before(async () => {
    server = http2.createServer();
    server.on('stream', (stream, headers) => {
      const path = headers[':path'] ?? '';
      stream.on('error', () => {});
      serverClosed.set(path, new Promise((resolve) => stream.once('close', () => resolve())));
      if (path === '/complete') {
        stream.respond({ ':status': 200, 'content-length': 5 });
        stream.end('hello');
      } else if (path === '/empty') {
        stream.respond({ ':status': 200, 'content-length': 0 });
        stream.end();
      } else {
        // 7 of the 10 bytes it declares, then RST_STREAM(NO_ERROR): cut off, "without error".
        stream.respond({ ':status': 200, 'content-length': 10 });
        stream.write('partial', () => stream.close(http2.constants.NGHTTP2_NO_ERROR));
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    client = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    client.on('error', () => {});
  });

  after(async () => {
    client.close();
    await new Promise((resolve) => server.close(resolve));
  });

  /** Requests `path` paused; reads it only once the whole exchange reached the client. */
  async function readLate(path: string): Promise<{ complete: boolean; body: string }> {
    const stream: ClientHttp2Stream = client.request({ ':path': path }, { endStream: true });
    stream.on('error', () => {});
    let declared: number | undefined;
    const complete = watchEndStream(stream, () => declared);
    stream.once('response', (headers) => (declared = contentLength(headers['content-length'])));
    stream.pause();
    await pollUntil(
      'the server to take the stream',
      () => Promise.resolve(serverClosed.has(path)),
      {
        timeoutMs: 5_000,
        intervalMs: 5,
      },
    );
    await serverClosed.get(path);
    // A PING's ack comes after every frame the server sent before it: they have all been read.
    await new Promise((resolve) => client.ping(resolve));
    let body = '';
    stream.on('data', (chunk: Buffer) => (body += chunk.toString()));
    stream.resume();
    // An empty body may end (and the stream go) as soon as it is resumed.
    await new Promise((resolve) =>
      stream.destroyed ? resolve(null) : stream.once('close', resolve),
    );
    return { complete: complete(), body };
  }

  it('counts a response whose declared length all arrived as complete', async () => {
    assert.deepEqual(await readLate('/complete'), { complete: true, body: 'hello' });
    assert.deepEqual(await readLate('/empty'), { complete: true, body: '' });
  });

  it('still counts a response cut off with RST_STREAM(NO_ERROR) as incomplete', async () => {
    const { complete, body } = await readLate('/cut');
    assert.equal(complete, false);
    // Node 20 still delivers the 7 bytes that came before the reset; Node 22 and 24 drop them.
    assert.ok(['partial', ''].includes(body), `body ${JSON.stringify(body)}`);
  });
});

describe('contentLength', () => {
  it('reads one decimal number and nothing else', () => {
    assert.equal(contentLength('0'), 0);
    assert.equal(contentLength('1234'), 1234);
    for (const value of [undefined, '', '-1', '1.5', '1,2', ' 1', ['1']]) {
      assert.equal(contentLength(value), undefined, String(value));
    }
  });
});
