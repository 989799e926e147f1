/**
 * Raw TCP end to end (issue 7): a connection to a responder TCP listener becomes a CONNECT stream
 * on the tunnel, and the initiator connects it to the TCP target the listener names. Checked with
 * an echo service that answers a half-close, a 256 MiB checksummed transfer each way at once, a
 * target the initiator does not have, and the byte counters.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { Initiator } from '../../src/initiator/initiator.ts';
import type { Responder } from '../../src/responder/responder.ts';
import type { HostPort } from '../../src/shared/address.ts';
import { connectedInitiator, responderOnFreePorts } from '../helpers/tunnels.ts';

const node = 'tcp-node';
const mebibyte = 1024 * 1024;
const largeTransferBytes = 256 * mebibyte;
const chunk = Buffer.alloc(64 * 1024);
for (let i = 0; i < chunk.length; i += 1) chunk[i] = (i * 31) % 256;

/**
 * Echoes every byte; when the client ends its side, writes `bye` and ends too (a half-closed
 * connection must still carry the answer).
 */
async function startEchoService(): Promise<net.Server> {
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.on('error', () => {});
    socket.pipe(socket, { end: false });
    socket.on('end', () => socket.end('bye'));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return server;
}

function connectTo(address: HostPort): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: address.host, port: address.port, allowHalfOpen: true });
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Everything the socket receives until its end, or the error/close that comes first. */
function readAll(socket: net.Socket): Promise<{ bytes: number; digest: string; text: string }> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    let bytes = 0;
    let head = '';
    socket.on('data', (data: Buffer) => {
      hash.update(data);
      bytes += data.length;
      if (head.length < 64) head += data.toString('latin1', 0, 64);
    });
    socket.once('end', () => resolve({ bytes, digest: hash.digest('hex'), text: head }));
    socket.once('error', reject);
    socket.once('close', () => reject(new Error(`closed without an end after ${bytes} bytes`)));
  });
}

function statsOf(responder: Responder, name: string): number | undefined {
  return responder.stats.value(name);
}

describe('raw TCP through the tunnel', () => {
  let echo: net.Server;
  let responder: Responder;
  let initiator: Initiator;
  let listener: HostPort;
  let unknownTarget: HostPort;

  before(async () => {
    echo = await startEchoService();
    const { port } = echo.address() as net.AddressInfo;
    responder = await responderOnFreePorts({
      tcp_listeners: [
        { address: '127.0.0.1:0', host_id: node, target: 'echo', stat_prefix: 'echo' },
        { address: '127.0.0.1:0', host_id: node, target: 'nothing', stat_prefix: 'nothing' },
      ],
    });
    initiator = await connectedInitiator(responder, {
      node,
      routes: [],
      config: { tcp_targets: [{ name: 'echo', address: `127.0.0.1:${port}` }] },
    });
    [listener, unknownTarget] = responder.addresses.tcp as [HostPort, HostPort];
  });

  after(async () => {
    await initiator.close();
    await responder.close();
    echo.close();
  });

  it('carries both directions, and the answer to a half-close', async () => {
    const socket = await connectTo(listener);
    const received = readAll(socket);
    socket.write('hello ');
    socket.end('world');
    const { text } = await received;
    assert.equal(text, 'hello worldbye');
    socket.destroy();
  });

  it(`carries ${largeTransferBytes / mebibyte} MiB each way at once, intact`, async () => {
    const socket = await connectTo(listener);
    const received = readAll(socket);
    const sent = createHash('sha256');
    for (let written = 0; written < largeTransferBytes; written += chunk.length) {
      sent.update(chunk);
      if (!socket.write(chunk)) await once(socket, 'drain');
    }
    sent.update('bye');
    socket.end();
    const { bytes, digest } = await received;
    assert.equal(bytes, largeTransferBytes + 3);
    assert.equal(digest, sent.digest('hex'));
    socket.destroy();
  });

  it('closes a connection whose target the initiator does not have, and counts it', async () => {
    const before = statsOf(responder, 'tcp.nothing.upstream_cx_connect_fail') ?? 0;
    const socket = await connectTo(unknownTarget);
    // Refused with a reset, so that it cannot pass for an empty connection that ended cleanly.
    const reset = new Promise<string | undefined>((resolve) =>
      socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code)),
    );
    socket.resume();
    assert.equal(await reset, 'ECONNRESET');
    assert.equal(statsOf(responder, 'tcp.nothing.upstream_cx_connect_fail'), before + 1);
  });

  it('counts connections and bytes in the tcp_proxy stats', async () => {
    const total = statsOf(responder, 'tcp.echo.downstream_cx_total') ?? 0;
    const rx = statsOf(responder, 'tcp.echo.downstream_cx_rx_bytes_total') ?? 0;
    const tx = statsOf(responder, 'tcp.echo.downstream_cx_tx_bytes_total') ?? 0;
    const socket = await connectTo(listener);
    const received = readAll(socket);
    socket.end('12345');
    await received;
    socket.destroy();
    await once(socket, 'close');
    assert.equal(statsOf(responder, 'tcp.echo.downstream_cx_total'), total + 1);
    assert.equal(statsOf(responder, 'tcp.echo.downstream_cx_rx_bytes_total'), rx + 5);
    assert.equal(statsOf(responder, 'tcp.echo.downstream_cx_tx_bytes_total'), tx + 8);
  });
});
