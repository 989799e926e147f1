/**
 * HTTP/2 limits on both roles (issue 4, item 5) and the initiator's refusal to be a relay: a fake
 * initiator sends the responder's client session a header block past `http2.max_header_list_size`,
 * a fake responder sends one to the initiator's server session, and CONNECT, `*` and absolute-form
 * targets never reach a local service.
 */
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { after, before, describe, it } from 'node:test';
import { startInitiator, type Initiator } from '../../src/initiator/initiator.ts';
import { LocalRouter } from '../../src/initiator/local-router.ts';
import type { Responder } from '../../src/responder/responder.ts';
import { silentLogger } from '../../src/shared/logger.ts';
import { envoyHandshakeRequest, FakeInitiator } from '../helpers/fake-initiator.ts';
import { FakeResponder, type FakeTunnel } from '../helpers/fake-responder.ts';
import { request, startService, type TestService } from '../helpers/http.ts';
import { pollUntil } from '../helpers/process.ts';
import { responderOnFreePorts, waitForEvent } from '../helpers/tunnels.ts';

const maxHeaderListSize = 4096;
const { NGHTTP2_ENHANCE_YOUR_CALM, NGHTTP2_PROTOCOL_ERROR } = http2.constants;

/** The defaults of `http2.stream_window` and `http2.connection_window`. */
const defaultStreamWindow = 1024 * 1024;
const defaultConnectionWindow = 4 * 1024 * 1024;

/**
 * Resolves once the peer has opened the session's window to `connection_window`: what `session`
 * may still send (its remote window) is above HTTP/2's initial 65 535 bytes, by at most the few
 * bytes the test has sent since.
 */
async function windowOpened(session: http2.Http2Session): Promise<void> {
  await pollUntil(
    'the WINDOW_UPDATE on stream 0',
    () => Promise.resolve((session.state.remoteWindowSize ?? 0) > 65_535),
    { timeoutMs: 5_000, intervalMs: 5 },
  );
  const window = session.state.remoteWindowSize ?? 0;
  assert.ok(
    window <= defaultConnectionWindow && window > defaultConnectionWindow - 64 * 1024,
    `remote window ${window}`,
  );
}

/** A service that counts what reaches it and answers with the request line and host. */
async function countingService(): Promise<TestService & { readonly seen: string[] }> {
  const seen: string[] = [];
  const service = await startService((req, res) => {
    seen.push(`${req.method} ${req.url} host=${req.headers.host}`);
    req.resume();
    req.on('end', () => res.end(`${req.method} ${req.url}`));
  });
  return Object.assign(service, { seen });
}

interface Exchange {
  readonly status: number | undefined;
  readonly headers: http2.IncomingHttpHeaders;
  readonly body: string;
  readonly rstCode: number;
}

/** One stream on a session: resolves when it closes, with the response or the reset code. */
function exchange(
  session: http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
): Promise<Exchange> {
  return new Promise((resolve) => {
    let stream: http2.ClientHttp2Stream;
    try {
      stream = session.request(headers, { endStream: true });
    } catch (error) {
      throw new Error(`the request could not be sent: ${String(error)}`, { cause: error });
    }
    let response: http2.IncomingHttpHeaders = {};
    let body = '';
    stream.on('error', () => {});
    stream.on('response', (received) => (response = received));
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => (body += chunk));
    stream.on('close', () => {
      const status = response[':status'] === undefined ? undefined : Number(response[':status']);
      resolve({ status, headers: response, body, rstCode: stream.rstCode ?? 0 });
    });
  });
}

describe("the responder's HTTP/2 client sessions", () => {
  let responder: Responder;
  let fake: FakeInitiator;
  let session: http2.ServerHttp2Session;
  let firstRequest: Promise<unknown>;
  const egress = () => responder.addresses.egress[0]!;

  before(async () => {
    responder = await responderOnFreePorts({
      http2: { max_header_list_size: maxHeaderListSize },
      // No RPING while the test runs: the checkout is not held up by an owed echo.
      tunnel: { ping_interval: '60s' },
    });
    fake = await FakeInitiator.connect(
      responder.addresses.tunnel,
      envoyHandshakeRequest({ node: 'fake', cluster: 'c1', tenant: 't1' }),
    );
    await fake.expectAccepted();
    // The first request checks the tunnel out: the responder's preface comes then.
    firstRequest = request(egress(), '/ok', { headers: { 'x-node-id': 'fake' } });
    session = await fake.serveHttp2(
      (stream, headers) => {
        const path = headers[':path'];
        if (path === '/huge-header') {
          stream.respond({ ':status': 200, 'x-big': 'a'.repeat(2 * maxHeaderListSize) });
          stream.end('must not arrive');
        } else if (path === '/many-headers') {
          const many: http2.OutgoingHttpHeaders = { ':status': 200 };
          for (let i = 0; i < 200; i += 1) many[`x-h${i}`] = '1';
          stream.respond(many);
          stream.end('must not arrive');
        } else {
          stream.respond({ ':status': 200 });
          stream.end('fine');
        }
      },
      // The fake may send a header block past what the responder announced.
      {},
    );
    assert.equal(((await firstRequest) as { text: string }).text, 'fine');
  });

  after(async () => {
    session.destroy();
    fake.destroy();
    await responder.close({ graceMs: 0 });
  });

  it('announces push off and its max_header_list_size', () => {
    assert.equal(session.remoteSettings.enablePush, false);
    assert.equal(session.remoteSettings.maxHeaderListSize, maxHeaderListSize);
  });

  it('announces its flow-control windows: stream_window in SETTINGS, connection_window by WINDOW_UPDATE', async () => {
    assert.equal(session.remoteSettings.initialWindowSize, defaultStreamWindow);
    await windowOpened(session);
  });

  it('refuses a response header block past max_header_list_size with a 502, and keeps the session', async () => {
    const reply = await request(egress(), '/huge-header', { headers: { 'x-node-id': 'fake' } });
    assert.equal(reply.status, 502);
    assert.match(reply.text, /^the tunnel to node fake failed before the response/);
    const again = await request(egress(), '/ok', { headers: { 'x-node-id': 'fake' } });
    assert.deepEqual([again.status, again.text], [200, 'fine']);
    assert.deepEqual(responder.tunnels(), [
      { nodeId: 'fake', clusterId: 'c1', tenantId: 't1', idle: 0, sessions: 1 },
    ]);
  });

  it('refuses a response with more header fields than a stream carries', async () => {
    const reply = await request(egress(), '/many-headers', { headers: { 'x-node-id': 'fake' } });
    assert.equal(reply.status, 502);
    const again = await request(egress(), '/ok', { headers: { 'x-node-id': 'fake' } });
    assert.equal(again.status, 200);
  });
});

/** An initiator with one tunnel to a fake responder, and that tunnel checked out. */
async function initiatorBehindFake(service: TestService): Promise<{
  initiator: Initiator;
  responder: FakeResponder;
  tunnel: FakeTunnel;
  session: http2.ClientHttp2Session;
}> {
  const responder = await FakeResponder.listen();
  const initiator = await startInitiator({
    node_id: 'n1',
    cluster_id: 'c1',
    tenant_id: 't1',
    http2: { max_header_list_size: maxHeaderListSize },
    max_concurrent_streams: 50,
    remote_clusters: [{ name: 'upstream', hosts: [responder.hostText] }],
    local_routes: [{ prefix: '/', target: service.target }],
  });
  const tunnel = await responder.accept();
  await tunnel.readHandshake();
  const connected = waitForEvent(initiator, 'handshake_success');
  tunnel.accept();
  await connected;
  const session = tunnel.http2Client();
  await waitForEvent(session, 'remoteSettings');
  return { initiator, responder, tunnel, session };
}

describe("the initiator's HTTP/2 server sessions", () => {
  let service: TestService & { readonly seen: string[] };
  let peer: Awaited<ReturnType<typeof initiatorBehindFake>>;

  before(async () => {
    service = await countingService();
    peer = await initiatorBehindFake(service);
  });

  after(async () => {
    peer.session.destroy();
    await peer.initiator.close({ graceMs: 0 });
    await peer.responder.close();
    await service.close();
  });

  it('announces push off, max_header_list_size and max_concurrent_streams', () => {
    const settings = peer.session.remoteSettings;
    assert.equal(settings.enablePush, false);
    assert.equal(settings.maxHeaderListSize, maxHeaderListSize);
    assert.equal(settings.maxConcurrentStreams, 50);
  });

  it('announces its flow-control windows: stream_window in SETTINGS, connection_window by WINDOW_UPDATE', async () => {
    assert.equal(peer.session.remoteSettings.initialWindowSize, defaultStreamWindow);
    await windowOpened(peer.session);
  });

  it('resets a stream whose header block is past max_header_list_size; the service never sees it', async () => {
    const before = service.seen.length;
    const huge = await exchange(peer.session, {
      ':path': '/huge',
      'x-big': 'a'.repeat(2 * maxHeaderListSize),
    });
    assert.equal(huge.status, undefined, 'no response');
    assert.equal(huge.rstCode, NGHTTP2_ENHANCE_YOUR_CALM);
    assert.equal(service.seen.length, before);
    // The session goes on.
    const fine = await exchange(peer.session, { ':path': '/fine' });
    assert.deepEqual([fine.status, fine.body], [200, 'GET /fine']);
  });

  it('resets a stream with more header fields than it may carry', async () => {
    const before = service.seen.length;
    const headers: http2.OutgoingHttpHeaders = { ':path': '/many' };
    for (let i = 0; i < 200; i += 1) headers[`x-h${i}`] = '1';
    const many = await exchange(peer.session, headers);
    assert.equal(many.status, undefined);
    assert.equal(many.rstCode, NGHTTP2_ENHANCE_YOUR_CALM);
    assert.equal(service.seen.length, before);
  });
});

describe('the initiator is never an open relay', () => {
  let service: TestService & { readonly seen: string[] };
  let elsewhere: TestService & { readonly seen: string[] };
  let peer: Awaited<ReturnType<typeof initiatorBehindFake>>;

  before(async () => {
    service = await countingService();
    elsewhere = await countingService();
    peer = await initiatorBehindFake(service);
  });

  after(async () => {
    peer.session.destroy();
    await peer.initiator.close({ graceMs: 0 });
    await peer.responder.close();
    await service.close();
    await elsewhere.close();
  });

  it('answers a CONNECT to an address with 404: only configured TCP target names are dialled', async () => {
    const authority = elsewhere.target.slice('http://'.length);
    const reply = await exchange(peer.session, { ':method': 'CONNECT', ':authority': authority });
    assert.equal(reply.status, 404);
    assert.equal(reply.body, `no TCP target named ${JSON.stringify(authority)}\n`);
    assert.deepEqual([service.seen, elsewhere.seen], [[], []]);
  });

  it('sends an extended CONNECT (RFC 8441) only to its configured local service', async () => {
    const reply = await exchange(peer.session, {
      ':method': 'CONNECT',
      ':protocol': 'websocket',
      ':path': '/chat',
      ':scheme': 'http',
      ':authority': elsewhere.target.slice('http://'.length),
    });
    // The service does not upgrade: its 200 would say "open" on an extended CONNECT (RFC 8441
    // §5), so the answer is a 502 that says what it answered.
    assert.equal(reply.status, 502);
    assert.match(String(reply.body), /answered the WebSocket upgrade with 200/);
    assert.deepEqual(elsewhere.seen, []);
    assert.equal(service.seen.length, 1);
    service.seen.splice(0);
  });

  it('answers OPTIONS * with 400: only origin-form paths are forwarded', async () => {
    const reply = await exchange(peer.session, { ':method': 'OPTIONS', ':path': '*' });
    assert.equal(reply.status, 400);
    assert.equal(reply.body, 'the request target must be a path starting with "/", not "*"\n');
    assert.deepEqual(service.seen, []);
  });

  it('refuses an absolute-form or asterisk :path on other methods (the stream is reset)', async () => {
    for (const path of [`${elsewhere.target}/x`, '*']) {
      const reply = await exchange(peer.session, { ':method': 'GET', ':path': path });
      assert.equal(reply.status, undefined, path);
      assert.equal(reply.rstCode, NGHTTP2_PROTOCOL_ERROR, path);
    }
    assert.deepEqual([service.seen, elsewhere.seen], [[], []]);
  });

  it('sends a request to its configured local service whatever :authority names', async () => {
    const authority = elsewhere.target.slice('http://'.length);
    const reply = await exchange(peer.session, { ':path': '/x', ':authority': authority });
    assert.deepEqual([reply.status, reply.body], [200, 'GET /x']);
    assert.deepEqual(service.seen, [`GET /x host=${authority}`]);
    assert.deepEqual(elsewhere.seen, []);
  });
});

describe("the local router's own check of the request target", () => {
  // nghttp2 already resets most non-origin-form targets (above); the router checks again rather
  // than trust that, and this drives it with headers nghttp2 would not pass.
  let service: TestService & { readonly seen: string[] };
  let elsewhere: TestService & { readonly seen: string[] };
  let router: LocalRouter;
  let server: http2.Http2Server;
  let client: http2.ClientHttp2Session;

  before(async () => {
    service = await countingService();
    elsewhere = await countingService();
    router = new LocalRouter(
      [
        {
          prefix: '/',
          target: service.target,
          protocol: 'http1',
          max_connections: 1,
          connect_timeout: 1000,
          outlier_detection: {
            consecutive_failures: 5,
            ejection_time: 30_000,
            max_ejection_time: 300_000,
            max_ejection_percent: 100,
          },
        },
      ],
      silentLogger,
    );
    server = http2.createServer();
    server.on('stream', (stream, headers, flags) => {
      const forged = headers['x-forged-path'];
      router.handle(
        stream,
        typeof forged === 'string' ? { ...headers, ':path': forged } : headers,
        flags,
      );
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    client = http2.connect(`http://127.0.0.1:${port}`);
    client.on('error', () => {});
  });

  after(async () => {
    client.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await router.close();
    await service.close();
    await elsewhere.close();
  });

  it('answers 400 to an absolute URL as :path, and connects nowhere', async () => {
    const absolute = `${elsewhere.target}/steal`;
    const reply = await exchange(client, { ':path': '/', 'x-forged-path': absolute });
    assert.equal(reply.status, 400);
    assert.equal(
      reply.body,
      `the request target must be a path starting with "/", not ${JSON.stringify(absolute)}\n`,
    );
    assert.deepEqual([service.seen, elsewhere.seen], [[], []]);
  });

  it('forwards an origin-form path', async () => {
    const reply = await exchange(client, { ':path': '/', 'x-forged-path': '/ok' });
    assert.equal(reply.status, 200);
    assert.equal(service.seen.length, 1);
  });
});
