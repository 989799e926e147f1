/**
 * The responder against a fake initiator that speaks the wire protocol byte by byte (protocol
 * reference §3, §5, §6; acceptance scenarios 1–5, 21, 22, 24, 29, 34).
 */
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { after, before, describe, it } from 'node:test';
import type { Responder } from '../../src/responder/responder.ts';
import { request } from '../helpers/http.ts';
import { RawPeer, handshakeRequest } from '../helpers/raw.ts';
import { responderOnFreePorts, waitForEvent } from '../helpers/tunnels.ts';

const accepted = 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n';
const ids = { node: 'n1', cluster: 'c1', tenant: 't1' };
const preface = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n';

async function handshake(responder: Responder, request = handshakeRequest(ids)): Promise<RawPeer> {
  const peer = await RawPeer.connect(responder.addresses.tunnel);
  peer.write(request);
  return peer;
}

/** Reads the rejection the responder answers with, up to its end, and checks the connection closes. */
async function rejection(peer: RawPeer): Promise<{ status: number; body: string; head: string }> {
  const head = await peer.readUntil('\r\n\r\n');
  const length = Number(/content-length: (\d+)/i.exec(head)?.[1]);
  const body = (await peer.read(length)).toString('utf8');
  await peer.whenClosed();
  return { status: Number(head.slice(9, 12)), body, head };
}

describe('the tunnel listener', () => {
  let responder: Responder;
  const counter = (name: string) => responder.stats.value(`reverse_tunnel.handshake.${name}`) ?? 0;

  before(async () => {
    responder = await responderOnFreePorts({
      tunnel: {
        ping_interval: '200ms',
        handshake_timeout: '300ms',
        max_pending_handshakes_per_source: 3,
      },
    });
  });
  after(() => responder.close({ graceMs: 0 }));

  it("scenario 1: a valid handshake gets exactly Envoy's 200, accepted +1, the node and cluster gauges and a tunnel_setup", async () => {
    const before = counter('accepted');
    const setup = waitForEvent(responder, 'tunnel_setup');
    const peer = await handshake(responder);
    assert.equal((await peer.read(accepted.length)).toString('latin1'), accepted);
    assert.deepEqual((await setup)[0], { nodeId: 'n1', clusterId: 'c1', tenantId: 't1' });
    assert.equal(counter('accepted'), before + 1);
    assert.equal(responder.stats.value('reverse_connections.nodes.n1'), 1);
    assert.equal(responder.stats.value('reverse_connections.clusters.c1'), 1);
    const closed = waitForEvent(responder, 'tunnel_closed');
    peer.destroy();
    assert.equal((await closed)[1], 'idle_peer_close');
    assert.equal(responder.stats.value('reverse_connections.nodes.n1'), 0);
  });

  const rejections: Array<[string, string, number, string, string | undefined]> = [
    // [what, bytes, status, body, counter]; `what` names its acceptance scenario where there is one.
    [
      'scenario 2: a wrong path',
      handshakeRequest(ids, { path: '/custom/reverse' }),
      404,
      'Not a reverse tunnel request',
      undefined,
    ],
    [
      'scenario 3: a missing node id',
      handshakeRequest({ cluster: 'c1', tenant: 't1' }),
      400,
      'Missing required reverse tunnel headers',
      'parse_error',
    ],
    [
      'scenario 4: an empty tenant id',
      handshakeRequest({ ...ids, tenant: '' }),
      400,
      'Empty tenant-id header value',
      'parse_error',
    ],
    [
      'scenario 5: a body',
      handshakeRequest(ids, { extra: ['content-length: 15'] }) + 'fifteen bytes!!',
      400,
      'Reverse tunnel handshake must not carry a body',
      'body_rejected',
    ],
    [
      'a malformed request',
      'GET /reverse_connections/request HTTP/1.1\r\nbad header\r\n\r\n',
      400,
      'Malformed reverse tunnel handshake: malformed header line "bad header"',
      'parse_error',
    ],
    [
      'a head over the byte cap',
      handshakeRequest(ids, { extra: [`x-pad: ${'a'.repeat(9000)}`] }),
      431,
      'Reverse tunnel handshake exceeds 8192 bytes',
      'parse_error',
    ],
  ];
  for (const [what, bytes, status, body, name] of rejections) {
    const scenario = /^scenario \d+/.exec(what)?.[0];
    const title = `answers ${status} to ${what.replace(/^scenario \d+: /, '')} and closes the connection`;
    it(scenario === undefined ? title : `${scenario}: ${title}`, async () => {
      const before = name === undefined ? 0 : counter(name);
      const acceptedBefore = counter('accepted');
      const answer = await rejection(await handshake(responder, bytes));
      assert.equal(answer.status, status);
      assert.equal(answer.body, body);
      assert.match(answer.head, /\r\ncontent-type: text\/plain\r\n/);
      assert.match(answer.head, /\r\nconnection: close\r\n/);
      if (name !== undefined) assert.equal(counter(name), before + 1);
      assert.equal(counter('accepted'), acceptedBefore);
    });
  }

  it('scenario 29: closes a connection that sends nothing once the handshake deadline passes, and counts it', async () => {
    const before = counter('timeout');
    const peer = await RawPeer.connect(responder.addresses.tunnel);
    await peer.whenClosed(2_000);
    assert.equal(peer.pending.length, 0);
    assert.equal(counter('timeout'), before + 1);
  });

  it('closes a connection that drips a request slower than the deadline', async () => {
    const peer = await RawPeer.connect(responder.addresses.tunnel);
    peer.write('GET /reverse_connections/request HTTP/1.1\r\n');
    await peer.whenClosed(2_000);
    assert.equal(peer.pending.length, 0);
  });

  it('refuses connections beyond the pending-handshake cap per source address', async () => {
    const pending = await Promise.all(
      [1, 2, 3].map(() => RawPeer.connect(responder.addresses.tunnel)),
    );
    const extra = await RawPeer.connect(responder.addresses.tunnel);
    await extra.whenClosed(1_000);
    assert.equal(extra.pending.length, 0);
    for (const peer of pending) peer.destroy();
  });
});

describe('idle tunnels at the responder', () => {
  let responder: Responder;

  before(async () => {
    responder = await responderOnFreePorts({
      tunnel: { ping_interval: '200ms', ping_failure_threshold: 3 },
    });
  });
  after(() => responder.close({ graceMs: 0 }));

  it('scenario 21: sends RPING no sooner than the interval and again after each echo', async () => {
    const peer = await handshake(responder);
    await peer.read(accepted.length);
    for (let i = 0; i < 3; i += 1) {
      const asked = Date.now();
      assert.equal((await peer.read(5, 2_000)).toString('latin1'), 'RPING');
      assert.ok(Date.now() - asked >= 190, `ping ${i} came after ${Date.now() - asked} ms`);
      peer.write('RPING');
    }
    peer.destroy();
  });

  it('scenario 22: closes a tunnel whose echoes stop after three missed pings', async () => {
    const closed = waitForEvent(
      responder,
      'tunnel_closed',
      (identity: { nodeId: string }, _reason: string) => identity.nodeId === 'silent',
    );
    const peer = await handshake(responder, handshakeRequest({ ...ids, node: 'silent' }));
    await peer.read(accepted.length);
    await peer.whenClosed(5_000);
    assert.equal(peer.pending.toString('latin1'), 'RPINGRPINGRPING');
    assert.equal((await closed)[1], 'idle_ping_timeout');
    assert.equal(responder.stats.value('reverse_connections.nodes.silent'), 0);
  });

  it('takes a split echo as one', async () => {
    const peer = await handshake(responder);
    await peer.read(accepted.length);
    assert.equal((await peer.read(5)).toString('latin1'), 'RPING');
    peer.write('RPI');
    peer.write('NG');
    assert.equal((await peer.read(5)).toString('latin1'), 'RPING');
    peer.destroy();
  });

  it('scenario 34: closes an idle tunnel at once when it sends anything but an echo', async () => {
    const closed = waitForEvent(
      responder,
      'tunnel_closed',
      (identity: { nodeId: string }, _reason: string) => identity.nodeId === 'chatty',
    );
    const peer = await handshake(responder, handshakeRequest({ ...ids, node: 'chatty' }));
    await peer.read(accepted.length);
    peer.write('HELLO');
    await peer.whenClosed(1_000);
    assert.equal((await closed)[1], 'idle_protocol_error');
  });

  it('closes a tunnel whose first bytes after the handshake are not an echo', async () => {
    const closed = waitForEvent(
      responder,
      'tunnel_closed',
      (identity: { nodeId: string }, _reason: string) => identity.nodeId === 'eager',
    );
    await handshake(responder, handshakeRequest({ ...ids, node: 'eager' }) + 'PRI * HTTP/2.0');
    assert.equal((await closed)[1], 'idle_protocol_error');
  });
});

describe('checking a tunnel out', () => {
  let responder: Responder;

  before(async () => {
    responder = await responderOnFreePorts({ tunnel: { ping_interval: '200ms' } });
  });
  after(() => responder.close({ graceMs: 0 }));

  /** Serves HTTP/2 on the peer's socket, as an initiator does after its echo mode. */
  function serveHttp2(
    peer: RawPeer,
    onStream: (stream: http2.ServerHttp2Stream) => void,
  ): http2.ServerHttp2Session {
    const session = http2.performServerHandshake(peer.detach());
    session.on('error', () => {});
    session.on('stream', (stream) => {
      stream.on('error', () => {});
      onStream(stream);
    });
    return session;
  }

  it('scenario 24: waits for an owed echo before it starts HTTP/2, so no RPING reaches the HTTP/2 client', async () => {
    const peer = await handshake(responder, handshakeRequest({ ...ids, node: 'late' }));
    await peer.read(accepted.length);
    assert.equal((await peer.read(5)).toString('latin1'), 'RPING');
    // The echo is owed; a request arrives now.
    const reply = request(responder.addresses.egress[0]!, '/x', {
      headers: { 'x-node-id': 'late' },
    });
    assert.equal(await peer.silentFor(50), true, 'no byte may come while the echo is owed');
    peer.write('RPING');
    assert.equal((await peer.peek(24)).toString('latin1'), preface);
    const session = serveHttp2(peer, (stream) => {
      stream.respond({ ':status': 200 });
      stream.end('late but fine');
    });
    assert.equal((await reply).text, 'late but fine');
    session.destroy();
  });

  it('aborts the caller when the initiator resets a response before END_STREAM, even with NO_ERROR', async () => {
    const peer = await handshake(responder, handshakeRequest({ ...ids, node: 'reset' }));
    await peer.read(accepted.length);
    const reply = request(responder.addresses.egress[0]!, '/x', {
      headers: { 'x-node-id': 'reset' },
    });
    assert.equal((await peer.peek(24)).toString('latin1'), preface);
    const session = serveHttp2(peer, (stream) => {
      stream.respond({ ':status': 200 });
      // destroy() without an error resets the stream with NO_ERROR after a partial body.
      stream.write('partial', () => stream.destroy());
    });
    await assert.rejects(reply, /aborted|incomplete|socket hang up|ECONNRESET/);
    session.destroy();
  });

  it('aborts the caller when the tunnel dies mid-response', async () => {
    const peer = await handshake(responder, handshakeRequest({ ...ids, node: 'dies' }));
    await peer.read(accepted.length);
    const reply = request(responder.addresses.egress[0]!, '/x', {
      headers: { 'x-node-id': 'dies' },
    });
    assert.equal((await peer.peek(24)).toString('latin1'), preface);
    const session = serveHttp2(peer, (stream) => {
      stream.respond({ ':status': 200, 'content-length': '100' });
      stream.write('partial', () => peer.socket.destroy());
    });
    await assert.rejects(reply, /aborted|incomplete|socket hang up|ECONNRESET/);
    session.destroy();
  });

  it('answers 502 when the tunnel dies before the response starts', async () => {
    const peer = await handshake(responder, handshakeRequest({ ...ids, node: 'gone' }));
    await peer.read(accepted.length);
    const reply = request(responder.addresses.egress[0]!, '/x', {
      headers: { 'x-node-id': 'gone' },
    });
    assert.equal((await peer.peek(24)).toString('latin1'), preface);
    peer.socket.destroy();
    const answer = await reply;
    assert.equal(answer.status, 502);
    assert.match(answer.text, /^the tunnel to node gone failed before the response: /);
  });
});
