/**
 * The normal path's trailers and informational responses at the initiator (docs/streams.md §1),
 * from HTTP/1.1 and HTTP/2 local services, driven through the local router with an HTTP/2 client
 * playing the responder (test/helpers/local-harness.ts).
 */
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { resetStreamWith } from '../../src/shared/http2-stream.ts';
import { startService, type TestService } from '../helpers/http.ts';
import {
  exchange,
  localRoute,
  routerHarness,
  type RouterHarness,
} from '../helpers/local-harness.ts';

const { NGHTTP2_ENHANCE_YOUR_CALM } = http2.constants;

interface H2Service {
  readonly target: string;
  close(): Promise<void>;
}

async function startH2Service(
  handler: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void,
): Promise<H2Service> {
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    handler(stream, headers);
  });
  server.on('sessionError', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    target: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

describe('an HTTP/1.1 local service', () => {
  let service: TestService;
  let harness: RouterHarness;

  before(async () => {
    service = await startService((req, res) => {
      req.resume();
      switch (req.url) {
        case '/trailers':
          res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-checksum' });
          res.write('chunk one, ');
          res.addTrailers({ 'x-checksum': 'c0ffee' });
          res.end('chunk two');
          return;
        case '/chunked':
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.write('no ');
          res.end('trailers');
          return;
        case '/hints':
          res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style' });
          res.end('after the hints');
          return;
        case '/600':
          res.writeHead(600);
          res.end('a status HTTP does not have');
          return;
        default:
          res.end('plain');
      }
    });
    harness = await routerHarness([localRoute({ target: service.target })]);
  });

  after(async () => {
    await harness.close();
    await service.close();
  });

  it("sends a chunked response's trailers on as a trailing HEADERS frame", async () => {
    const reply = await exchange(harness.client, { ':path': '/trailers' });
    assert.equal(reply.status, 200);
    assert.equal(reply.body.toString(), 'chunk one, chunk two');
    assert.equal(reply.trailers?.['x-checksum'], 'c0ffee');
    assert.equal(reply.rstCode, 0);
  });

  it('ends a chunked response without trailers cleanly, with no trailers', async () => {
    const reply = await exchange(harness.client, { ':path': '/chunked' });
    assert.deepEqual(
      [reply.status, reply.body.toString(), reply.trailers],
      [200, 'no trailers', undefined],
    );
    assert.equal(reply.rstCode, 0);
  });

  it('ends a response with a content-length without waiting for trailers', async () => {
    const reply = await exchange(harness.client, { ':path': '/plain' });
    assert.deepEqual(
      [reply.status, reply.body.toString(), reply.trailers],
      [200, 'plain', undefined],
    );
  });

  it('answers 502 for a status past 599, which HTTP/2 cannot carry, and keeps serving', async () => {
    const reply = await exchange(harness.client, { ':path': '/600' });
    assert.equal(reply.status, 502);
    assert.match(reply.body.toString(), /answered with status 600/);
    assert.equal((await exchange(harness.client, { ':path': '/plain' })).status, 200);
  });

  it('passes a 103 Early Hints on before the final response', async () => {
    const reply = await exchange(harness.client, { ':path': '/hints' });
    assert.equal(reply.informational.length, 1);
    assert.equal(reply.informational[0]?.[':status'], 103);
    assert.equal(reply.informational[0]?.['link'], '</style.css>; rel=preload; as=style');
    assert.deepEqual([reply.status, reply.body.toString()], [200, 'after the hints']);
  });
});

describe('an HTTP/2 local service (protocol: http2)', () => {
  let service: H2Service;
  let harness: RouterHarness;
  let down: RouterHarness;

  before(async () => {
    service = await startH2Service((stream, headers) => {
      const chunks: Buffer[] = [];
      let requestTrailers: http2.IncomingHttpHeaders = {};
      stream.on('trailers', (trailers: http2.IncomingHttpHeaders) => (requestTrailers = trailers));
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', () => {
        if (headers[':path'] === '/reset') {
          stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
          return;
        }
        if (headers[':path'] === '/reset-after') {
          stream.respond({ ':status': 200 });
          stream.write('partial', () => resetStreamWith(stream, NGHTTP2_ENHANCE_YOUR_CALM));
          return;
        }
        stream.respond(
          { ':status': 200, 'x-authority': headers[':authority'], 'x-path': headers[':path'] },
          { waitForTrailers: true },
        );
        stream.once('wantTrailers', () =>
          stream.sendTrailers({
            'x-request-trailer': String(requestTrailers['x-request-trailer'] ?? 'none'),
            'x-te': String(headers['te'] ?? 'none'),
          }),
        );
        stream.end(`got ${Buffer.concat(chunks).length} bytes`);
      });
    });
    harness = await routerHarness([localRoute({ target: service.target, protocol: 'http2' })]);
    const stopped = await startH2Service(() => {});
    await stopped.close();
    down = await routerHarness([localRoute({ target: stopped.target, protocol: 'http2' })]);
  });

  after(async () => {
    await harness.close();
    await down.close();
    await service.close();
  });

  it('forwards :authority, :path and te, and sends the trailers back', async () => {
    const reply = await exchange(harness.client, {
      ':path': '/svc/Method?x=1',
      ':authority': 'caller.example',
      te: 'trailers',
    });
    assert.equal(reply.status, 200);
    assert.equal(reply.headers['x-authority'], 'caller.example');
    assert.equal(reply.headers['x-path'], '/svc/Method?x=1');
    assert.equal(reply.body.toString(), 'got 0 bytes');
    assert.equal(reply.trailers?.['x-te'], 'trailers');
    assert.equal(reply.trailers?.['x-request-trailer'], 'none');
  });

  it('sends request trailers on to the service, after the body', async () => {
    const stream = harness.client.request(
      { ':method': 'POST', ':path': '/upload' },
      { waitForTrailers: true },
    );
    stream.on('error', () => {});
    stream.once('wantTrailers', () =>
      stream.sendTrailers({ 'x-request-trailer': 'from the caller' }),
    );
    stream.end(Buffer.alloc(100_000));
    const trailers = await new Promise<http2.IncomingHttpHeaders>((resolve) =>
      stream.once('trailers', resolve),
    );
    assert.equal(trailers['x-request-trailer'], 'from the caller');
  });

  it('answers 502 when the service resets the stream before its response', async () => {
    const reply = await exchange(harness.client, { ':method': 'POST', ':path': '/reset' }, 'x');
    assert.equal(reply.status, 502);
    assert.match(reply.body.toString(), /NGHTTP2_REFUSED_STREAM/);
  });

  it("resets the tunnel stream with the service's own code after the response began", async () => {
    const reply = await exchange(
      harness.client,
      { ':method': 'POST', ':path': '/reset-after' },
      'x',
    );
    assert.equal(reply.status, 200);
    assert.equal(reply.rstCode, NGHTTP2_ENHANCE_YOUR_CALM);
    assert.equal(reply.trailers, undefined);
  });

  it('answers 502 when the service cannot be reached', async () => {
    const reply = await exchange(down.client, { ':path': '/x' });
    assert.equal(reply.status, 502);
    assert.match(
      reply.body.toString(),
      /^local service http:\/\/127\.0\.0\.1:\d+ failed: .*ECONNREFUSED/,
    );
  });
});
