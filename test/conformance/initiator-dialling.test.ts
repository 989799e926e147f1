/**
 * How the revtun initiator dials, against fake Envoy responders (protocol reference §4, §7, §9;
 * acceptance scenarios 19, 25, 26, 28): tunnel counts per host and per remote cluster, the state
 * gauges, the handshake counters, Retry-After, the backoff schedule, and GOAWAY on close.
 *
 * The tests that wait out backoff delays run concurrently: each has its own fake responder and
 * initiator, and their timing bounds leave room for one another.
 */
import assert from 'node:assert/strict';
import type http2 from 'node:http2';
import type { ServerResponse } from 'node:http';
import { after, describe, it } from 'node:test';
import type { InitiatorConfigInput } from '../../src/config/schema.ts';
import { startInitiator, type Initiator } from '../../src/initiator/initiator.ts';
import { FakeResponder, type FakeTunnel } from '../helpers/fake-responder.ts';
import { startService } from '../helpers/http.ts';
import { waitForEvent } from '../helpers/tunnels.ts';

const ip = 'reverse_tunnel_initiator';
/** Timer slop allowed on top of a computed delay. */
const slopMs = 100;

interface Started {
  readonly fake: FakeResponder;
  readonly initiator: Initiator;
}

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function dialling(
  overrides: Partial<InitiatorConfigInput> = {},
  tunnels = 1,
): Promise<Started> {
  const fake = await FakeResponder.listen();
  const initiator = await startInitiator({
    node_id: 'n1',
    cluster_id: 'c1',
    tenant_id: 't1',
    remote_clusters: [
      { name: 'upstream-cluster', hosts: [fake.hostText], tunnels_per_host: tunnels },
    ],
    local_routes: [{ prefix: '/', target: 'http://127.0.0.1:1' }],
    ...overrides,
  });
  cleanups.push(async () => {
    await initiator.close({ graceMs: 0 });
    await fake.close();
  });
  return { fake, initiator };
}

/** The four gauges of a state: per cluster, per host, and both under worker_0. */
function stateOf(started: Started, state: string): number[] {
  const { fake, initiator } = started;
  return [
    `${ip}.cluster.upstream-cluster.${state}`,
    `${ip}.host.${fake.hostText}.${state}`,
    `${ip}.worker_0.cluster.upstream-cluster.${state}`,
    `${ip}.worker_0.host.${fake.hostText}.${state}`,
  ].map((name) => initiator.stats.value(name) ?? 0);
}

const all = (value: number) => [value, value, value, value];

/** Answers the handshake on `tunnel` with `status` and resolves at the initiator's verdict. */
async function answer(
  started: Started,
  tunnel: FakeTunnel,
  status: number,
  headers: string[] = [],
): Promise<number> {
  await tunnel.readHandshake();
  const verdict = waitForEvent(
    started.initiator,
    status === 200 ? 'handshake_success' : 'handshake_failure',
  );
  if (status === 200) tunnel.accept();
  else tunnel.answer(status, headers);
  await verdict;
  return performance.now();
}

/** Waits for the next dial and returns the time since `since`. */
async function nextDial(
  started: Started,
  since: number,
  timeoutMs: number,
): Promise<{ tunnel: FakeTunnel; gap: number }> {
  const tunnel = await started.fake.accept(timeoutMs);
  return { tunnel, gap: performance.now() - since };
}

describe('tunnel counts', () => {
  it('scenario 19: tunnels_per_host 4 opens exactly 4 tunnels to the host', async () => {
    const started = await dialling({}, 4);
    const tunnels = await Promise.all([1, 2, 3, 4].map(() => started.fake.accept()));
    await assert.rejects(started.fake.accept(200), /no connection/, 'a fifth dial');
    for (const tunnel of tunnels) await answer(started, tunnel, 200);
    assert.deepEqual(stateOf(started, 'connected'), all(4));
    assert.deepEqual(stateOf(started, 'connecting'), all(0));
  });

  it('keeps its own count for each remote cluster: 2 to cluster-a and 3 to cluster-b', async () => {
    const a = await FakeResponder.listen();
    const b = await FakeResponder.listen();
    const initiator = await startInitiator({
      node_id: 'n1',
      cluster_id: 'c1',
      tenant_id: 't1',
      remote_clusters: [
        { name: 'cluster-a', hosts: [a.hostText], tunnels_per_host: 2 },
        { name: 'cluster-b', hosts: [b.hostText], tunnels_per_host: 3 },
      ],
      local_routes: [{ prefix: '/', target: 'http://127.0.0.1:1' }],
    });
    cleanups.push(async () => {
      await initiator.close({ graceMs: 0 });
      await a.close();
      await b.close();
    });
    for (const [fake, count, name] of [
      [a, 2, 'cluster-a'],
      [b, 3, 'cluster-b'],
    ] as const) {
      const tunnels = await Promise.all(Array.from({ length: count }, () => fake.accept()));
      await assert.rejects(fake.accept(200), /no connection/, `one dial too many to ${name}`);
      for (const tunnel of tunnels) {
        const seen = await tunnel.readHandshake();
        assert.equal(seen.get('x-envoy-reverse-tunnel-upstream-cluster-name'), name);
        const connected = waitForEvent(initiator, 'handshake_success');
        tunnel.accept();
        await connected;
      }
      assert.equal(initiator.stats.value(`${ip}.cluster.${name}.connected`), count);
      assert.equal(initiator.stats.value(`${ip}.host.${fake.hostText}.connected`), count);
    }
  });
});

describe('state gauges and handshake counters', () => {
  it('moves connecting → failed + backoff → connecting → connected + recovered, with detailed handshake counters', async () => {
    const started = await dialling({ enable_detailed_stats: true });
    const counter = (suffix: string) =>
      started.initiator.stats.value(
        `${ip}.handshake.worker.worker_0.cluster.upstream-cluster.result.${suffix}`,
      );
    const first = await started.fake.accept();
    await first.readHandshake();
    assert.deepEqual(stateOf(started, 'connecting'), all(1));
    assert.deepEqual(stateOf(started, 'connected'), all(0));
    const failed = waitForEvent(started.initiator, 'handshake_failure');
    first.answer(500);
    assert.equal((await failed)[2], 'http.500');
    assert.deepEqual(stateOf(started, 'connecting'), all(0));
    assert.deepEqual(stateOf(started, 'failed'), all(1));
    assert.deepEqual(stateOf(started, 'backoff'), all(1));
    assert.equal(counter('failed.failure_reason.http.500'), 1);
    const second = await started.fake.accept(3_000);
    assert.deepEqual(stateOf(started, 'connecting'), all(1));
    assert.deepEqual(stateOf(started, 'failed'), all(0));
    assert.deepEqual(stateOf(started, 'backoff'), all(0));
    await answer(started, second, 200);
    assert.deepEqual(stateOf(started, 'connected'), all(1));
    assert.deepEqual(stateOf(started, 'recovered'), all(1));
    assert.deepEqual(stateOf(started, 'connecting'), all(0));
    assert.equal(counter('success'), 1);
    assert.equal(counter('failed.failure_reason.http.500'), 1);
  });

  it('counts no handshake counters without enable_detailed_stats', async () => {
    const started = await dialling();
    await answer(started, await started.fake.accept(), 200);
    const names = started.initiator.stats.snapshot().map((stat) => stat.name);
    assert.deepEqual(
      names.filter((name) => name.includes('.handshake')),
      [],
    );
  });

  it('shows cannot_connect for a host name that does not resolve', async () => {
    const initiator = await startInitiator({
      node_id: 'n1',
      cluster_id: 'c1',
      tenant_id: 't1',
      enable_detailed_stats: true,
      // A name beyond loopback, and no tls: refused as insecure without this.
      allow_insecure: true,
      remote_clusters: [{ name: 'upstream-cluster', hosts: ['nonexistent.invalid:9000'] }],
      local_routes: [{ prefix: '/', target: 'http://127.0.0.1:1' }],
    });
    try {
      const failed = waitForEvent<[string, string, string]>(initiator, 'handshake_failure');
      assert.deepEqual((await failed).slice(1), ['nonexistent.invalid:9000', 'cannot_connect']);
      for (const scope of ['cluster.upstream-cluster', 'host.nonexistent.invalid:9000']) {
        assert.equal(initiator.stats.value(`${ip}.${scope}.cannot_connect`), 1, scope);
        assert.equal(initiator.stats.value(`${ip}.${scope}.connecting`), 0, scope);
        assert.equal(initiator.stats.value(`${ip}.${scope}.backoff`), 1, scope);
      }
      assert.equal(
        initiator.stats.value(
          `${ip}.handshake.worker.worker_0.cluster.upstream-cluster.result.failed.failure_reason.cannot_connect`,
        ),
        1,
      );
    } finally {
      await initiator.close({ graceMs: 0 });
    }
  });
});

describe('Retry-After and backoff', { concurrency: true }, () => {
  it('scenario 25: 429 with Retry-After: 20 waits min(20 s, max_reconnect_backoff 2 s)', async () => {
    const started = await dialling({ max_reconnect_backoff: '2s' });
    const failedAt = await answer(started, await started.fake.accept(), 429, ['Retry-After: 20']);
    const { gap } = await nextDial(started, failedAt, 4_000);
    assert.ok(gap >= 1_995 && gap <= 2_000 + slopMs, `next dial after ${Math.round(gap)} ms`);
  });

  it('scenario 25: Retry-After: 1 after two failures waits 1 s where the backoff would wait 4 s', async () => {
    const started = await dialling();
    let failedAt = await answer(started, await started.fake.accept(), 500);
    let dial = await nextDial(started, failedAt, 3_000);
    assert.ok(dial.gap >= 995, `first retry after ${Math.round(dial.gap)} ms`);
    failedAt = await answer(started, dial.tunnel, 500);
    dial = await nextDial(started, failedAt, 4_000);
    assert.ok(dial.gap >= 1_995, `second retry after ${Math.round(dial.gap)} ms`);
    failedAt = await answer(started, dial.tunnel, 429, ['Retry-After: 1']);
    dial = await nextDial(started, failedAt, 3_000);
    // The computed backoff after three failures is 4–4.6 s; Retry-After replaces it.
    assert.ok(
      dial.gap >= 995 && dial.gap < 1_000 + slopMs * 3,
      `retry after Retry-After: 1 came after ${Math.round(dial.gap)} ms`,
    );
  });

  it('scenario 25: Retry-After 0 and an HTTP-date are ignored: the computed backoff applies', async () => {
    const started = await dialling();
    let failedAt = await answer(started, await started.fake.accept(), 429, ['Retry-After: 0']);
    let dial = await nextDial(started, failedAt, 3_000);
    assert.ok(
      dial.gap >= 995 && dial.gap <= 1_150 + slopMs,
      `Retry-After: 0 gave ${Math.round(dial.gap)} ms`,
    );
    failedAt = await answer(started, dial.tunnel, 429, [
      'Retry-After: Wed, 21 Oct 2015 07:28:00 GMT',
    ]);
    dial = await nextDial(started, failedAt, 4_000);
    assert.ok(
      dial.gap >= 1_995 && dial.gap <= 2_300 + slopMs,
      `an HTTP-date gave ${Math.round(dial.gap)} ms`,
    );
  });

  it('scenario 25: a 429 with Retry-After: 3 from a second slot of a host already in backoff sets the host’s wait to 3 s', async () => {
    const started = await dialling({}, 2);
    const [a, b] = [await started.fake.accept(), await started.fake.accept()];
    await answer(started, a, 500);
    const failedAt = await answer(started, b, 429, ['Retry-After: 3']);
    const { gap } = await nextDial(started, failedAt, 5_000);
    assert.ok(gap >= 2_995, `next dial after ${Math.round(gap)} ms`);
  });

  it('dials a replacement at once when the responder sends GOAWAY on an active tunnel (Envoy #45875)', async () => {
    const started = await dialling();
    const tunnel = await started.fake.accept();
    await answer(started, tunnel, 200);
    const session = tunnel.http2Client();
    await waitForEvent(session, 'remoteSettings');
    session.goaway(0);
    try {
      const replacement = await started.fake.accept(1_500);
      await replacement.readHandshake();
    } finally {
      session.destroy();
    }
  });

  it('scenario 26: always 500: attempts are spaced 1, 2, 4, then the 4 s cap, with ≤ 15 % jitter; backoff and failed are set; the counter rises; a success resets the schedule', async () => {
    const started = await dialling({ max_reconnect_backoff: '4s', enable_detailed_stats: true });
    const failures = () =>
      started.initiator.stats.value(
        `${ip}.handshake.worker.worker_0.cluster.upstream-cluster.result.failed.failure_reason.http.500`,
      );
    let tunnel = await started.fake.accept();
    const gaps: number[] = [];
    for (const [index, delay] of [1_000, 2_000, 4_000, 4_000].entries()) {
      const failedAt = await answer(started, tunnel, 500);
      assert.deepEqual(stateOf(started, 'backoff'), all(1));
      assert.deepEqual(stateOf(started, 'failed'), all(1));
      assert.equal(failures(), index + 1);
      const dial = await nextDial(started, failedAt, delay * 1.15 + 1_000);
      gaps.push(dial.gap);
      assert.ok(
        dial.gap >= delay - 5 && dial.gap <= delay * 1.15 + slopMs,
        `attempt ${index + 2} came ${Math.round(dial.gap)} ms after a failure (backoff ${delay} ms)`,
      );
      tunnel = dial.tunnel;
    }
    await answer(started, tunnel, 200);
    assert.deepEqual(stateOf(started, 'recovered'), all(1));
    assert.deepEqual(stateOf(started, 'backoff'), all(0));
    // The responder drops the new tunnel at once: a failure again, but the first of a new series.
    const failed = waitForEvent(started.initiator, 'handshake_failure');
    tunnel.destroy();
    await failed;
    const droppedAt = performance.now();
    const dial = await nextDial(started, droppedAt, 3_000);
    assert.ok(
      dial.gap >= 995 && dial.gap <= 1_150 + slopMs,
      `after a success the next backoff is 1 s, not ${Math.round(dial.gap)} ms`,
    );
  });
});

describe('scenario 28: drain', () => {
  it('scenario 28: close() sends GOAWAY on each active tunnel, lets an in-flight stream finish, and closes idle ones without a byte', async () => {
    let arrived: (response: ServerResponse) => void = () => {};
    const inFlight = new Promise<ServerResponse>((resolve) => (arrived = resolve));
    const service = await startService((_req, res) => arrived(res));
    const fake = await FakeResponder.listen();
    const initiator = await startInitiator({
      node_id: 'n1',
      cluster_id: 'c1',
      tenant_id: 't1',
      remote_clusters: [{ name: 'upstream-cluster', hosts: [fake.hostText], tunnels_per_host: 3 }],
      local_routes: [{ prefix: '/', target: service.target }],
    });
    cleanups.push(async () => {
      await initiator.close({ graceMs: 0 });
      await fake.close();
      await service.close();
    });
    const started = { fake, initiator };
    const tunnels = await Promise.all([1, 2, 3].map(() => fake.accept()));
    for (const tunnel of tunnels) await answer(started, tunnel, 200);
    // Two tunnels are checked out: the fake is their HTTP/2 client.
    const sessions = tunnels.slice(0, 2).map((tunnel) => tunnel.http2Client());
    await Promise.all(sessions.map((session) => waitForEvent(session, 'remoteSettings')));
    const stream = sessions[0]!.request({ ':path': '/slow' });
    stream.on('error', () => {});
    const held = await inFlight;
    const goaways = sessions.map((session) =>
      waitForEvent<[number, number, Buffer]>(session, 'goaway'),
    );
    const closing = initiator.close({ graceMs: 5_000 });
    const [first, second] = await Promise.all(goaways);
    assert.deepEqual([first![0], first![1]], [0, 1], 'NO_ERROR, last stream 1 on the busy tunnel');
    assert.deepEqual([second![0], second![1]], [0, 0], 'NO_ERROR, no stream on the other');
    const idle = tunnels[2]!;
    await idle.peer.whenClosed();
    assert.equal(idle.peer.pending.length, 0, 'an idle tunnel closes without a byte');
    // The stream that was in flight still completes.
    const response = waitForEvent<[http2.IncomingHttpHeaders]>(stream, 'response');
    held.end('finished after GOAWAY');
    assert.equal((await response)[0][':status'], 200);
    let body = '';
    stream.setEncoding('utf8');
    for await (const chunk of stream) body += chunk as string;
    assert.equal(body, 'finished after GOAWAY');
    await closing;
  });
});
