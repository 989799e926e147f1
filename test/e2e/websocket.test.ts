/**
 * WebSocket end to end (issue 7): a `ws` client reaches a `ws` server behind the initiator through
 * both upgrade paths of the egress listener — an HTTP/1.1 `Upgrade: websocket`, and an RFC 8441
 * extended CONNECT from an HTTP/2 caller — each carried as an extended CONNECT stream on the tunnel
 * and turned back into an HTTP/1.1 upgrade at the local service.
 *
 * `ws` has no HTTP/2 client, so for the second path the test opens the extended CONNECT itself
 * with `node:http2` and runs a `ws` client-side socket over the stream (`setSocket`, with the
 * client role: it masks what it sends, as a client must).
 */
import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import http2 from 'node:http2';
import type { Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';
import type { ResponderConfigInput } from '../../src/config/schema.ts';
import { connectedInitiator, responderOnFreePorts } from '../helpers/tunnels.ts';

const node = 'ws-node';
const mebibyte = 1024 * 1024;
const largeMessageBytes = 16 * mebibyte;
const maxPayload = 32 * mebibyte;

interface Opened {
  readonly socket: WebSocket;
  /** The subprotocol the server chose. */
  readonly protocol: string;
  close(): void;
}

/** Path 1: `ws` itself, an HTTP/1.1 upgrade to the egress listener. */
async function openOverHttp1(egressPort: number, path: string): Promise<Opened> {
  const socket = new WebSocket(`ws://127.0.0.1:${egressPort}${path}`, ['chat.v2', 'chat.v1'], {
    headers: { 'x-node-id': node },
    maxPayload,
  });
  socket.on('error', () => {});
  await once(socket, 'open');
  return { socket, protocol: socket.protocol, close: () => socket.terminate() };
}

/** Path 2: an RFC 8441 extended CONNECT over h2c, with a client-role `ws` socket on the stream. */
async function openOverHttp2(egressPort: number, path: string): Promise<Opened> {
  const session = http2.connect(`http://127.0.0.1:${egressPort}`);
  session.on('error', () => {});
  const [settings] = (await once(session, 'remoteSettings')) as [http2.Settings];
  assert.equal(settings.enableConnectProtocol, true, 'the egress listener allows extended CONNECT');
  const stream = session.request({
    ':method': 'CONNECT',
    ':protocol': 'websocket',
    ':scheme': 'http',
    ':path': path,
    ':authority': `127.0.0.1:${egressPort}`,
    'sec-websocket-version': '13',
    'sec-websocket-protocol': 'chat.v2, chat.v1',
    'x-node-id': node,
  });
  stream.on('error', () => {});
  const [headers] = (await once(stream, 'response')) as [http2.IncomingHttpHeaders];
  assert.equal(headers[':status'], 200);
  // ws's own constructor with no address makes a server-side socket; the client role masks frames.
  const socket = new WebSocket(null as unknown as string, undefined, { maxPayload });
  (socket as unknown as { _isServer: boolean })._isServer = false;
  (
    socket as unknown as {
      setSocket(socket: unknown, head: Buffer, options: { maxPayload: number }): void;
    }
  ).setSocket(stream, Buffer.alloc(0), { maxPayload });
  socket.on('error', () => {});
  return {
    socket,
    protocol: String(headers['sec-websocket-protocol'] ?? ''),
    close: () => {
      socket.terminate();
      session.destroy();
    },
  };
}

/** Each close the server sees: 'closed' with `{ code, reason }`. */
const serverCloses = new EventEmitter();

/**
 * Backpressure: on `flood`, the server sends `floodBytes` in `floodFrameBytes` frames as fast as
 * its socket drains, counting in `floodWritten` what has left it (each frame's send callback).
 * The client reads it slowly (`readBurst`, then a pause of `pauseMs`); what the server is ahead of
 * the client at a pause is what the sockets and the tunnel hold between them.
 */
const floodBytes = 128 * mebibyte;
const floodFrameBytes = 256 * 1024;
let floodWritten = 0;
const readBurst = 4 * mebibyte;
const pauseMs = 60;
/** Kernel buffers of four sockets plus the HTTP/2 windows, with room; far below `floodBytes`. */
const floodAheadLimit = 48 * mebibyte;

function startEchoServer(): Promise<WebSocketServer> {
  const server = new WebSocketServer({
    host: '127.0.0.1',
    port: 0,
    maxPayload,
    handleProtocols: (protocols) => (protocols.has('chat.v2') ? 'chat.v2' : false),
  });
  server.on('connection', (socket, request) => {
    socket.on('error', () => {});
    socket.on('message', (data, isBinary) => {
      const text = isBinary ? '' : (data as Buffer).toString();
      if (text === 'flood') flood(socket);
      else if (text === 'close me') socket.close(4001, 'asked to close');
      else if (text === 'where') socket.send(`${request.headers.host} ${request.url}`);
      else socket.send(data, { binary: isBinary });
    });
    socket.on('close', (code, reason) =>
      serverCloses.emit('closed', { code, reason: reason.toString() }),
    );
  });
  server.on('error', () => {});
  return once(server, 'listening').then(() => server);
}

function flood(socket: WebSocket): void {
  const frame = Buffer.alloc(floodFrameBytes, 'f');
  const raw = (socket as unknown as { _socket: Socket })._socket;
  let queued = 0;
  floodWritten = 0;
  const step = () => {
    while (queued < floodBytes) {
      socket.send(frame, () => (floodWritten += frame.length));
      queued += frame.length;
      // Full: go on once the socket has drained (it will not while nobody reads).
      if (socket.bufferedAmount > mebibyte) {
        raw.once('drain', step);
        return;
      }
    }
  };
  step();
}

const paths = [
  { name: 'an HTTP/1.1 upgrade', open: openOverHttp1 },
  { name: 'an HTTP/2 extended CONNECT (RFC 8441)', open: openOverHttp2 },
] as const;

/** An echo server behind an initiator, and a responder in front of it; `close()` stops all three. */
async function startFixture(
  egress: ResponderConfigInput['egress_listeners'] = [{ address: '127.0.0.1:0' }],
): Promise<{ egressPort: number; close(): Promise<void> }> {
  const server = await startEchoServer();
  const { port } = server.address() as { port: number };
  const responder = await responderOnFreePorts({ egress_listeners: egress });
  const initiator = await connectedInitiator(responder, {
    node,
    routes: [{ prefix: '/', target: `http://127.0.0.1:${port}` }],
  });
  return {
    egressPort: responder.addresses.egress[0]!.port,
    close: async () => {
      await initiator.close();
      await responder.close();
      for (const client of server.clients) client.terminate();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

describe('WebSocket through the tunnel', () => {
  let fixture: Awaited<ReturnType<typeof startFixture>>;
  let egressPort: number;

  before(async () => {
    fixture = await startFixture();
    egressPort = fixture.egressPort;
  });

  after(() => fixture.close());

  for (const { name, open } of paths) {
    describe(`over ${name}`, () => {
      let opened: Opened;
      before(async () => {
        opened = await open(egressPort, '/chat?room=1');
      });
      after(() => opened.close());

      it('negotiates the subprotocol end to end', () => {
        assert.equal(opened.protocol, 'chat.v2');
      });

      it('reaches the local service at the path, with the caller’s host', async () => {
        opened.socket.send('where');
        const [data] = (await once(opened.socket, 'message')) as [Buffer];
        assert.match(data.toString(), /^127\.0\.0\.1:\d+ \/chat\?room=1$/);
      });

      it('echoes text and binary messages', async () => {
        opened.socket.send('hello');
        const [text, textIsBinary] = (await once(opened.socket, 'message')) as [Buffer, boolean];
        assert.equal(text.toString(), 'hello');
        assert.equal(textIsBinary, false);
        const binary = Buffer.from([0, 1, 2, 3, 255]);
        opened.socket.send(binary);
        const [echoed, isBinary] = (await once(opened.socket, 'message')) as [Buffer, boolean];
        assert.ok(echoed.equals(binary));
        assert.equal(isBinary, true);
      });

      it(`carries a ${largeMessageBytes / mebibyte} MiB message each way`, async () => {
        const large = Buffer.alloc(largeMessageBytes);
        for (let i = 0; i < large.length; i += 4096) large[i] = i % 251;
        opened.socket.send(large);
        const [echoed] = (await once(opened.socket, 'message')) as [Buffer];
        assert.equal(echoed.length, large.length);
        assert.ok(echoed.equals(large));
      });

      it('puts a fragmented message back together', async () => {
        opened.socket.send('frag', { fin: false });
        opened.socket.send('men', { fin: false });
        opened.socket.send('ted', { fin: true });
        const [data] = (await once(opened.socket, 'message')) as [Buffer];
        assert.equal(data.toString(), 'fragmented');
      });

      it('holds a fast sender back to a slow reader, and delivers everything', async () => {
        const socket = opened.socket;
        let received = 0;
        let sincePause = 0;
        let maxAhead = 0;
        await new Promise<void>((resolve) => {
          const onMessage = (data: Buffer) => {
            received += data.length;
            sincePause += data.length;
            if (received >= floodBytes) {
              socket.removeListener('message', onMessage);
              resolve();
            } else if (sincePause >= readBurst) {
              sincePause = 0;
              socket.pause();
              setTimeout(() => {
                maxAhead = Math.max(maxAhead, floodWritten - received);
                socket.resume();
              }, pauseMs);
            }
          };
          socket.on('message', onMessage);
          socket.send('flood');
        });
        assert.equal(received, floodBytes);
        assert.ok(
          maxAhead < floodAheadLimit,
          `the server was ${(maxAhead / mebibyte).toFixed(1)} MiB ahead of a slow reader`,
        );
      });

      it('answers a ping with a pong', async () => {
        opened.socket.ping(Buffer.from('are you there'));
        const [payload] = (await once(opened.socket, 'pong')) as [Buffer];
        assert.equal(payload.toString(), 'are you there');
      });

      it('passes the server’s close code and reason', async () => {
        opened.socket.send('close me');
        const [code, reason] = (await once(opened.socket, 'close')) as [number, Buffer];
        assert.equal(code, 4001);
        assert.equal(reason.toString(), 'asked to close');
      });
    });

    it(`passes the client’s close code and reason to the server, over ${name}`, async () => {
      const opened = await open(egressPort, '/bye');
      const serverSawClose = once(serverCloses, 'closed');
      opened.socket.close(4002, 'client done');
      await once(opened.socket, 'close');
      assert.deepEqual(await serverSawClose, [{ code: 4002, reason: 'client done' }]);
      opened.close();
    });
  }
});

describe('websocket_idle_timeout', () => {
  let fixture: Awaited<ReturnType<typeof startFixture>>;
  let egressPort: number;
  const idleMs = 300;

  before(async () => {
    fixture = await startFixture([
      { address: '127.0.0.1:0', websocket_idle_timeout: `${idleMs}ms` },
    ]);
    egressPort = fixture.egressPort;
  });

  after(() => fixture.close());

  for (const { name, open } of paths) {
    it(`closes a WebSocket idle for it and keeps a busy one, over ${name}`, async () => {
      const idle = await open(egressPort, '/idle');
      const busy = await open(egressPort, '/busy');
      const openedAt = Date.now();
      const idleClosed = once(idle.socket, 'close').then(([code]) => ({
        code: code as number,
        afterMs: Date.now() - openedAt,
      }));
      // The busy one talks every idleMs / 3, for three times idleMs: its timer keeps restarting.
      for (let turn = 0; turn < 9; turn += 1) {
        busy.socket.send(`turn ${turn}`);
        const [echo] = (await once(busy.socket, 'message')) as [Buffer];
        assert.equal(echo.toString(), `turn ${turn}`);
        await new Promise((resolve) => setTimeout(resolve, idleMs / 3));
      }
      const { code, afterMs } = await idleClosed;
      // Not a clean close: the connection was cut (1006 to a ws client).
      assert.equal(code, 1006);
      assert.ok(afterMs >= idleMs - 20 && afterMs < 5_000, `closed after ${afterMs} ms`);
      assert.equal(busy.socket.readyState, WebSocket.OPEN);
      idle.close();
      busy.close();
    });
  }
});
