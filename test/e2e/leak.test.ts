/**
 * Leak check (issue 5, item 8): thousands of tunnels opened and closed against one responder must
 * leave nothing behind. 2,000 raw connections that send Envoy's handshake and are accepted, then
 * closed by the initiator side (FIN, or RST), or are rejected (404, 400, a timed-out head), and a
 * couple of hundred real initiators that connect, carry one request through the egress listener and
 * close. Afterwards heapUsed after GC is within a few MiB of the baseline taken after a warm-up of
 * the same cycles, the process's open fds are back to the baseline, and the responder holds no
 * tunnels.
 *
 * Node ids come from a fixed set that the warm-up already uses: the stats registry keeps one gauge
 * per node id ever seen (as Envoy's does), which is growth per id, not per connection.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { startInitiator } from '../../src/initiator/initiator.ts';
import { startResponder, type Responder } from '../../src/responder/responder.ts';
import type { HostPort } from '../../src/shared/address.ts';
import { envoyHandshakeRequest, FakeInitiator } from '../helpers/fake-initiator.ts';
import { request } from '../helpers/http.ts';
import {
  CrashWatch,
  describeGrowth,
  memorySettledTo,
  mib,
  settledMemory,
} from '../security/memory.ts';

const rawCycles = 2_000;
const initiatorCycles = 200;
/** Cycles of each kind before the baseline: JIT, pools and lazily created buffers exist by then. */
const warmUpCycles = 200;
/** Connections in flight at once (the listener's per-source cap is raised above it). */
const parallel = 50;
const initiatorParallel = 10;
/** Distinct node ids: every one is used in the warm-up, so its stat gauges exist at the baseline. */
const nodeIds = 100;
const handshakeTimeoutMs = 300;
/** heapUsed after GC may end this much above the baseline (V8's own caches and code settle too). */
const heapSlack = 3 * 1024 * 1024;
/**
 * Open fds may end this many above the baseline: none should stay, but a socket the responder has
 * just closed is released by libuv on a later turn of the loop, and the readdir itself holds one.
 * The count is waited for (up to fdWaitMs) before it is compared.
 */
const fdSlack = 2;
const fdWaitMs = 5_000;
/** Deadline for one cycle's events (a tunnel's close reaching the registry, an initiator's setup). */
const cycleTimeoutMs = 10_000;

const openFds = () => readdirSync('/proc/self/fd').length;

/** Runs `task(0…count-1)` with at most `limit` in flight; rejects with the first failure. */
async function runBounded(
  count: number,
  limit: number,
  task: (index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < count) {
      const index = next;
      next += 1;
      await task(index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, count) }, lane));
}

/**
 * Waits for the responder to report a tunnel of a node closed. Registered before the close is
 * caused, so the event cannot be missed; each wait has its own deadline.
 */
class TunnelCloses {
  readonly #waiters = new Map<string, Array<() => void>>();
  #closed = 0;

  constructor(responder: Responder) {
    responder.on('tunnel_closed', (identity) => {
      this.#closed += 1;
      this.#waiters.get(identity.nodeId)?.shift()?.();
    });
  }

  get count(): number {
    return this.#closed;
  }

  /** Resolves at the next close of a tunnel of `nodeId`; call before causing it. */
  next(nodeId: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const list = this.#waiters.get(nodeId) ?? [];
        list.splice(list.indexOf(done), 1);
        reject(new Error(`no tunnel_closed for node ${nodeId} within ${cycleTimeoutMs} ms`));
      }, cycleTimeoutMs);
      const done = () => {
        clearTimeout(timer);
        if (this.#waiters.get(nodeId)?.length === 0) this.#waiters.delete(nodeId);
        resolve();
      };
      const list = this.#waiters.get(nodeId) ?? [];
      list.push(done);
      this.#waiters.set(nodeId, list);
    });
  }
}

/** The rejected kinds: each must be answered (or timed out) and closed by the responder. */
const rejectedRequests: ReadonlyArray<readonly [kind: string, bytes: string | undefined]> = [
  ['wrong path (404)', envoyHandshakeRequest(undefined, { path: '/not_reverse' })],
  ['no node id (400)', envoyHandshakeRequest({ cluster: 'leak-c0', tenant: 't1' })],
  ['bad content-length (400)', envoyHandshakeRequest(undefined, { contentLength: 'x' })],
  // Half a head: closed by handshake_timeout, with no answer.
  ['head never completed (timeout)', 'GET /reverse_connections/request HTTP/1.1\r\nhost: a\r\n'],
];

describe('connect, handshake and close cycles leave nothing behind', () => {
  let responder: Responder;
  let service: http.Server;
  let target: string;
  let closes: TunnelCloses;
  const crashes = new CrashWatch();

  before(async () => {
    service = http.createServer((incoming, outgoing) => {
      incoming.resume();
      incoming.on('end', () => outgoing.end('served'));
    });
    await new Promise<void>((resolve) => service.listen(0, '127.0.0.1', resolve));
    target = `http://127.0.0.1:${(service.address() as AddressInfo).port}`;
    responder = await startResponder({
      stat_prefix: 'reverse_connections',
      tunnel_listener: {
        address: '127.0.0.1:0',
        handshake_timeout: `${handshakeTimeoutMs}ms`,
        max_pending_handshakes_per_source: parallel * 2,
        // No RPING during the test: an idle tunnel lives only as long as its cycle.
        ping_interval: '300s',
      },
      egress_listeners: [{ address: '127.0.0.1:0' }],
    });
    closes = new TunnelCloses(responder);
  });

  after(async () => {
    crashes.stop();
    await responder?.close({ graceMs: 0 });
    await new Promise<void>((resolve) => {
      service?.close(() => resolve());
      service?.closeAllConnections();
    });
  });

  /** Raw cycle `index`: four in five accepted and closed (FIN or RST), one in five rejected. */
  async function rawCycle(index: number): Promise<void> {
    const address = responder.addresses.tunnel;
    if (index % 5 === 4) {
      const [kind, bytes] = rejectedRequests[
        Math.floor(index / 5) % rejectedRequests.length
      ] as readonly [string, string];
      const peer = await FakeInitiator.connect(address, bytes);
      if (kind.endsWith('(timeout)')) await peer.peer.whenClosed(handshakeTimeoutMs + 5_000);
      else {
        const rejection = await peer.expectRejection();
        assert.ok(rejection.status >= 400 && rejection.status < 500, `${kind}: ${rejection.head}`);
      }
      peer.destroy();
      return;
    }
    const nodeId = `leak-n${index % nodeIds}`;
    const peer = await FakeInitiator.connect(
      address,
      envoyHandshakeRequest(
        { node: nodeId, cluster: `leak-c${index % 10}`, tenant: 't1' },
        { connectionId: index },
      ),
    );
    await peer.expectAccepted();
    const closed = closes.next(nodeId);
    if (index % 2 === 0) peer.peer.socket.end();
    else peer.peer.socket.resetAndDestroy();
    await closed;
    peer.destroy();
  }

  /** Initiator cycle `index`: a real initiator connects, carries one request, and closes. */
  async function initiatorCycle(index: number): Promise<void> {
    const nodeId = `leak-i${index % nodeIds}`;
    const tunnel: HostPort = responder.addresses.tunnel;
    const setup = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no tunnel_setup for ${nodeId} in ${cycleTimeoutMs} ms`)),
        cycleTimeoutMs,
      );
      const onSetup = (identity: { nodeId: string }) => {
        if (identity.nodeId !== nodeId) return;
        clearTimeout(timer);
        responder.removeListener('tunnel_setup', onSetup);
        resolve();
      };
      responder.on('tunnel_setup', onSetup);
    });
    const initiator = await startInitiator({
      node_id: nodeId,
      cluster_id: 'leak-ic',
      tenant_id: 't1',
      remote_clusters: [{ name: 'upstream', hosts: [`${tunnel.host}:${tunnel.port}`] }],
      local_routes: [{ prefix: '/', target }],
    });
    try {
      await setup;
      const reply = await request(responder.addresses.egress[0] as HostPort, '/leak', {
        headers: { 'x-node-id': nodeId },
        timeoutMs: cycleTimeoutMs,
      });
      assert.equal(reply.status, 200, reply.text);
      assert.equal(reply.text, 'served');
    } finally {
      const closed = closes.next(nodeId);
      await initiator.close({ graceMs: 1_000 });
      await closed;
    }
  }

  const heldTunnels = () =>
    responder.tunnels().reduce((sum, node) => sum + node.idle + node.sessions, 0);

  /** Waits until at most `atMost` fds are open, or `withinMs` passed; returns the count. */
  async function fdsSettledTo(atMost: number, withinMs: number): Promise<number> {
    const started = Date.now();
    for (;;) {
      const fds = openFds();
      if (fds <= atMost || Date.now() - started >= withinMs) return fds;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  it('returns heap after GC and the fd count to the baseline, and holds no tunnels', async (t) => {
    await runBounded(warmUpCycles, parallel, rawCycle);
    await runBounded(nodeIds, initiatorParallel, initiatorCycle);
    const baseline = await settledMemory();
    const baselineFds = openFds();
    const closesBefore = closes.count;
    const statsBefore = responder.stats.snapshot().length;

    const started = Date.now();
    await runBounded(rawCycles, parallel, rawCycle);
    const rawMs = Date.now() - started;
    await runBounded(initiatorCycles, initiatorParallel, initiatorCycle);
    const elapsedMs = Date.now() - started;

    const fds = await fdsSettledTo(baselineFds + fdSlack, fdWaitMs);
    const { figures, afterMs } = await memorySettledTo(baseline.heapUsed + heapSlack, 5_000);
    const accepted = rawCycles - rawCycles / 5;
    t.diagnostic(
      `${rawCycles} raw cycles (${accepted} accepted and closed, ${rawCycles / 5} rejected) in ` +
        `${rawMs} ms, ${initiatorCycles} initiator cycles in ${elapsedMs - rawMs} ms, ` +
        `${parallel} / ${initiatorParallel} in flight`,
    );
    t.diagnostic(`after GC: ${describeGrowth(baseline, figures)} (settled after ${afterMs} ms)`);
    t.diagnostic(
      `open fds: ${baselineFds} at the baseline, ${fds} after (slack ${fdSlack}); ` +
        `tunnels held: ${heldTunnels()}; tunnel_closed events: ${closes.count - closesBefore}; ` +
        `stat entries: ${statsBefore} at the baseline, ${responder.stats.snapshot().length} after`,
    );

    assert.equal(crashes.errors.length, 0, `uncaught: ${crashes.errors.map(String).join('; ')}`);
    assert.equal(heldTunnels(), 0, 'the responder still holds tunnels');
    assert.equal(
      closes.count - closesBefore,
      accepted + initiatorCycles,
      'every accepted tunnel is reported closed once',
    );
    assert.equal(
      responder.stats.snapshot().length,
      statsBefore,
      'no stat is created per connection (the node ids are those of the warm-up)',
    );
    assert.ok(
      figures.heapUsed <= baseline.heapUsed + heapSlack,
      `heapUsed after GC ${mib(figures.heapUsed)}, more than ${mib(heapSlack)} above the baseline ${mib(baseline.heapUsed)}`,
    );
    assert.ok(
      fds <= baselineFds + fdSlack,
      `${fds} fds open, more than ${fdSlack} above the baseline ${baselineFds}`,
    );
  });
});
