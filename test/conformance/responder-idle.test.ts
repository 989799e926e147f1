/**
 * Idle tunnels at the revtun responder against a fake Envoy initiator (protocol reference §5, §8;
 * acceptance scenarios 18, 21, 22, 24, 34): RPING cadence with its jitter, the echo deadline, the
 * miss threshold, split and extra echoes, checkout only with no echo owed, and the 503s.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type { ServerHttp2Stream } from 'node:http2';
import { after, before, describe, it } from 'node:test';
import type { Responder } from '../../src/responder/responder.ts';
import type { LifecycleRecord } from '../../src/shared/lifecycle-log.ts';
import { FakeInitiator, envoyHandshakeRequest } from '../helpers/fake-initiator.ts';
import { request, startNamedService, type TestService } from '../helpers/http.ts';
import { Relay } from '../helpers/relay.ts';
import { connectedInitiator, responderOnFreePorts, waitForEvent } from '../helpers/tunnels.ts';

const intervalMs = 200;
/** Timer slop allowed on top of a computed bound: event-loop lag on a busy two-core machine. */
const slopMs = 50;

const forNode = (node: string) => envoyHandshakeRequest({ node, cluster: 'c1', tenant: 't1' });

/** The responder's lifecycle records for one node, as they are emitted. */
function recordsOf(responder: Responder, node: string): LifecycleRecord[] {
  const records: LifecycleRecord[] = [];
  responder.on('lifecycle', (record) => {
    if (record.node_id === node) records.push(record);
  });
  return records;
}

/** Resolves at the next lifecycle record of `node` for `event` (and `accept`). */
function nextRecord(
  responder: Responder,
  node: string,
  event: string,
  accept: (record: LifecycleRecord) => boolean = () => true,
  timeoutMs = 5_000,
): Promise<LifecycleRecord> {
  return waitForEvent<[LifecycleRecord]>(
    responder,
    'lifecycle',
    (record) => record.node_id === node && record.event === event && accept(record),
    timeoutMs,
  ).then(([record]) => record);
}

/** Resolves with the close reason of the next tunnel of `node` that closes. */
async function closedFor(responder: Responder, node: string, timeoutMs = 10_000): Promise<string> {
  const [, reason] = await waitForEvent(
    responder,
    'tunnel_closed',
    (identity: { nodeId: string }, _reason: string) => identity.nodeId === node,
    timeoutMs,
  );
  return reason;
}

async function connected(responder: Responder, node: string): Promise<FakeInitiator> {
  const peer = await FakeInitiator.connect(responder.addresses.tunnel, forNode(node));
  await peer.expectAccepted();
  return peer;
}

describe('RPING from the responder', () => {
  let responder: Responder;
  before(async () => {
    responder = await responderOnFreePorts({
      tunnel: { ping_interval: `${intervalMs}ms`, ping_failure_threshold: 3 },
    });
  });
  after(() => responder.close({ graceMs: 0 }));

  it('scenario 21: pings come every interval .. interval × 1.15 after each echo, with jitter, and each is logged as sent and acked', async () => {
    const records = recordsOf(responder, 'cadence');
    const peer = await connected(responder, 'cadence');
    await peer.expectPing(2_000);
    const gaps: number[] = [];
    const samples = 16;
    for (let i = 0; i < samples; i += 1) {
      peer.echo();
      const echoedAt = performance.now();
      await peer.expectPing(2_000);
      gaps.push(performance.now() - echoedAt);
    }
    const acked = nextRecord(responder, 'cadence', 'idle_ping_ack', () => {
      return records.filter((r) => r.event === 'idle_ping_ack').length === samples + 1;
    });
    peer.echo();
    await acked;
    const shown = gaps.map(Math.round).join(', ');
    for (const gap of gaps) {
      // The echo leaves before the responder re-arms, so a gap is never below the interval
      // (1 ms of rounding aside); the jitter adds at most 15 %.
      assert.ok(gap >= intervalMs - 1, `a gap below the interval: ${shown}`);
      assert.ok(gap <= intervalMs * 1.15 + slopMs, `a gap above interval × 1.15: ${shown}`);
    }
    // Uniform jitter over 30 ms spreads 16 gaps by more than 8 ms except with odds below 1e-8;
    // without jitter they would all sit within a few ms of each other.
    const spread = Math.max(...gaps) - Math.min(...gaps);
    assert.ok(spread >= 8, `no jitter: 16 gaps within ${spread.toFixed(1)} ms: ${shown}`);
    const counts = (event: string) => records.filter((r) => r.event === event).length;
    assert.equal(counts('idle_ping_sent'), samples + 1);
    assert.equal(counts('idle_ping_ack'), samples + 1);
    assert.equal(counts('idle_ping_miss'), 0);
    peer.destroy();
  });

  it('misses an echo that does not come within interval/2', async () => {
    const peer = await connected(responder, 'deadline');
    const missed = nextRecord(responder, 'deadline', 'idle_ping_miss');
    await peer.expectPing(2_000);
    const pingAt = performance.now();
    const record = await missed;
    const elapsed = performance.now() - pingAt;
    assert.equal(record.miss_count, 1);
    assert.ok(
      elapsed >= intervalMs / 2 - 5 && elapsed <= intervalMs / 2 + slopMs,
      `the miss came ${Math.round(elapsed)} ms after the ping (deadline ${intervalMs / 2} ms)`,
    );
    peer.destroy();
  });

  it('scenario 22: two misses keep the tunnel, late echoes reset the count, and the third consecutive miss closes it with idle_ping_timeout', async () => {
    const records = recordsOf(responder, 'misses');
    const closed = closedFor(responder, 'misses');
    const peer = await connected(responder, 'misses');
    for (const count of [1, 2]) {
      const missed = nextRecord(
        responder,
        'misses',
        'idle_ping_miss',
        (r) => r.miss_count === count,
      );
      await peer.expectPing(2_000);
      await missed;
    }
    assert.equal(
      responder.stats.value('reverse_connections.nodes.misses'),
      1,
      'kept after 2 misses',
    );
    // The two late echoes arrive together, as from an initiator that stalled and caught up.
    const caughtUp = nextRecord(
      responder,
      'misses',
      'idle_ping_ack',
      () => records.filter((r) => r.event === 'idle_ping_ack').length === 2,
    );
    peer.peer.write('RPINGRPING');
    await caughtUp;
    await peer.expectPing(2_000);
    peer.echo();
    // Now silent: three more misses, counted from 1 again.
    await peer.expectPing(2_000);
    await peer.expectPing(2_000);
    await peer.expectPing(2_000);
    await peer.peer.whenClosed(2_000);
    assert.equal(await closed, 'idle_ping_timeout');
    assert.equal(peer.peer.pending.length, 0, 'nothing but RPING on an idle tunnel');
    assert.deepEqual(
      records.map((r) => [r.event, r.miss_count ?? r.close_reason ?? '']),
      [
        ['tunnel_setup', ''],
        ['idle_ping_sent', ''],
        ['idle_ping_miss', 1],
        ['idle_ping_sent', ''],
        ['idle_ping_miss', 2],
        ['idle_ping_ack', ''],
        ['idle_ping_ack', ''],
        ['idle_ping_sent', ''],
        ['idle_ping_ack', ''],
        ['idle_ping_sent', ''],
        ['idle_ping_miss', 1],
        ['idle_ping_sent', ''],
        ['idle_ping_miss', 2],
        ['idle_ping_sent', ''],
        ['idle_ping_miss', 3],
        ['idle_ping_timeout', 3],
        ['tunnel_closed', 'idle_ping_timeout'],
      ],
    );
    for (const name of ['nodes.misses', 'clusters.c1', 'worker_0.node.misses']) {
      assert.equal(responder.stats.value(`reverse_connections.${name}`), 0, name);
    }
  });

  it('scenario 22: an echo in time after two missed ones cancels that ping’s deadline (Envoy: a complete RPING is an ack)', async () => {
    const records = recordsOf(responder, 'skipper');
    const peer = await connected(responder, 'skipper');
    for (const count of [1, 2]) {
      const missed = nextRecord(
        responder,
        'skipper',
        'idle_ping_miss',
        (r) => r.miss_count === count,
      );
      await peer.expectPing(2_000);
      await missed;
    }
    await peer.expectPing(2_000);
    peer.echo();
    await peer.expectPing(2_000);
    peer.destroy();
    const afterAck = records.slice(records.findIndex((r) => r.event === 'idle_ping_ack'));
    assert.deepEqual(
      afterAck.map((r) => r.event),
      ['idle_ping_ack', 'idle_ping_sent'],
      'no miss between the ack and the next ping',
    );
  });

  it('closes an idle tunnel after the first miss with ping_failure_threshold 1', async () => {
    const strict = await responderOnFreePorts({
      tunnel: { ping_interval: `${intervalMs}ms`, ping_failure_threshold: 1 },
    });
    try {
      const closed = closedFor(strict, 'once');
      const peer = await connected(strict, 'once');
      await peer.expectPing(2_000);
      await peer.peer.whenClosed(2_000);
      assert.equal(await closed, 'idle_ping_timeout');
      assert.equal(peer.peer.pending.length, 0);
    } finally {
      await strict.close({ graceMs: 0 });
    }
  });

  it('takes a split echo ("RPI" + "NG") as one ack', async () => {
    const acked = nextRecord(responder, 'split', 'idle_ping_ack');
    const peer = await connected(responder, 'split');
    await peer.expectPing(2_000);
    peer.peer.write('RPI');
    assert.equal(await peer.silentFor(20), true);
    peer.peer.write('NG');
    await acked;
    await peer.expectPing(2_000);
    peer.destroy();
  });

  it('closes a tunnel that echoes more than it was pinged (two echoes for one ping)', async () => {
    const closed = closedFor(responder, 'double');
    const peer = await connected(responder, 'double');
    await peer.expectPing(2_000);
    peer.peer.write('RPINGRPING');
    await peer.peer.whenClosed(2_000);
    assert.equal(await closed, 'idle_protocol_error');
  });

  it('closes a tunnel that sends an RPING before it was pinged', async () => {
    const closed = closedFor(responder, 'unasked');
    const peer = await connected(responder, 'unasked');
    peer.echo();
    await peer.peer.whenClosed(2_000);
    assert.equal(await closed, 'idle_protocol_error');
    assert.equal(peer.peer.pending.length, 0, 'no ping was sent first');
  });

  it('scenario 34: "HELLO" while idle closes the tunnel without checking it out, and the node is gone', async () => {
    const records = recordsOf(responder, 'hello');
    const closed = closedFor(responder, 'hello');
    const peer = await connected(responder, 'hello');
    peer.peer.write('HELLO');
    await peer.peer.whenClosed(2_000);
    assert.equal(await closed, 'idle_protocol_error');
    assert.deepEqual(
      records.map((r) => r.event),
      ['tunnel_setup', 'tunnel_closed'],
    );
    assert.equal(responder.stats.value('reverse_connections.nodes.hello'), 0);
    const reply = await request(responder.addresses.egress[0]!, '/', {
      headers: { 'x-node-id': 'hello' },
    });
    assert.equal(reply.status, 503);
  });
});

describe('checkout at the responder', () => {
  let responder: Responder;
  before(async () => {
    responder = await responderOnFreePorts({ tunnel: { ping_interval: `${intervalMs}ms` } });
  });
  after(() => responder.close({ graceMs: 0 }));

  it('scenario 24: a split echo owed at checkout ("RPI" held) is completed before the preface, and the request succeeds', async () => {
    const peer = await connected(responder, 'held');
    await peer.expectPing(2_000);
    peer.peer.write('RPI');
    assert.equal(await peer.silentFor(20), true);
    const reply = request(responder.addresses.egress[0]!, '/late', {
      headers: { 'x-node-id': 'held' },
    });
    assert.equal(await peer.silentFor(40), true, 'no HTTP/2 byte while part of the echo is owed');
    peer.peer.write('NG');
    const session = await peer.serveHttp2((stream, headers) => {
      stream.respond({ ':status': 200 });
      stream.end(`served ${headers[':path']}`);
    });
    const answer = await reply;
    assert.equal(answer.status, 200);
    assert.equal(answer.text, 'served /late');
    session.destroy();
  });

  it('scenario 24: a tunnel checked out right after an echo sends the preface at once and never another RPING', async () => {
    const handoff = nextRecord(responder, 'fresh', 'socket_handoff');
    const peer = await connected(responder, 'fresh');
    await peer.expectPing(2_000);
    const acked = nextRecord(responder, 'fresh', 'idle_ping_ack');
    peer.echo();
    await acked;
    const reply = request(responder.addresses.egress[0]!, '/now', {
      headers: { 'x-node-id': 'fresh' },
    });
    const session = await peer.serveHttp2((stream) => {
      stream.respond({ ':status': 200 });
      stream.end('ok');
    });
    assert.equal((await handoff).handoff_kind, 'pool_to_upstream');
    assert.equal((await reply).status, 200);
    session.destroy();
  });

  it('scenario 18: an unknown node gets 503 and upstream_cx_none_healthy +1', async () => {
    const name = 'cluster.reverse_connection_cluster.upstream_cx_none_healthy';
    const before = responder.stats.value(name) ?? 0;
    const reply = await request(responder.addresses.egress[0]!, '/', {
      headers: { 'x-node-id': 'nobody' },
    });
    assert.equal(reply.status, 503);
    assert.equal(responder.stats.value(name), before + 1);
  });

  it('scenario 18: a known node whose only tunnel never returns its echo gets 503, pool_miss +1 and upstream_cx_connect_fail +1', async () => {
    const poolMiss = 'reverse_connections.pool_miss';
    const connectFail = 'cluster.reverse_connection_cluster.upstream_cx_connect_fail';
    const before = [responder.stats.value(poolMiss) ?? 0, responder.stats.value(connectFail) ?? 0];
    const peer = await connected(responder, 'mute');
    await peer.expectPing(2_000);
    const reply = await request(responder.addresses.egress[0]!, '/', {
      headers: { 'x-node-id': 'mute' },
      timeoutMs: 2_000,
    });
    assert.equal(reply.status, 503);
    assert.deepEqual(
      [responder.stats.value(poolMiss), responder.stats.value(connectFail)],
      [before[0]! + 1, before[1]! + 1],
    );
    // Nothing but RPING ever reached the fake: the tunnel was never handed to HTTP/2.
    assert.match(peer.peer.pending.toString('latin1'), /^(RPING)*$/);
    peer.destroy();
  });
});

describe('HTTP/2 sessions on checked-out tunnels', () => {
  let responder: Responder;
  before(async () => {
    // No RPING while these tests run: the spare tunnels stay idle and clean.
    responder = await responderOnFreePorts({ tunnel: { ping_interval: '60s' } });
  });
  after(() => responder.close({ graceMs: 0 }));

  it('checks out a second idle tunnel when the first HTTP/2 connection is at its stream limit', async () => {
    const first = await connected(responder, 'narrow');
    const second = await connected(responder, 'narrow');
    const streams = new EventEmitter();
    const held: ServerHttp2Stream[] = [];
    const serve = (stream: ServerHttp2Stream) => {
      held.push(stream);
      streams.emit('stream');
    };
    const ask = () =>
      request(responder.addresses.egress[0]!, '/', {
        headers: { 'x-node-id': 'narrow' },
        timeoutMs: 3_000,
      });
    let arrived = waitForEvent(streams, 'stream');
    const one = ask();
    // Whichever tunnel the responder checks out gets the preface; it allows one stream at a time.
    const [picked, spare] = await Promise.race([
      first.peer.peek(24).then(() => [first, second] as const),
      second.peer.peek(24).then(() => [second, first] as const),
    ]);
    const sessions = [await picked.serveHttp2(serve, { maxConcurrentStreams: 1 })];
    await arrived;
    arrived = waitForEvent(streams, 'stream');
    const two = ask();
    sessions.push(await spare.serveHttp2(serve, { maxConcurrentStreams: 1 }));
    await arrived;
    for (const stream of held) {
      stream.respond({ ':status': 200 });
      stream.end('ok');
    }
    assert.deepEqual([(await one).status, (await two).status], [200, 200]);
    for (const session of sessions) session.destroy();
  });

  it('checks out another idle tunnel once the initiator sent GOAWAY on the first', async () => {
    const first = await connected(responder, 'drains');
    const second = await connected(responder, 'drains');
    const ask = () =>
      request(responder.addresses.egress[0]!, '/', {
        headers: { 'x-node-id': 'drains' },
        timeoutMs: 3_000,
      });
    const streams = new EventEmitter();
    const one = ask();
    const [picked, spare] = await Promise.race([
      first.peer.peek(24).then(() => [first, second] as const),
      second.peer.peek(24).then(() => [second, first] as const),
    ]);
    const arrived = waitForEvent<[ServerHttp2Stream]>(streams, 'stream');
    const draining = await picked.serveHttp2((stream) => streams.emit('stream', stream));
    const [inFlight] = await arrived;
    // GOAWAY first, then the response: the responder has read the GOAWAY when the caller has
    // its answer, so the next request must not go to this session.
    draining.goaway(0);
    inFlight.respond({ ':status': 200 });
    inFlight.end('ok');
    assert.equal((await one).status, 200);
    const two = ask();
    const fresh = await spare.serveHttp2((stream) => {
      stream.respond({ ':status': 200 });
      stream.end('fresh');
    });
    const answer = await two;
    assert.deepEqual([answer.status, answer.text], [200, 'fresh']);
    draining.destroy();
    fresh.destroy();
  });

  it('closes a tunnel once the initiator sent GOAWAY and its streams are done, freeing the place', async () => {
    const peer = await connected(responder, 'goaway');
    const reply = request(responder.addresses.egress[0]!, '/', {
      headers: { 'x-node-id': 'goaway' },
      timeoutMs: 3_000,
    });
    const session = await peer.serveHttp2((stream) => {
      stream.respond({ ':status': 200 });
      stream.end('ok');
    });
    assert.equal((await reply).status, 200);
    const closed = closedFor(responder, 'goaway', 2_000);
    session.goaway(0);
    try {
      assert.equal(await closed, 'remote_close');
      assert.equal(responder.stats.value('reverse_connections.nodes.goaway'), 0);
    } finally {
      session.destroy();
    }
  });
});

describe('scenario 22 end to end', () => {
  let responder: Responder;
  let service: TestService;
  let relay: Relay;
  before(async () => {
    responder = await responderOnFreePorts({
      tunnel: { ping_interval: `${intervalMs}ms`, ping_failure_threshold: 3 },
    });
    service = await startNamedService('n1');
    relay = await new Relay(responder.addresses.tunnel).listen();
  });
  after(async () => {
    await relay.close();
    await responder.close({ graceMs: 0 });
    await service.close();
  });

  it('scenario 22: when echoes stop reaching the responder it closes the tunnel after 3 misses, the gauges drop, and the initiator re-dials', async () => {
    const setup = nextRecord(responder, 'n1', 'tunnel_setup');
    const acked = nextRecord(responder, 'n1', 'idle_ping_ack');
    const initiator = await connectedInitiator(relay.address, {
      node: 'n1',
      routes: [{ prefix: '/', target: service.target }],
    });
    try {
      await setup;
      await acked;
      const timedOut = nextRecord(responder, 'n1', 'tunnel_closed');
      relay.dropFromInitiator = true;
      const record = await timedOut;
      relay.dropFromInitiator = false;
      assert.equal(record.close_reason, 'idle_ping_timeout');
      assert.equal(responder.stats.value('reverse_connections.nodes.n1'), 0);
      await nextRecord(responder, 'n1', 'tunnel_setup', () => true, 5_000);
      assert.equal(responder.stats.value('reverse_connections.nodes.n1'), 1);
      const reply = await request(responder.addresses.egress[0]!, '/', {
        headers: { 'x-node-id': 'n1' },
      });
      assert.equal(reply.status, 200);
    } finally {
      await initiator.close({ graceMs: 0 });
    }
  });
});
