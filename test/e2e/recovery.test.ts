/**
 * Recovery and drain (issue 5, "Done when"): a responder in its own process is SIGKILLed and
 * restarted on the same tunnel port while 200 initiators hold tunnels to it, and the time until
 * every initiator has a tunnel again is measured; a responder under load gets SIGTERM and must
 * finish every request in flight, answer new ones cleanly and exit 0 within its grace time; an
 * initiator closed under load must finish its requests too.
 *
 * Every child process is stopped by its PID in a `finally`, every wait has a deadline.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ResponderConfigInput } from '../../src/config/schema.ts';
import { startInitiator, type Initiator } from '../../src/initiator/initiator.ts';
import { request, startService, type Reply, type TestService } from '../helpers/http.ts';
import { freePort } from '../helpers/ports.ts';
import { pollUntil, revtun, stopDeadlineMs, TestProcess } from '../helpers/process.ts';
import { responderOnFreePorts, tunnelsRegistered } from '../helpers/tunnels.ts';

interface ResponderPorts {
  readonly tunnel: number;
  readonly egress: number;
  readonly admin: number;
}

/** `revtun responder --config FILE` in a child process; resolves once it printed its ports. */
async function responderProcess(
  configFile: string,
): Promise<{ child: TestProcess; ports: ResponderPorts; listeningAt: number }> {
  const child = new TestProcess(revtun('responder', '--config', configFile, '--log-level', 'warn'));
  try {
    // `admin` is the last line the CLI prints, after the listeners are bound.
    const tunnel = await child.waitForStdout(/tunnel listener 127\.0\.0\.1:(\d+)/);
    const listeningAt = Date.now();
    const egress = await child.waitForStdout(/egress listener http:\/\/127\.0\.0\.1:(\d+)/);
    const admin = await child.waitForStdout(/admin http:\/\/127\.0\.0\.1:(\d+)\/stats/);
    return {
      child,
      listeningAt,
      ports: { tunnel: Number(tunnel[1]), egress: Number(egress[1]), admin: Number(admin[1]) },
    };
  } catch (error) {
    await child.stop();
    throw error;
  }
}

/** Nodes whose `<prefix>.nodes.<id>` gauge is at least 1 on the responder's admin /stats. */
async function connectedNodes(adminPort: number, node = 'n\\d+'): Promise<number> {
  const reply = await request({ host: '127.0.0.1', port: adminPort }, '/stats', {
    timeoutMs: 5_000,
  });
  assert.equal(reply.status, 200, reply.text);
  return reply.text
    .split('\n')
    .filter((line) => new RegExp(`^reverse_connections\\.nodes\\.${node}: [1-9]\\d*$`).test(line))
    .length;
}

/** Resolves once `done()` holds, re-checked on every event `subscribe` reports; rejects late. */
function waitFor(
  what: string,
  done: () => boolean,
  subscribe: (check: () => void) => () => void,
  timeoutMs: number,
): Promise<void> {
  return new Promise((resolve, reject) => {
    let unsubscribe = () => {};
    const timer = setTimeout(() => {
      unsubscribe();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
    }, timeoutMs);
    const check = () => {
      if (!done()) return;
      clearTimeout(timer);
      unsubscribe();
      resolve();
    };
    unsubscribe = subscribe(check);
    check();
  });
}

/** The outcome of a request, as a word for reports: its status, or the error code. */
async function outcome(promise: Promise<Reply>): Promise<string> {
  try {
    const reply = await promise;
    return reply.status === 200 ? '200' : `${reply.status} ${reply.text.trim().slice(0, 160)}`;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code ?? (error as Error).message;
  }
}

let tmp: string;
before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'revtun-recovery-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** Writes a responder config (JSON is YAML) and returns its path. */
async function responderConfig(name: string, config: ResponderConfigInput): Promise<string> {
  const file = path.join(tmp, `${name}.yaml`);
  await writeFile(file, JSON.stringify(config, null, 2));
  return file;
}

describe('responder SIGKILL and restart on the same port with 200 initiators', () => {
  const count = 200;
  /** The issue's target, from the restarted responder's "listening" to all 200 back. */
  const targetMs = 3_000;

  it('every initiator has a tunnel again after the restart; the time is measured', async (t) => {
    const tunnelPort = await freePort();
    const file = await responderConfig('kill', {
      stat_prefix: 'reverse_connections',
      admin: { address: '127.0.0.1:0' },
      // Defaults throughout, max_pending_handshakes_per_source (64) included, although all 200
      // initiators share one source address here.
      tunnel_listener: { address: `127.0.0.1:${tunnelPort}` },
      egress_listeners: [{ address: '127.0.0.1:0' }],
    });
    const processes: TestProcess[] = [];
    const initiators: Initiator[] = [];
    try {
      const first = await responderProcess(file);
      processes.push(first.child);
      assert.equal(first.ports.tunnel, tunnelPort);

      /** Per initiator: when it last had a handshake_success, its closes and failures. */
      const lastSuccess = new Array<number>(count).fill(0);
      const closedAt = new Array<number>(count).fill(0);
      const failures: number[][] = Array.from({ length: count }, () => []);
      const listeners = new Set<() => void>();
      const notify = () => {
        for (const listener of listeners) listener();
      };
      const onEvents = (check: () => void) => {
        listeners.add(check);
        return () => listeners.delete(check);
      };
      for (let i = 0; i < count; i += 1) {
        const initiator = await startInitiator({
          node_id: `n${i}`,
          cluster_id: 'c1',
          tenant_id: 't1',
          remote_clusters: [{ name: 'upstream', hosts: [`127.0.0.1:${tunnelPort}`] }],
          local_routes: [{ prefix: '/', target: 'http://127.0.0.1:9' }],
        });
        initiators.push(initiator);
        initiator.on('handshake_success', () => {
          lastSuccess[i] = Date.now();
          notify();
        });
        initiator.on('connection_closed', () => {
          closedAt[i] = Date.now();
          notify();
        });
        initiator.on('handshake_failure', () => {
          failures[i]?.push(Date.now());
          notify();
        });
      }
      await waitFor(
        'all 200 initiators to handshake',
        () => lastSuccess.every((at) => at > 0),
        onEvents,
        15_000,
      );
      await pollUntil(
        'the responder to show 200 nodes',
        async () => (await connectedNodes(first.ports.admin)) === count,
        { timeoutMs: 10_000, intervalMs: 100 },
      );

      const killedAt = Date.now();
      process.kill(first.child.pid, 'SIGKILL');
      assert.deepEqual(await first.child.waitForExit(stopDeadlineMs), {
        code: null,
        signal: 'SIGKILL',
      });
      await waitFor(
        'all 200 tunnels to be seen closed',
        () => closedAt.every((at) => at >= killedAt),
        onEvents,
        10_000,
      );
      const allClosedAt = Date.now();

      const second = await responderProcess(file);
      processes.push(second.child);
      assert.equal(second.ports.tunnel, tunnelPort, 'the tunnel listener is back on its port');
      const { listeningAt } = second;
      const backWithin = 20_000;
      await waitFor(
        'all 200 initiators to handshake with the restarted responder',
        () => lastSuccess.every((at) => at > killedAt),
        onEvents,
        backWithin,
      );
      const recoveryMs = Math.max(...lastSuccess) - listeningAt;
      const sorted = lastSuccess.map((at) => at - listeningAt).sort((a, b) => a - b);
      const percentile = (p: number) => sorted[Math.min(count - 1, Math.floor((count * p) / 100))];
      // The failures each initiator met while the responder was down: its backoff step when the
      // responder came back is the number of them (1 s, 2 s, 4 s … after the 1st, 2nd, 3rd).
      const failuresBeforeListening = failures.map(
        (list) => list.filter((at) => at > killedAt && at <= listeningAt).length,
      );
      const failedAfterListening = failures.reduce(
        (sum, list) => sum + list.filter((at) => at > listeningAt).length,
        0,
      );
      const histogram = new Map<number, number>();
      for (const n of failuresBeforeListening) histogram.set(n, (histogram.get(n) ?? 0) + 1);
      t.diagnostic(
        `killed → all closes seen ${allClosedAt - killedAt} ms; killed → restarted responder ` +
          `listening ${listeningAt - killedAt} ms`,
      );
      t.diagnostic(
        `restart listening → all ${count} back: ${recoveryMs} ms (target ${targetMs} ms); ` +
          `p50 ${percentile(50)} ms, p90 ${percentile(90)} ms, first ${sorted[0]} ms`,
      );
      t.diagnostic(
        `failed dials per initiator while the responder was down (count: initiators): ${[
          ...histogram.entries(),
        ]
          .sort(([a], [b]) => a - b)
          .map(([n, k]) => `${n}: ${k}`)
          .join(', ')}; failed dials after the restart: ${failedAfterListening}`,
      );
      await pollUntil(
        'the restarted responder to show 200 nodes',
        async () => (await connectedNodes(second.ports.admin)) === count,
        { timeoutMs: 10_000, intervalMs: 100 },
      );
      // The bound that holds today. A tunnel that was up and closes is re-dialled at once; that
      // dial is refused and is failure 1 (next try in 1 s + up to 15 %), failure k waits
      // 2^(k-1) s + 15 %. An initiator with k failures when the responder came back is back by its
      // pending retry, at most 2^(k-1) × 1.15 s later (plus the handshake). The issue's 3 s target
      // holds only while the restart takes less than failure 2 (≈ 1–1.15 s after the kill) + 2 s,
      // i.e. while nobody reached step 3; see the report of issue 5.
      const deepest = Math.max(...failuresBeforeListening);
      const boundMs = Math.max(targetMs, 2 ** Math.max(0, deepest - 1) * 1_150 + 500);
      t.diagnostic(`deepest backoff step at restart: ${deepest}; bound asserted ${boundMs} ms`);
      assert.ok(recoveryMs <= boundMs, `all back ${recoveryMs} ms after listening`);
    } finally {
      await Promise.all(initiators.map((initiator) => initiator.close({ graceMs: 0 })));
      for (const child of processes) await child.stop();
    }
  });
});

/** A local service that holds every request until `release()`, then answers 200 after ~200 ms. */
class HeldService {
  service!: TestService;
  readonly #held: ServerResponse[] = [];
  #released = false;
  #onArrival: () => void = () => {};

  async start(): Promise<this> {
    this.service = await startService((req: IncomingMessage, res: ServerResponse) => {
      req.resume();
      if (this.#released) setTimeout(() => res.end(`done ${req.url ?? ''}`), 200);
      else this.#held.push(res);
      this.#onArrival();
    });
    return this;
  }

  /** Resolves once `n` requests are held; rejects after `timeoutMs`. */
  whenHolding(n: number, timeoutMs = 10_000): Promise<void> {
    return waitFor(
      `${n} requests at the local service`,
      () => this.#held.length >= n,
      (check) => {
        this.#onArrival = check;
        return () => (this.#onArrival = () => {});
      },
      timeoutMs,
    );
  }

  /** Answers every held request 200 ms from now, and later ones 200 ms after they arrive. */
  release(): void {
    this.#released = true;
    for (const res of this.#held) setTimeout(() => res.end('done'), 200);
  }
}

describe('SIGTERM drain of a responder under load', () => {
  const inFlight = 50;
  let held: HeldService;

  before(async () => {
    held = await new HeldService().start();
  });
  after(async () => {
    await held.service.close();
  });

  it('finishes every request in flight with 200, refuses new ones, exits 0', async (t) => {
    const file = await responderConfig('drain', {
      stat_prefix: 'reverse_connections',
      admin: { address: '127.0.0.1:0' },
      tunnel_listener: { address: '127.0.0.1:0' },
      egress_listeners: [{ address: '127.0.0.1:0' }],
    });
    let responder: TestProcess | undefined;
    let initiator: Initiator | undefined;
    try {
      const started = await responderProcess(file);
      responder = started.child;
      const { ports } = started;
      const tunnels = 2;
      let successes = 0;
      initiator = await startInitiator({
        node_id: 'drain-node',
        cluster_id: 'c1',
        tenant_id: 't1',
        remote_clusters: [
          { name: 'upstream', hosts: [`127.0.0.1:${ports.tunnel}`], tunnels_per_host: tunnels },
        ],
        local_routes: [{ prefix: '/', target: held.service.target }],
      });
      // Dialling begins on a later turn than startInitiator resolves, so no success is missed.
      const up = initiator;
      await waitFor(
        'both tunnels to be up',
        () => successes >= tunnels,
        (check) => {
          const onSuccess = () => {
            successes += 1;
            check();
          };
          up.on('handshake_success', onSuccess);
          return () => up.removeListener('handshake_success', onSuccess);
        },
        10_000,
      );
      await pollUntil(
        'the responder to show the node',
        async () => (await connectedNodes(ports.admin, 'drain-node')) === 1,
        { timeoutMs: 10_000, intervalMs: 50 },
      );

      const egress = { host: '127.0.0.1', port: ports.egress };
      const send = (i: number) =>
        request(egress, `/r${i}`, { headers: { 'x-node-id': 'drain-node' }, timeoutMs: 10_000 });
      const requests = Array.from({ length: inFlight }, (_, i) => outcome(send(i)));
      await held.whenHolding(inFlight);

      const termAt = Date.now();
      responder.signal('SIGTERM');
      await waitFor(
        'the responder to say it is stopping',
        () => responder?.stderr.includes('SIGTERM, stopping') === true,
        (check) => {
          const timer = setInterval(check, 10);
          return () => clearInterval(timer);
        },
        stopDeadlineMs,
      );
      // A new request while the held ones are still in flight: the listener is closed.
      const during = await outcome(send(1000));
      held.release();
      const results = await Promise.all(requests);
      const exit = await responder.waitForExit(stopDeadlineMs);
      const exitMs = Date.now() - termAt;
      const statuses = new Map<string, number>();
      for (const result of results) statuses.set(result, (statuses.get(result) ?? 0) + 1);
      t.diagnostic(
        `in flight at SIGTERM: ${inFlight}; results ${JSON.stringify(Object.fromEntries(statuses))}; ` +
          `new request during the drain: ${during}; exit ${JSON.stringify(exit)} ${exitMs} ms after SIGTERM`,
      );
      assert.deepEqual(results, new Array<string>(inFlight).fill('200'));
      assert.match(during, /^(503 .*|ECONNREFUSED)$/, 'a new request during the drain');
      assert.deepEqual(exit, { code: 0, signal: null }, responder.describe());
      assert.ok(exitMs < stopDeadlineMs, `exited ${exitMs} ms after SIGTERM`);
    } finally {
      await initiator?.close({ graceMs: 0 });
      await responder?.stop();
    }
  });
});

describe('initiator close under load', () => {
  const inFlight = 50;

  it('finishes every request in flight with 200 before it is gone', async (t) => {
    const held = await new HeldService().start();
    const responder = await responderOnFreePorts();
    let initiator: Initiator | undefined;
    try {
      const registered = tunnelsRegistered(responder, 'closing-node', 2);
      initiator = await startInitiator({
        node_id: 'closing-node',
        cluster_id: 'c1',
        tenant_id: 't1',
        remote_clusters: [
          {
            name: 'upstream',
            hosts: [`127.0.0.1:${responder.addresses.tunnel.port}`],
            tunnels_per_host: 2,
          },
        ],
        local_routes: [{ prefix: '/', target: held.service.target }],
      });
      await registered;
      const egress = responder.addresses.egress[0];
      assert.ok(egress !== undefined);
      const send = (i: number) =>
        request(egress, `/r${i}`, { headers: { 'x-node-id': 'closing-node' }, timeoutMs: 10_000 });
      const requests = Array.from({ length: inFlight }, (_, i) => outcome(send(i)));
      await held.whenHolding(inFlight);

      const graceMs = 3_000;
      const closeAt = Date.now();
      let closedAt = 0;
      const closing = initiator.close({ graceMs }).then(() => (closedAt = Date.now()));
      // GOAWAY goes out on both tunnels as close() begins. A new request meanwhile: it is answered
      // at once, or it waits in the responder's queue for the node (the pending_requests gauge).
      let duringMs = 0;
      let duringSettled = false;
      const duringAt = Date.now();
      const duringOutcome = outcome(send(1000)).then((result) => {
        duringMs = Date.now() - duringAt;
        duringSettled = true;
        return result;
      });
      await pollUntil(
        'the new request to be answered or queued at the responder',
        () =>
          Promise.resolve(
            duringSettled ||
              (responder.stats.value('reverse_connections.pending_requests') ?? 0) > 0,
          ),
        { timeoutMs: 5_000, intervalMs: 5 },
      );
      const queued = !duringSettled;
      held.release();
      const results = await Promise.all(requests);
      await closing;
      const during = await duringOutcome;
      const statuses = new Map<string, number>();
      for (const result of results) statuses.set(result, (statuses.get(result) ?? 0) + 1);
      t.diagnostic(
        `in flight at close(): ${inFlight}; results ${JSON.stringify(Object.fromEntries(statuses))}; ` +
          `new request during the close: ${during} after ${duringMs} ms (queued: ${queued}); ` +
          `close() resolved ${closedAt - closeAt} ms after it began`,
      );
      assert.deepEqual(results, new Array<string>(inFlight).fill('200'));
      assert.ok(closedAt - closeAt < graceMs, 'close() resolved once the streams finished');
      assert.match(during, /^503 /, 'a new request during the close gets a clean 503');
      // Draining sessions are not busy ones, and the node's last tunnel wakes whatever waits on
      // it: the answer comes by the time the node has no tunnel left, not at the queue timeout.
      assert.ok(
        duringMs <= closedAt - duringAt + 500,
        `answered after ${duringMs} ms, the initiator was gone after ${closedAt - duringAt} ms: ${during}`,
      );
    } finally {
      await initiator?.close({ graceMs: 0 });
      await responder.close({ graceMs: 0 });
      await held.service.close();
    }
  });
});
