/**
 * WebSockets at the initiator (docs/streams.md §2): an RFC 8441 extended CONNECT becomes an
 * RFC 6455 upgrade to the HTTP/1.1 local service, and the byte stream passes untouched. A `ws`
 * client talks HTTP/1.1 to a relay that plays the responder (test/helpers/local-harness.ts
 * `websocketRelay`), whose extended CONNECT goes through the local router to a `ws` server.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import {
  exchange,
  localRoute,
  routerHarness,
  websocketRelay,
  type RouterHarness,
  type WebSocketRelay,
} from '../helpers/local-harness.ts';

/** Opens a client WebSocket through the relay; rejects on any other answer. */
function open(relay: WebSocketRelay, path: string, protocols: string[] = []): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(`ws://127.0.0.1:${relay.port}${path}`, protocols);
    socket.once('open', () => resolve(socket));
    socket.once('error', reject);
  });
}

function nextMessage(socket: WebSocket): Promise<{ data: Buffer; isBinary: boolean }> {
  return new Promise((resolve) => {
    socket.once('message', (data: RawData, isBinary: boolean) =>
      resolve({ data: Buffer.isBuffer(data) ? data : Buffer.from(data as ArrayBuffer), isBinary }),
    );
  });
}

describe('WebSockets through the initiator', () => {
  let service: http.Server;
  let wss: WebSocketServer;
  let harness: RouterHarness;
  let relay: WebSocketRelay;
  let liar: net.Server;
  let liarHarness: RouterHarness;
  let liarRelay: WebSocketRelay;
  const serverSockets: WebSocket[] = [];

  before(async () => {
    service = http.createServer((_req, res) => res.end('not a websocket'));
    wss = new WebSocketServer({
      noServer: true,
      perMessageDeflate: true,
      handleProtocols: (protocols) => (protocols.has('chat.v1') ? 'chat.v1' : false),
      maxPayload: 32 * 1024 * 1024,
    });
    service.on('upgrade', (request, socket, head) => {
      socket.on('error', () => {});
      if (request.url === '/forbidden') {
        socket.end(
          'HTTP/1.1 403 Forbidden\r\ncontent-length: 8\r\nconnection: close\r\n\r\nnot you\n',
        );
        return;
      }
      wss.handleUpgrade(request, socket, head, (ws) => {
        serverSockets.push(ws);
        ws.on('message', (data: Buffer, isBinary) => {
          if (!isBinary && data.toString() === 'close please') ws.close(4001, 'asked to close');
          else ws.send(data, { binary: isBinary });
        });
      });
    });
    await new Promise<void>((resolve) => service.listen(0, '127.0.0.1', resolve));
    const { port } = service.address() as AddressInfo;
    harness = await routerHarness([localRoute({ target: `http://127.0.0.1:${port}` })]);
    relay = await websocketRelay(harness.client);
    // Answers every upgrade with a 101 whose accept value is wrong.
    liar = net.createServer((socket) => {
      socket.on('error', () => {});
      socket.once('data', () => {
        const wrong = createHash('sha1').update('some other key').digest('base64');
        socket.write(
          `HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${wrong}\r\n\r\n`,
        );
      });
    });
    await new Promise<void>((resolve) => liar.listen(0, '127.0.0.1', resolve));
    const liarPort = (liar.address() as AddressInfo).port;
    liarHarness = await routerHarness([localRoute({ target: `http://127.0.0.1:${liarPort}` })]);
    liarRelay = await websocketRelay(liarHarness.client);
  });

  after(async () => {
    await relay.close();
    await liarRelay.close();
    await harness.close();
    await liarHarness.close();
    wss.close();
    service.closeAllConnections();
    await new Promise<void>((resolve) => service.close(() => resolve()));
    await new Promise<void>((resolve) => liar.close(() => resolve()));
  });

  it('carries text and binary messages both ways, with the negotiated subprotocol', async () => {
    const socket = await open(relay, '/chat', ['chat.v1']);
    assert.equal(socket.protocol, 'chat.v1');
    assert.equal(relay.answers.at(-1)?.[':status'], 200);
    assert.equal(relay.answers.at(-1)?.['sec-websocket-protocol'], 'chat.v1');
    let reply = nextMessage(socket);
    socket.send('hello');
    assert.deepEqual(await reply, { data: Buffer.from('hello'), isBinary: false });
    reply = nextMessage(socket);
    socket.send(Buffer.from([0, 1, 2, 254, 255]));
    assert.deepEqual(await reply, { data: Buffer.from([0, 1, 2, 254, 255]), isBinary: true });
    socket.terminate();
  });

  it('negotiates permessage-deflate end to end, the frames untouched', async () => {
    const socket = await open(relay, '/chat');
    assert.match(socket.extensions, /permessage-deflate/);
    const reply = nextMessage(socket);
    socket.send('compressible '.repeat(1000));
    assert.equal((await reply).data.toString(), 'compressible '.repeat(1000));
    socket.terminate();
  });

  it('carries a 16 MiB message intact', async () => {
    const socket = await open(relay, '/chat');
    const message = Buffer.alloc(16 * 1024 * 1024);
    for (let i = 0; i < message.length; i += 4) message.writeUInt32LE((i * 2654435761) >>> 0, i);
    const reply = nextMessage(socket);
    socket.send(message);
    const { data } = await reply;
    assert.equal(data.length, message.length);
    assert.ok(data.equals(message));
    socket.terminate();
  });

  it('answers a ping with a pong', async () => {
    const socket = await open(relay, '/chat');
    const pong = new Promise<Buffer>((resolve) => socket.once('pong', resolve));
    socket.ping(Buffer.from('are you there'));
    assert.equal((await pong).toString(), 'are you there');
    socket.terminate();
  });

  it("passes the service's close code and reason on", async () => {
    const socket = await open(relay, '/chat');
    const closed = new Promise<[number, Buffer]>((resolve) =>
      socket.once('close', (code: number, reason: Buffer) => resolve([code, reason])),
    );
    socket.send('close please');
    const [code, reason] = await closed;
    assert.deepEqual([code, reason.toString()], [4001, 'asked to close']);
  });

  it("destroys the service's connection when the caller's goes away without a close", async () => {
    const count = serverSockets.length;
    const socket = await open(relay, '/chat');
    const reply = nextMessage(socket);
    socket.send('still here');
    await reply;
    const serverSocket = serverSockets[count];
    assert.ok(serverSocket !== undefined);
    const closed = new Promise<number>((resolve) => serverSocket.once('close', resolve));
    socket.terminate();
    // 1006: the connection ended with no close frame (RFC 6455 §7.1.5).
    assert.equal(await closed, 1006);
  });

  it('passes an answer other than 101 on as an ordinary response', async () => {
    const status = await new Promise<number>((resolve, reject) => {
      const socket = new WebSocket(`ws://127.0.0.1:${relay.port}/forbidden`);
      socket.once('unexpected-response', (_request, response) => {
        resolve(response.statusCode ?? 0);
        socket.terminate();
      });
      socket.once('open', () => reject(new Error('opened')));
      socket.on('error', () => {});
    });
    assert.equal(status, 403);
    assert.equal(relay.answers.at(-1)?.[':status'], 403);
  });

  it('answers 502 when the service upgrades with a wrong Sec-WebSocket-Accept', async () => {
    const reply = await exchange(liarHarness.client, {
      ':method': 'CONNECT',
      ':protocol': 'websocket',
      ':scheme': 'http',
      ':path': '/chat',
      ':authority': 'svc',
      'sec-websocket-version': '13',
    });
    assert.equal(reply.status, 502);
    assert.match(reply.body.toString(), /wrong Sec-WebSocket-Accept/);
  });

  it('answers 501 to an extended CONNECT for another protocol', async () => {
    const reply = await exchange(harness.client, {
      ':method': 'CONNECT',
      ':protocol': 'connect-udp',
      ':scheme': 'http',
      ':path': '/chat',
      ':authority': 'svc',
    });
    assert.equal(reply.status, 501);
    assert.equal(
      reply.body.toString(),
      'extended CONNECT for "connect-udp" is not served: only websocket is\n',
    );
  });
});
