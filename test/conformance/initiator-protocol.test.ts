/**
 * The initiator against a fake responder that speaks the wire protocol byte by byte (protocol
 * reference §2, §4, §5; acceptance scenarios 14, 21, 23, 26, 30, 31).
 */
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { after, before, describe, it } from 'node:test';
import { startInitiator, type Initiator } from '../../src/initiator/initiator.ts';
import { startNamedService, type TestService } from '../helpers/http.ts';
import { RawServer, type RawPeer } from '../helpers/raw.ts';
import { waitForEvent } from '../helpers/tunnels.ts';

const accepted = 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n';
const preface = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n';
/** An empty SETTINGS frame: length 0, type 4, flags 0, stream 0. */
const emptySettings = Buffer.from('000000040000000000', 'hex');

let service: TestService;
before(async () => {
  service = await startNamedService('local');
});
after(() => service.close());

async function initiatorFor(
  server: RawServer,
  extra: { tunnels?: number } = {},
): Promise<Initiator> {
  return startInitiator({
    node_id: 'n1',
    cluster_id: 'c1',
    tenant_id: 't1',
    remote_clusters: [
      {
        name: 'upstream-cluster',
        hosts: [`127.0.0.1:${server.address.port}`],
        tunnels_per_host: extra.tunnels ?? 1,
      },
    ],
    local_routes: [{ prefix: '/', target: service.target }],
  });
}

/** Reads one HTTP/2 frame (RFC 9113 §4.1). */
async function readFrame(
  peer: RawPeer,
): Promise<{ type: number; flags: number; stream: number; payload: Buffer }> {
  const header = await peer.read(9);
  const length = header.readUIntBE(0, 3);
  return {
    type: header[3] as number,
    flags: header[4] as number,
    stream: header.readUInt32BE(5) & 0x7fffffff,
    payload: await peer.read(length),
  };
}

/** Sends one request as the responder's HTTP/2 client on the peer's socket. */
async function requestOver(peer: RawPeer, path: string): Promise<{ status: number; body: string }> {
  const session = http2.connect('http://n1', { createConnection: () => peer.detach() });
  session.on('error', () => {});
  try {
    const stream = session.request({ ':path': path });
    stream.on('error', () => {});
    const [headers] = await waitForEvent<[http2.IncomingHttpHeaders]>(stream, 'response');
    let body = '';
    stream.setEncoding('utf8');
    for await (const chunk of stream) body += chunk as string;
    return { status: Number(headers[':status']), body };
  } finally {
    session.destroy();
  }
}

describe('the handshake an initiator sends', () => {
  let server: RawServer;
  let initiator: Initiator;

  before(async () => {
    server = await new RawServer().listen();
    initiator = await initiatorFor(server);
  });
  after(async () => {
    await initiator.close({ graceMs: 0 });
    await server.close();
  });

  it("scenario 14: is Envoy's GET with the identity headers in Envoy's order and nothing else", async () => {
    const peer = await server.accept();
    const head = await peer.readUntil('\r\n\r\n');
    const port = server.address.port;
    assert.match(
      head,
      new RegExp(
        '^GET /reverse_connections/request HTTP/1\\.1\\r\\n' +
          `host: 127\\.0\\.0\\.1:${port}\\r\\n` +
          'x-envoy-reverse-tunnel-node-id: n1\\r\\n' +
          'x-envoy-reverse-tunnel-cluster-id: c1\\r\\n' +
          'x-envoy-reverse-tunnel-tenant-id: t1\\r\\n' +
          'x-envoy-reverse-tunnel-upstream-cluster-name: upstream-cluster\\r\\n' +
          'x-envoy-reverse-tunnel-initiation-time: \\d{13}\\r\\n' +
          'content-length: 0\\r\\n\\r\\n$',
      ),
    );
    assert.equal(
      await peer.silentFor(100),
      true,
      'nothing may follow the request before the answer',
    );
    const connected = waitForEvent(initiator, 'handshake_success');
    peer.write(accepted);
    await connected;
    assert.equal(
      initiator.stats.value('reverse_tunnel_initiator.host.127.0.0.1:' + port + '.connected'),
      1,
    );

    // Silence while idle, then exactly one echo per RPING.
    assert.equal(await peer.silentFor(300), true, 'an idle initiator sends nothing unprompted');
    peer.write('RPING');
    assert.equal((await peer.read(5)).toString('latin1'), 'RPING');
    peer.write('RP');
    peer.write('ING');
    assert.equal((await peer.read(5)).toString('latin1'), 'RPING');
    assert.equal(await peer.silentFor(100), true, 'one echo per ping');

    // The responder checks the tunnel out and sends a request as the HTTP/2 client.
    const reply = await requestOver(peer, '/through');
    assert.equal(reply.status, 200);
    assert.equal((JSON.parse(reply.body) as { url: string }).url, '/through');
  });
});

describe('answers the initiator reads', () => {
  const closers: Array<() => Promise<void>> = [];
  after(async () => {
    for (const close of closers) await close();
  });

  /** A fake responder of its own and an initiator dialling it, past the handshake request. */
  async function fresh(): Promise<{ initiator: Initiator; peer: RawPeer; server: RawServer }> {
    const server = await new RawServer().listen();
    const initiator = await initiatorFor(server);
    closers.push(async () => {
      await initiator.close({ graceMs: 0 });
      await server.close();
    });
    const peer = await server.accept();
    await peer.readUntil('\r\n\r\n');
    return { initiator, peer, server };
  }

  it('scenario 30: echoes an RPING coalesced with the 200 exactly once and stays connected', async () => {
    const { initiator, peer } = await fresh();
    const connected = waitForEvent(initiator, 'handshake_success');
    peer.write(accepted + 'RPING');
    await connected;
    assert.equal((await peer.read(5)).toString('latin1'), 'RPING');
    assert.equal(await peer.silentFor(100), true);
    assert.equal(
      initiator.stats.value('reverse_tunnel_initiator.cluster.upstream-cluster.connected'),
      1,
    );
    await initiator.close({ graceMs: 0 });
  });

  it('scenario 31: starts HTTP/2 on a preface and SETTINGS coalesced with the 200', async () => {
    const { peer } = await fresh();
    peer.write(Buffer.concat([Buffer.from(accepted + preface, 'latin1'), emptySettings]));
    // The initiator, now the HTTP/2 server, sends its SETTINGS and acknowledges ours.
    const settings = await readFrame(peer);
    assert.deepEqual([settings.type, settings.flags, settings.stream], [0x04, 0x00, 0]);
    const ack = await readFrame(peer);
    assert.deepEqual([ack.type, ack.flags, ack.stream, ack.payload.length], [0x04, 0x01, 0, 0]);
  });

  it('scenario 23: resets the tunnel on an RPING flood (13 200 in one burst)', async () => {
    const { initiator, peer } = await fresh();
    const closed = waitForEvent(initiator, 'connection_closed');
    peer.write(accepted + 'RPING'.repeat(13_200));
    assert.equal((await closed)[2], 'rping_flood');
    await peer.whenClosed();
  });

  it('scenario 26: backs off 1 s, then 2 s, after failed handshakes, with the status as the reason', async () => {
    const { initiator, peer, server } = await fresh();
    const failures: string[] = [];
    initiator.on('handshake_failure', (_cluster, _host, reason) => failures.push(reason));
    peer.write('HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n');
    const failedAt = Date.now();
    const second = await server.accept(3_000);
    const firstGap = Date.now() - failedAt;
    await second.readUntil('\r\n\r\n');
    second.write('HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n');
    const secondFailedAt = Date.now();
    const third = await server.accept(4_000);
    const secondGap = Date.now() - secondFailedAt;
    assert.ok(firstGap >= 1_000, `first retry after ${firstGap} ms`);
    assert.ok(secondGap >= 2_000, `second retry after ${secondGap} ms`);
    assert.deepEqual(failures, ['http.500', 'http.503']);
    // A success resets the backoff.
    await third.readUntil('\r\n\r\n');
    const connected = waitForEvent(initiator, 'handshake_success');
    third.write(accepted);
    await connected;
    await initiator.close({ graceMs: 0 });
  });

  it('treats an idle tunnel the responder drops at once as a failure, not a reason to re-dial in a loop', async () => {
    const { initiator, peer, server } = await fresh();
    const failed = waitForEvent(initiator, 'handshake_failure');
    peer.write(accepted);
    await waitForEvent(initiator, 'handshake_success');
    peer.destroy();
    assert.equal((await failed)[2], 'closed_early');
    const next = await server.accept(3_000);
    assert.ok(next);
    await initiator.close({ graceMs: 0 });
  });

  it('fails a 200 that declares a body', async () => {
    const { initiator, peer } = await fresh();
    const failed = waitForEvent(initiator, 'handshake_failure');
    peer.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
    assert.equal((await failed)[2], 'http.200_with_body');
    await peer.whenClosed();
    await initiator.close({ graceMs: 0 });
  });
});
