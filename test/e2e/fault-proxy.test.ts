/**
 * The chaos suite's fault-injecting TCP proxy (test/helpers/fault-proxy.ts), on loopback: its delay
 * and throttle do what they say, its memory stays bounded when the receiver stops reading, and its
 * faults (cut, black hole) reach both sides. No root needed.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import { FaultProxy, type FaultProxyOptions } from '../helpers/fault-proxy.ts';
import { pollUntil } from '../helpers/process.ts';

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/** A target whose connections are handed to `onConnection`; every socket has an error handler. */
async function startTarget(onConnection: (socket: net.Socket) => void) {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
    onConnection(socket);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  return {
    port,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}

async function connect(port: number): Promise<net.Socket> {
  const socket = net.connect({ host: '127.0.0.1', port });
  socket.on('error', () => {});
  await once(socket, 'connect');
  return socket;
}

/** Reads `socket` until it has `length` bytes or ends; bounded by `timeoutMs`. */
function readBytes(socket: net.Socket, length: number, timeoutMs = 5_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let received = 0;
    const finish = (error?: Error) => {
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.removeListener('end', onEnd);
      if (error === undefined) resolve(Buffer.concat(chunks));
      else reject(error);
    };
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
      if (received >= length) finish();
    };
    const onEnd = () => finish();
    const timer = setTimeout(
      () => finish(new Error(`only ${received} of ${length} bytes after ${timeoutMs} ms`)),
      timeoutMs,
    );
    socket.on('data', onData);
    socket.on('end', onEnd);
  });
}

describe('the fault-injecting TCP proxy', () => {
  const closers: Array<() => Promise<void>> = [];
  after(async () => {
    for (const close of closers.reverse()) await close();
  });
  const setUp = async (
    onConnection: (socket: net.Socket) => void,
    options: Omit<FaultProxyOptions, 'target'> = {},
  ) => {
    const target = await startTarget(onConnection);
    closers.push(target.close);
    const proxy = await FaultProxy.start({
      ...options,
      target: { host: '127.0.0.1', port: target.port },
    });
    closers.push(() => proxy.close());
    return proxy;
  };

  it('delays each direction by its delayMs and keeps the order of the bytes', async () => {
    const proxy = await setUp((socket) => socket.pipe(socket), {
      upstream: { delayMs: 100 },
      downstream: { delayMs: 100 },
    });
    const client = await connect(proxy.address.port);
    const sent = randomBytes(64 * 1024);
    const started = Date.now();
    const echoed = readBytes(client, sent.length);
    // Sent in pieces, so the delay line holds several chunks at once.
    for (let offset = 0; offset < sent.length; offset += 4096)
      client.write(sent.subarray(offset, offset + 4096));
    const received = await echoed;
    const roundTrip = Date.now() - started;
    client.destroy();
    assert.equal(sha256(received), sha256(sent));
    assert.ok(roundTrip >= 200, `round trip ${roundTrip} ms, under 2 × 100 ms`);
    assert.ok(roundTrip < 2_000, `round trip ${roundTrip} ms`);
  });

  it('bounds throughput with its throttle: 256 KiB at 512 KiB/s takes at least 0.4 s', async () => {
    const body = randomBytes(256 * 1024);
    const proxy = await setUp((socket) => socket.end(body), {
      downstream: { bytesPerSecond: 512 * 1024 },
    });
    const started = Date.now();
    const client = await connect(proxy.address.port);
    const received = await readBytes(client, body.length);
    const took = Date.now() - started;
    client.destroy();
    assert.equal(sha256(received), sha256(body));
    // 256 KiB less the bucket's 26 KiB burst, at 512 KiB/s: 0.45 s.
    assert.ok(took >= 400, `256 KiB in ${took} ms, faster than 512 KiB/s allows`);
    assert.ok(took < 1_500, `256 KiB in ${took} ms`);
  });

  it('holds at most maxQueuedBytes per direction when the receiver stops reading, and loses nothing', async () => {
    const cap = 256 * 1024;
    const total = 32 * 1024 * 1024;
    const body = randomBytes(total);
    let targetSocket: net.Socket | undefined;
    const proxy = await setUp(
      (socket) => {
        targetSocket = socket;
        socket.end(body);
      },
      { maxQueuedBytes: cap },
    );
    const client = await connect(proxy.address.port);
    client.pause();
    await pollUntil(
      'the proxy to stall its source',
      () => Promise.resolve(proxy.stalledDirections === 1),
      {
        timeoutMs: 3_000,
        intervalMs: 10,
      },
    );
    const writtenByTarget = targetSocket!.bytesWritten - targetSocket!.writableLength;
    assert.ok(
      proxy.peakQueuedBytes <= cap,
      `queued ${proxy.peakQueuedBytes} B, over the cap ${cap}`,
    );
    // The target is held back by TCP: most of its 32 MiB are still its own.
    assert.ok(writtenByTarget < total / 2, `the target got ${writtenByTarget} B out`);
    const received = readBytes(client, total);
    client.resume();
    assert.equal(sha256(await received), sha256(body));
    client.destroy();
    assert.ok(
      proxy.peakQueuedBytes <= cap,
      `queued ${proxy.peakQueuedBytes} B, over the cap ${cap}`,
    );
  });

  it('resets both sides on cut()', async () => {
    const targetErrors: Array<Promise<unknown>> = [];
    const proxy = await setUp((socket) => {
      targetErrors.push(once(socket, 'error'));
      socket.write('hello');
    });
    const client = await connect(proxy.address.port);
    const clientError = once(client, 'error');
    await readBytes(client, 5);
    assert.equal(proxy.connections.open, 1);
    proxy.cut();
    const [error] = (await clientError) as [NodeJS.ErrnoException];
    assert.equal(error.code, 'ECONNRESET');
    const [targetError] = (await targetErrors[0]) as [NodeJS.ErrnoException];
    assert.equal(targetError.code, 'ECONNRESET');
    await pollUntil(
      'the connection forgotten',
      () => Promise.resolve(proxy.connections.open === 0),
      {
        timeoutMs: 2_000,
        intervalMs: 10,
      },
    );
  });

  it('forwards nothing while black-holed, keeps the sockets open, and passes the bytes on after', async () => {
    const proxy = await setUp((socket) => socket.pipe(socket));
    const client = await connect(proxy.address.port);
    const closed = { client: false };
    client.on('close', () => (closed.client = true));
    client.write('before');
    assert.equal((await readBytes(client, 6)).toString(), 'before');
    proxy.blackHole(true);
    let during = 0;
    const counter = (chunk: Buffer) => (during += chunk.length);
    client.on('data', counter);
    await new Promise<void>((resolve, reject) =>
      client.write('during', (error) => (error ? reject(error) : resolve())),
    );
    // A black hole is the absence of an event: watched for a window, 20 × an echo's round trip here.
    await delay(100);
    client.removeListener('data', counter);
    assert.equal(during, 0, 'bytes crossed a black hole');
    assert.equal(closed.client, false);
    assert.equal(proxy.connections.open, 1);
    const after = readBytes(client, 6);
    proxy.blackHole(false);
    assert.equal((await after).toString(), 'during');
    client.destroy();
  });
});
