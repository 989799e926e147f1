import assert from 'node:assert/strict';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { resetStreamWith } from '../shared/http2-stream.ts';

/** Opens one stream, lets the server answer it with `serve`, and reports how the client saw it end. */
async function clientView(
  serve: (stream: http2.ServerHttp2Stream) => void,
): Promise<{ endStream: boolean; rstCode: number | undefined }> {
  const server = http2.createServer();
  server.on('stream', (stream) => {
    stream.on('error', () => {});
    serve(stream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const client = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  client.on('error', () => {});
  try {
    return await new Promise((resolve) => {
      const stream = client.request({ ':path': '/' });
      stream.on('error', () => {});
      let endStream = false;
      // END_STREAM is an EOF while the stream is still open (shared/http2-stream.ts).
      stream.on('end', () => (endStream = !stream.closed));
      stream.resume();
      stream.on('close', () => resolve({ endStream, rstCode: stream.rstCode }));
    });
  } finally {
    client.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

describe('resetStreamWith', () => {
  it('resets an answered stream with the given code and no END_STREAM before it', async () => {
    const seen = await clientView((stream) => {
      stream.respond({ ':status': 200 });
      stream.write('partial', () => resetStreamWith(stream, http2.constants.NGHTTP2_CONNECT_ERROR));
    });
    assert.deepEqual(seen, { endStream: false, rstCode: http2.constants.NGHTTP2_CONNECT_ERROR });
  });

  it('resets a stream whose writable side has ended with close(code)', async () => {
    const seen = await clientView((stream) => {
      stream.respond({ ':status': 200 }, { waitForTrailers: true });
      stream.once('wantTrailers', () => resetStreamWith(stream, http2.constants.NGHTTP2_CANCEL));
      stream.end('whole body, no trailers yet');
    });
    assert.equal(seen.rstCode, http2.constants.NGHTTP2_CANCEL);
  });
});
