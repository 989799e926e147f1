/**
 * TCP targets at the initiator (docs/streams.md §3): a plain CONNECT names a configured target and
 * becomes a TCP connection to it, byte stream, half-close and resets included. Driven through the
 * local router with an HTTP/2 client playing the responder (test/helpers/local-harness.ts).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { TcpTargetConfig } from '../../src/config/schema.ts';
import { resetStreamWith } from '../../src/shared/http2-stream.ts';
import { routerHarness, type RouterHarness } from '../helpers/local-harness.ts';
import { TestProcess } from '../helpers/process.ts';

const { NGHTTP2_CANCEL, NGHTTP2_CONNECT_ERROR } = http2.constants;

interface TcpServer {
  readonly port: number;
  readonly sockets: net.Socket[];
  close(): Promise<void>;
}

async function tcpServer(onSocket: (socket: net.Socket) => void): Promise<TcpServer> {
  const sockets: net.Socket[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.push(socket);
    socket.on('error', () => {});
    onSocket(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    sockets,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A port nothing listens on: one just given back by the kernel. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function target(name: string, port: number, connectTimeoutMs = 2_000): TcpTargetConfig {
  return { name, address: { host: '127.0.0.1', port }, connect_timeout: connectTimeoutMs };
}

/** Opens a CONNECT stream and resolves at its response. */
function connect(
  harness: RouterHarness,
  name: string,
): Promise<{ stream: http2.ClientHttp2Stream; status: number }> {
  return new Promise((resolve, reject) => {
    const stream = harness.client.request({ ':method': 'CONNECT', ':authority': name });
    stream.on('error', () => {});
    stream.once('response', (headers) => resolve({ stream, status: Number(headers[':status']) }));
    stream.once('close', () => reject(new Error(`closed without a response (${stream.rstCode})`)));
  });
}

/** Everything a readable side delivers until its end. */
function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.once('end', () => resolve(Buffer.concat(chunks)));
    stream.once('error', reject);
  });
}

describe('TCP targets at the initiator', () => {
  let echo: TcpServer;
  let shouter: TcpServer;
  let refused: number;
  let harness: RouterHarness;

  before(async () => {
    echo = await tcpServer((socket) => socket.pipe(socket));
    // Answers only after the caller's FIN, so the answer can only come on a half-closed connection.
    shouter = await tcpServer((socket) => {
      void readAll(socket).then((text) => socket.end(text.toString().toUpperCase()));
    });
    refused = await closedPort();
    harness = await routerHarness(
      [],
      [target('echo', echo.port), target('shouter', shouter.port), target('refused', refused)],
    );
  });

  after(async () => {
    await harness.close();
    await echo.close();
    await shouter.close();
  });

  it('answers 200 and carries bytes both ways, the other direction flowing after a half-close', async () => {
    const { stream, status } = await connect(harness, 'shouter');
    assert.equal(status, 200);
    const reply = readAll(stream);
    stream.end('hello, half-closed world');
    assert.equal((await reply).toString(), 'HELLO, HALF-CLOSED WORLD');
    const [socket] = shouter.sockets;
    assert.ok(socket !== undefined);
    await new Promise((resolve) =>
      socket.closed ? resolve(undefined) : socket.once('close', resolve),
    );
  });

  it('carries 64 MiB through an echo intact, under backpressure', async () => {
    const { stream, status } = await connect(harness, 'echo');
    assert.equal(status, 200);
    const chunk = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((i * 2654435761) >>> 0, i);
    const sent = createHash('sha256');
    const received = createHash('sha256');
    let receivedBytes = 0;
    stream.on('data', (data: Buffer) => {
      received.update(data);
      receivedBytes += data.length;
    });
    const ended = new Promise((resolve) => stream.once('end', resolve));
    for (let i = 0; i < 64; i++) {
      chunk[0] = i;
      sent.update(chunk);
      if (!stream.write(Buffer.from(chunk))) {
        await new Promise((resolve) => stream.once('drain', resolve));
      }
    }
    stream.end();
    await ended;
    assert.equal(receivedBytes, 64 * 1024 * 1024);
    assert.equal(received.digest('hex'), sent.digest('hex'));
  });

  it('answers 404 to a name it does not know, dialling nothing', async () => {
    const before = echo.sockets.length + shouter.sockets.length;
    const { stream, status } = await connect(harness, '127.0.0.1:' + String(echo.port));
    assert.equal(status, 404);
    assert.equal(
      (await readAll(stream)).toString(),
      `no TCP target named "127.0.0.1:${echo.port}"\n`,
    );
    assert.equal(echo.sockets.length + shouter.sockets.length, before);
  });

  it('answers 502 when the target refuses the connection', async () => {
    const { stream, status } = await connect(harness, 'refused');
    assert.equal(status, 502);
    assert.match((await readAll(stream)).toString(), /^TCP target refused failed: .*ECONNREFUSED/);
  });

  it('destroys the connection to the target when the tunnel stream is reset', async () => {
    const count = echo.sockets.length;
    const { stream, status } = await connect(harness, 'echo');
    assert.equal(status, 200);
    stream.write('ping');
    await new Promise((resolve) => stream.once('data', resolve));
    const socket = echo.sockets[count];
    assert.ok(socket !== undefined);
    const reset = new Promise<NodeJS.ErrnoException>((resolve) => socket.once('error', resolve));
    // RST_STREAM(CANCEL) without END_STREAM (stream.close() would end the stream first).
    resetStreamWith(stream, NGHTTP2_CANCEL);
    // A TCP RST, not a FIN: the target cannot take the cut-off stream for a whole one.
    assert.equal((await reset).code, 'ECONNRESET');
  });

  it('resets the tunnel stream with CONNECT_ERROR when the target resets its connection', async () => {
    const count = echo.sockets.length;
    const { stream, status } = await connect(harness, 'echo');
    assert.equal(status, 200);
    stream.write('ping');
    await new Promise((resolve) => stream.once('data', resolve));
    const closed = new Promise((resolve) => stream.once('close', resolve));
    echo.sockets[count]?.resetAndDestroy();
    await closed;
    assert.equal(stream.rstCode, NGHTTP2_CONNECT_ERROR);
  });
});

/**
 * A listener that never accepts, its accept queue full: Linux then drops further SYNs, so a connect
 * to it neither succeeds nor fails. A Python process, because Node accepts every connection.
 */
const unansweringListener = `
import socket, time
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(0)
fillers = []
for _ in range(4):
    try:
        fillers.append(socket.create_connection(listener.getsockname(), timeout=0.3))
    except OSError:
        break
print(listener.getsockname()[1], flush=True)
time.sleep(60)
`;

describe('a TCP target that does not answer', () => {
  let listener: TestProcess;
  let harness: RouterHarness;

  before(async () => {
    listener = new TestProcess(['python3', '-c', unansweringListener]);
    const [, port] = await listener.waitForStdout(/^(\d+)\n/, 10_000);
    harness = await routerHarness([], [target('slow', Number(port), 300)]);
  });

  after(async () => {
    await harness.close();
    await listener.stop();
  });

  it('answers 502 once its connect_timeout has passed', async () => {
    const started = Date.now();
    const { stream, status } = await connect(harness, 'slow');
    assert.equal(status, 502);
    assert.ok(Date.now() - started >= 290, `answered after ${Date.now() - started} ms`);
    assert.equal(
      (await readAll(stream)).toString(),
      'TCP target slow failed: not connected within 300 ms\n',
    );
  });
});
