/**
 * WebSocket forwarding on the responder (docs/streams.md §2), against a fake initiator: a plain
 * HTTP/2 server that advertises SETTINGS_ENABLE_CONNECT_PROTOCOL and answers each extended CONNECT
 * by `:path`. The tunnel is a real TunnelSession over TCP to it. The callers are a plain HTTP/1.1
 * server whose 'upgrade' hands the request to `forwardWebSocketUpgrade` (the egress listener's
 * hook is wired elsewhere), and an HTTP/2 server that hands extended CONNECTs to
 * `forwardExtendedConnect`.
 *
 * For a real WebSocket end to end, the fake runs a server-side `ws` WebSocket over the tunnel
 * stream (`new WebSocket(null)` + `setSocket`, what `WebSocketServer.handleUpgrade` does after
 * its own 101), and the caller is a `ws` client: masking, ping/pong, close codes and the
 * Sec-WebSocket-Accept check all happen in `ws` itself, not in the test.
 */
import assert from 'node:assert/strict';
import { websocketAccept } from '../shared/websocket.ts';
import { once } from 'node:events';
import http from 'node:http';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { validateResponderConfig } from '../config/load.ts';
import { silentLogger } from '../shared/logger.ts';
import {
  forwardExtendedConnect,
  forwardWebSocketUpgrade,
  type UpgradeTarget,
} from './egress-upgrade.ts';
import { TunnelSession } from './tunnel-session.ts';

const limits = validateResponderConfig({
  tunnel_listener: { address: '127.0.0.1:0' },
  egress_listeners: [{ address: '127.0.0.1:0' }],
}).http2;

/** What the fake initiator saw of each extended CONNECT, by path. */
const seen = new Map<string, http2.IncomingHttpHeaders>();
/** Streams the fake holds without answering, by path. */
const held = new Map<string, (stream: http2.ServerHttp2Stream) => void>();

/** The fake initiator's answer to an extended CONNECT, by `:path`. */
function answer(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
  const path = String(headers[':path']);
  seen.set(path, headers);
  if (path === '/ws') {
    const protocol = headers['sec-websocket-protocol'];
    stream.respond({
      ':status': 200,
      ...(typeof protocol === 'string' ? { 'sec-websocket-protocol': protocol.split(',')[0] } : {}),
    });
    // A server-side ws socket over the stream: echoes messages, answers pings, closes on request.
    // `ws` makes a server-side socket from a null address; its types do not say so.
    const ServerSide = WebSocket as unknown as new (
      address: null,
      protocols: undefined,
      options: object,
    ) => WebSocket & {
      setSocket(socket: unknown, head: Buffer, options: { maxPayload: number }): void;
    };
    const ws = new ServerSide(null, undefined, { autoPong: true });
    ws.setSocket(stream, Buffer.alloc(0), { maxPayload: 1024 * 1024 });
    ws.on('error', () => {});
    ws.on('message', (data: Buffer, isBinary) => {
      if (!isBinary && data.toString() === 'close please') ws.close(4001, 'as asked');
      else ws.send(data, { binary: isBinary });
    });
  } else if (path === '/raw') {
    stream.respond({ ':status': 200 });
    stream.pipe(stream);
  } else if (path === '/silent' || path === '/hold') {
    if (path === '/hold') stream.respond({ ':status': 200 });
    held.get(path)?.(stream);
  } else {
    stream.respond({ ':status': 404, 'content-type': 'text/plain', 'x-from': 'initiator' });
    stream.end(`no websocket route ${path}`);
  }
}

/** A fake initiator's HTTP/2 server and a TunnelSession to it. */
async function fakeTunnel(
  settings: http2.Settings,
): Promise<{ server: http2.Http2Server; session: TunnelSession }> {
  const server = http2.createServer({ settings });
  server.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    answer(stream, headers);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const socket = net.connect((server.address() as AddressInfo).port, '127.0.0.1');
  await once(socket, 'connect');
  const session = new TunnelSession(socket, {
    identity: { nodeId: 'n1', clusterId: 'c1', tenantId: 't1' },
    limits,
    onClose: () => {},
  });
  return { server, session };
}

function targetFor(session: TunnelSession, path: string, extra: http2.OutgoingHttpHeaders = {}) {
  return {
    session,
    headers: {
      ':method': 'CONNECT',
      ':protocol': 'websocket',
      ':scheme': 'http',
      ':path': path,
      ':authority': 'service.local',
      'sec-websocket-version': '13',
      ...extra,
    },
    logger: silentLogger,
    responseTimeoutMs: 500,
    idleTimeoutMs: 0,
  } satisfies UpgradeTarget;
}

/** Headers the caller's hop sets, which the responder must never send on the tunnel. */
const perHop = ['sec-websocket-key', 'sec-websocket-accept', 'upgrade', 'connection'];

/** Writes an HTTP/1.1 request on a raw connection and reads everything until the close. */
async function rawExchange(port: number, text: string): Promise<string> {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => {});
  socket.write(text);
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  await once(socket, 'close');
  return Buffer.concat(chunks).toString('latin1');
}

const upgradeRequest = (path: string, lines: string[] = []) =>
  [
    `GET ${path} HTTP/1.1`,
    'host: service.local',
    'upgrade: websocket',
    'connection: Upgrade',
    'sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==',
    'sec-websocket-version: 13',
    ...lines,
    '',
    '',
  ].join('\r\n');

describe('forwardWebSocketUpgrade, an HTTP/1.1 caller', () => {
  let fake: { server: http2.Http2Server; session: TunnelSession };
  let plain: { server: http2.Http2Server; session: TunnelSession };
  let caller: http.Server;
  let port: number;

  before(async () => {
    fake = await fakeTunnel({ enableConnectProtocol: true });
    plain = await fakeTunnel({});
    caller = http.createServer((_request, response) => {
      response.writeHead(426).end();
    });
    caller.on('upgrade', (request: http.IncomingMessage, socket, head: Buffer) => {
      const path = request.url ?? '/';
      const session = path === '/plain' ? plain.session : fake.session;
      const extra: http2.OutgoingHttpHeaders = {};
      // What the egress listener forwards; the key and the Upgrade pair must be dropped even if
      // a caller of this function left them in.
      for (const name of ['sec-websocket-protocol', ...perHop]) {
        const value = request.headers[name];
        if (value !== undefined) extra[name] = value;
      }
      forwardWebSocketUpgrade(
        request,
        socket,
        head,
        targetFor(session, path === '/plain' ? '/ws' : path, extra),
      );
    });
    caller.listen(0, '127.0.0.1');
    await once(caller, 'listening');
    port = (caller.address() as AddressInfo).port;
  });

  after(() => {
    caller.closeAllConnections();
    caller.close();
    for (const { server, session } of [fake, plain]) {
      session.destroy();
      server.close();
    }
  });

  it('computes Sec-WebSocket-Accept as RFC 6455 §1.3 does for its sample key', () => {
    assert.equal(websocketAccept('dGhlIHNhbXBsZSBub25jZQ=='), 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
  });

  it('carries text, binary, ping and close between a ws client and a ws server', async () => {
    const client = new WebSocket(`ws://127.0.0.1:${port}/ws`, ['chat', 'superchat']);
    client.on('error', () => {});
    await once(client, 'open');
    assert.equal(client.protocol, 'chat');
    const sentToTunnel = seen.get('/ws');
    assert.ok(sentToTunnel !== undefined);
    assert.equal(sentToTunnel[':method'], 'CONNECT');
    assert.equal(sentToTunnel[':protocol'], 'websocket');
    assert.equal(sentToTunnel['sec-websocket-version'], '13');
    assert.equal(sentToTunnel['sec-websocket-protocol'], 'chat,superchat');
    for (const name of perHop) assert.equal(sentToTunnel[name], undefined, name);

    client.send('hello through the tunnel');
    const [text, textIsBinary] = (await once(client, 'message')) as [Buffer, boolean];
    assert.equal(text.toString(), 'hello through the tunnel');
    assert.equal(textIsBinary, false);

    const binary = Buffer.from([0, 1, 2, 255, 254]);
    client.send(binary);
    const [echoed, echoedIsBinary] = (await once(client, 'message')) as [Buffer, boolean];
    assert.deepEqual(echoed, binary);
    assert.equal(echoedIsBinary, true);

    client.ping('are you there');
    const [pong] = (await once(client, 'pong')) as [Buffer];
    assert.equal(pong.toString(), 'are you there');

    client.send('close please');
    const [code, reason] = (await once(client, 'close')) as [number, Buffer];
    assert.equal(code, 4001);
    assert.equal(reason.toString(), 'as asked');
  });

  it('writes the bytes that came with the upgrade request to the stream first', async () => {
    const socket = net.connect(port, '127.0.0.1');
    socket.on('error', () => {});
    socket.write(upgradeRequest('/raw') + 'early bytes');
    let text = '';
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (text.endsWith('early bytes')) socket.end();
    });
    await once(socket, 'close');
    const [head, rest] = text.split('\r\n\r\n');
    assert.match(head ?? '', /^HTTP\/1\.1 101 Switching Protocols\r\n/);
    assert.match(head ?? '', /\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=(\r\n|$)/i);
    assert.equal(rest, 'early bytes');
  });

  it('answers 426 with Sec-WebSocket-Version: 13 to another version', async () => {
    const text = await rawExchange(
      port,
      upgradeRequest('/ws').replace('sec-websocket-version: 13', 'sec-websocket-version: 8'),
    );
    assert.match(text, /^HTTP\/1\.1 426 /);
    assert.match(text, /\r\nsec-websocket-version: 13\r\n/);
  });

  it('answers 400 to a key that is not 16 bytes of base64', async () => {
    const text = await rawExchange(
      port,
      upgradeRequest('/ws').replace('dGhlIHNhbXBsZSBub25jZQ==', 'c2hvcnQ='),
    );
    assert.match(text, /^HTTP\/1\.1 400 /);
    assert.match(text, /Sec-WebSocket-Key/);
  });

  it('answers 502 when the initiator did not enable the extended CONNECT protocol', async () => {
    const text = await rawExchange(port, upgradeRequest('/plain'));
    assert.match(text, /^HTTP\/1\.1 502 /);
    assert.match(text, /RFC 8441/);
  });

  it("passes the initiator's refusal on with its status, headers and body", async () => {
    const text = await rawExchange(port, upgradeRequest('/nowhere'));
    assert.match(text, /^HTTP\/1\.1 404 Not Found\r\n/);
    assert.match(text, /\r\nx-from: initiator\r\n/);
    assert.ok(text.endsWith('\r\n\r\nno websocket route /nowhere'), text);
  });

  it('answers 504 and resets the stream when the initiator does not answer in time', async () => {
    const stream = new Promise<http2.ServerHttp2Stream>((resolve) => held.set('/silent', resolve));
    const text = rawExchange(port, upgradeRequest('/silent'));
    const silent = await stream;
    const closed = new Promise((resolve) => silent.on('close', resolve));
    assert.match(await text, /^HTTP\/1\.1 504 /);
    await closed;
    assert.equal(silent.rstCode, http2.constants.NGHTTP2_CANCEL);
  });

  it('resets the stream with CANCEL when the caller resets its connection', async () => {
    const stream = new Promise<http2.ServerHttp2Stream>((resolve) => held.set('/hold', resolve));
    const client = new WebSocket(`ws://127.0.0.1:${port}/hold`);
    client.on('error', () => {});
    await once(client, 'open');
    const hold = await stream;
    const closed = new Promise((resolve) => hold.on('close', resolve));
    // An RST, not terminate()'s FIN: a FIN is a half-close, passed on as END_STREAM.
    (client as unknown as { _socket: net.Socket })._socket.resetAndDestroy();
    await closed;
    assert.equal(hold.rstCode, http2.constants.NGHTTP2_CANCEL);
  });
});

describe('forwardExtendedConnect, an HTTP/2 caller', () => {
  let fake: { server: http2.Http2Server; session: TunnelSession };
  let egress: http2.Http2Server;
  let client: http2.ClientHttp2Session;

  before(async () => {
    fake = await fakeTunnel({ enableConnectProtocol: true });
    egress = http2.createServer({ settings: { enableConnectProtocol: true } });
    egress.on('stream', (stream, headers) => {
      forwardExtendedConnect(stream, targetFor(fake.session, String(headers[':path'])));
    });
    egress.listen(0, '127.0.0.1');
    await once(egress, 'listening');
    client = http2.connect(`http://127.0.0.1:${(egress.address() as AddressInfo).port}`);
    client.on('error', () => {});
    await once(client, 'remoteSettings');
  });

  after(() => {
    client.destroy();
    egress.close();
    fake.session.destroy();
    fake.server.close();
  });

  const connect = (path: string) =>
    client.request(
      {
        ':method': 'CONNECT',
        ':protocol': 'websocket',
        ':scheme': 'http',
        ':path': path,
        ':authority': 'x',
      },
      { endStream: false },
    );

  it('passes the 200 on and carries DATA both ways, END_STREAM to END_STREAM', async () => {
    const stream = connect('/raw');
    const [headers] = (await once(stream, 'response')) as [http2.IncomingHttpHeaders];
    assert.equal(headers[':status'], 200);
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.end('frames, untouched');
    await once(stream, 'end');
    assert.equal(Buffer.concat(chunks).toString(), 'frames, untouched');
    await once(stream, 'close');
    assert.equal(stream.rstCode, http2.constants.NGHTTP2_NO_ERROR);
  });

  it("passes a refusal on as the initiator's status and body", async () => {
    const stream = connect('/nowhere');
    const [headers] = (await once(stream, 'response')) as [http2.IncomingHttpHeaders];
    assert.equal(headers[':status'], 404);
    assert.equal(headers['x-from'], 'initiator');
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    await once(stream, 'end');
    assert.equal(Buffer.concat(chunks).toString(), 'no websocket route /nowhere');
    stream.close();
  });

  it('resets the tunnel stream when the caller resets its stream', async () => {
    const arrived = new Promise<http2.ServerHttp2Stream>((resolve) => held.set('/hold', resolve));
    const stream = connect('/hold');
    stream.on('error', () => {});
    await once(stream, 'response');
    const hold = await arrived;
    const closed = new Promise((resolve) => hold.on('close', resolve));
    stream.close(http2.constants.NGHTTP2_CANCEL);
    await closed;
    assert.equal(hold.rstCode, http2.constants.NGHTTP2_CANCEL);
  });
});
