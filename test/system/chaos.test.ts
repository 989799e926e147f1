/**
 * Chaos on the link between two hosts (issue 5 item 7): the responder host (10.214.0.1) and the
 * initiator host (10.214.0.2) in two network namespaces joined by a veth pair, both roles started
 * with the CLI and a config file that sets a short HTTP/2 PING keepalive (1 s / 1 s), a local
 * service on the initiator's loopback, and checksummed load from the responder host
 * (test/helpers/chaos-load.ts). Faults are made with iptables and `ss -K` in the initiator's
 * namespace, on its veth only (its loopback, towards the local service, is left alone):
 *
 * 1. a black hole under an in-flight request: 502 within ping_interval + ping_timeout + slack, the
 *    node gone from the responder, and back once the hole is closed;
 * 2. `ss -K` kills the tunnel sockets under load: every request answered or failed, none hanging,
 *    no 200 with a wrong body, and the tunnel back;
 * 3. SIGKILL of the initiator and a restart under load;
 * 4. 5 % random packet loss under load (no request lost without an error, no wrong body), then 1 %
 *    (and no tunnel closed: the keepalive does not kill a lossy but live link).
 *
 * Each prints its figures with t.diagnostic. Needs root, iproute2 (`ip`, `ss`), iptables and curl.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, it, type TestContext } from 'node:test';
import type { LoadResult } from '../helpers/chaos-load.ts';
import {
  Namespaces,
  commandDeadlineMs,
  inNamespace,
  joinWithVeth,
  requireRootAndTools,
  shellIn,
} from '../helpers/netns.ts';
import { pollUntil, revtun, runToEnd, stopDeadlineMs, TestProcess } from '../helpers/process.ts';

const responderIp = '10.214.0.1';
const initiatorIp = '10.214.0.2';
const initiatorDevice = 'veth-ci';
/** The keepalive both roles run in this test (README: `http2.ping_interval`, `http2.ping_timeout`). */
const pingIntervalMs = 1_000;
/**
 * Short, so that a black hole is found fast, but not shorter than TCP needs to get a PING through a
 * few retransmissions (RTO from 200 ms, doubling): at 1 s, 1 % loss once closed a healthy tunnel.
 */
const pingTimeoutMs = 2_000;
/** The keepalive's jitter is up to 15 % of the interval; the rest is scheduling and the poll. */
const keepaliveBoundMs = pingIntervalMs * 1.15 + pingTimeoutMs + 1_000;
/** A load request not answered (status or connection error) within this counts as lost. */
const loadDeadlineMs = 10_000;
const loadConcurrency = 4;

const percentile = (sorted: readonly number[], p: number) =>
  sorted.length === 0
    ? NaN
    : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;

/** Counts by kind (and status or error text), success rate and latencies of a load run. */
function summarize(results: readonly LoadResult[]) {
  const byKind: Record<string, number> = {};
  const failures: Record<string, number> = {};
  for (const result of results) {
    byKind[result.kind] = (byKind[result.kind] ?? 0) + 1;
    if (result.kind !== 'ok') {
      const key = `${result.kind}${result.status === undefined ? '' : ` ${result.status}`}: ${(result.error ?? '').slice(0, 60)}`;
      failures[key] = (failures[key] ?? 0) + 1;
    }
  }
  const okLatencies = results
    .filter((result) => result.kind === 'ok')
    .map((result) => result.end - result.start)
    .sort((a, b) => a - b);
  return {
    total: results.length,
    byKind,
    failures,
    successRate: results.length === 0 ? 0 : (byKind.ok ?? 0) / results.length,
    p50: percentile(okLatencies, 50),
    p99: percentile(okLatencies, 99),
    max: okLatencies.at(-1) ?? NaN,
  };
}

/**
 * After a fault at `at`: the first failure, the last failure, and the first success after the last
 * failure (ms since `at`), i.e. how long the disruption lasted as the callers saw it.
 */
function recovery(results: readonly LoadResult[], at: number) {
  const later = results.filter((result) => result.end >= at);
  const failed = later.filter((result) => result.kind !== 'ok');
  const lastFailure = Math.max(at, ...failed.map((result) => result.end));
  const firstOk = later
    .filter((result) => result.kind === 'ok' && result.start >= lastFailure)
    .reduce((min, result) => Math.min(min, result.end), Infinity);
  return {
    failedAfterFault: failed.length,
    firstFailureMs: failed.length === 0 ? null : Math.min(...failed.map((r) => r.end)) - at,
    lastFailureMs: failed.length === 0 ? null : lastFailure - at,
    firstOkAfterLastFailureMs: firstOk === Infinity ? null : firstOk - at,
  };
}

describe('chaos on the tunnel link between two hosts (network namespaces, iptables, ss -K)', () => {
  const namespaces = new Namespaces();
  let responderNs: string;
  let initiatorNs: string;
  let dir: string;
  const started: TestProcess[] = [];
  let service: TestProcess;
  let initiator: TestProcess | undefined;

  const start = (namespace: string, argv: string[]) => {
    const proc = new TestProcess(inNamespace(namespace, argv));
    started.push(proc);
    return proc;
  };
  const startInitiator = async () => {
    initiator = start(initiatorNs, revtun('initiator', '--config', join(dir, 'initiator.yaml')));
    await initiator.waitForStdout('  local route / → http://127.0.0.1:18080\n');
  };
  /** `iptables ARGS` in the initiator's namespace, which must succeed. */
  const iptables = async (...args: string[]) => {
    const result = await runToEnd(
      inNamespace(initiatorNs, ['iptables', ...args]),
      commandDeadlineMs,
    );
    assert.equal(result.code, 0, `iptables ${args.join(' ')}: ${result.stderr}`);
  };
  const dropOnVeth = async (probability?: number) => {
    const match =
      probability === undefined
        ? []
        : ['-m', 'statistic', '--mode', 'random', '--probability', String(probability)];
    await iptables('-A', 'INPUT', '-i', initiatorDevice, ...match, '-j', 'DROP');
    await iptables('-A', 'OUTPUT', '-o', initiatorDevice, ...match, '-j', 'DROP');
  };
  const clearRules = () => iptables('-F');

  /** The responder's gauge `reverse_tunnel_acceptor.nodes.edge-1`, or undefined if not shown. */
  const nodeGauge = async () => {
    const stats = await shellIn(responderNs, 'curl -s --max-time 2 http://127.0.0.1:8889/stats');
    const line = stats.stdout
      .split('\n')
      .find((l) => l.startsWith('reverse_tunnel_acceptor.nodes.edge-1: '));
    return line === undefined ? undefined : Number(line.split(': ')[1]);
  };
  const waitForGauge = (what: string, check: (value: number) => boolean, timeoutMs: number) =>
    pollUntil(what, async () => check((await nodeGauge()) ?? 0), { timeoutMs, intervalMs: 100 });
  /** A GET through the tunnel from the responder host: the status, or 0 when curl failed. */
  const callEdge = async (path = '/ok', maxTimeS = 5) => {
    const result = await shellIn(
      responderNs,
      `curl -s -o /dev/null --max-time ${maxTimeS} -w '%{http_code}' -H 'x-cluster-id: edge' http://127.0.0.1:8085${path}`,
    );
    return Number(result.stdout) || 0;
  };
  /** Checksummed load from the responder host for `durationMs`; resolves with every result. */
  const startLoad = (durationMs: number) => {
    const proc = start(responderNs, [
      process.execPath,
      '--import',
      'tsx',
      'test/helpers/chaos-load.ts',
      'load',
      'http://127.0.0.1:8085',
      'edge',
      String(durationMs),
      String(loadConcurrency),
      String(loadDeadlineMs),
    ]);
    const done = (async () => {
      await proc.waitForStdout('{"done":true}\n', durationMs + loadDeadlineMs + 15_000);
      return proc.stdout
        .split('\n')
        .filter((line) => line.startsWith('{"start"'))
        .map((line) => JSON.parse(line) as LoadResult);
    })();
    return { proc, done };
  };
  /** Waits until the load has had `count` successes (it started, tsx compiled, the tunnel works). */
  const loadIsFlowing = (proc: TestProcess, count = 20) =>
    pollUntil(
      'the load to succeed',
      () => Promise.resolve(proc.stdout.split('"kind":"ok"').length > count),
      {
        timeoutMs: 15_000,
        intervalMs: 50,
      },
    );
  /** The close reasons of every tunnel closed so far, from each role's lifecycle log. */
  const tunnelCloses = async () => {
    const read = async (file: string, event: string) => {
      const text = await readFile(join(dir, file), 'utf8').catch(() => '');
      return text
        .split('\n')
        .filter((line) => line !== '')
        .map((line) => JSON.parse(line) as { event: string; close_reason?: string })
        .filter((record) => record.event === event)
        .map((record) => record.close_reason ?? '?');
    };
    return {
      responder: await read('responder-lifecycle.jsonl', 'tunnel_closed'),
      initiator: await read('initiator-lifecycle.jsonl', 'connection_closed'),
    };
  };
  const report = (t: TestContext, name: string, figures: unknown) =>
    t.diagnostic(`${name}: ${JSON.stringify(figures)}`);
  /** Non-200 load results, with the request body's length: what to look at when one surprises. */
  const oddFailures = (results: readonly LoadResult[], at: number) =>
    results
      .filter((r) => r.kind !== 'ok' && !(r.status === 503 && r.error?.startsWith('no tunnel')))
      .map(
        (r) =>
          `${r.kind} ${r.status ?? ''} ${r.bytes} B, ${r.start - at}..${r.end - at} ms: ${r.error ?? ''}`,
      );
  /** The initiators' `local service request failed` warnings since the test started. */
  const localServiceFailures = () =>
    started
      .filter((proc) => proc.argv.includes('initiator'))
      .flatMap((proc) => proc.stderr.split('\n'))
      .filter((line) => line.includes('local service request failed'))
      .map((line) => line.slice(0, 400));

  before(async () => {
    requireRootAndTools();
    const probe = spawnSync('iptables', ['--version'], { timeout: commandDeadlineMs });
    if (probe.error !== undefined || probe.status !== 0) {
      assert.fail(`test/system/chaos needs \`iptables\` on PATH (Debian's iptables package)`);
    }
    dir = await mkdtemp(join(tmpdir(), 'revtun-chaos-'));
    responderNs = await namespaces.add('cr');
    initiatorNs = await namespaces.add('ci');
    await joinWithVeth(
      { namespace: responderNs, device: 'veth-cr', address: `${responderIp}/24` },
      { namespace: initiatorNs, device: initiatorDevice, address: `${initiatorIp}/24` },
    );
    const keepalive = `http2:\n  ping_interval: ${pingIntervalMs}ms\n  ping_timeout: ${pingTimeoutMs}ms\n`;
    await writeFile(
      join(dir, 'responder.yaml'),
      `allow_insecure: true
admin:
  address: 127.0.0.1:8889
lifecycle_log:
  path: ${join(dir, 'responder-lifecycle.jsonl')}
tunnel_listener:
  address: ${responderIp}:9000
  # Idle tunnels, too, are noticed dead within about 3 × 500 ms.
  ping_interval: 500ms
egress_listeners:
  - address: 127.0.0.1:8085
${keepalive}`,
    );
    await writeFile(
      join(dir, 'initiator.yaml'),
      `node_id: edge-1
cluster_id: edge
tenant_id: t1
allow_insecure: true
lifecycle_log:
  path: ${join(dir, 'initiator-lifecycle.jsonl')}
handshake:
  timeout: 2s
max_reconnect_backoff: 2s
remote_clusters:
  - name: responders
    hosts: [${responderIp}:9000]
local_routes:
  - prefix: /
    target: http://127.0.0.1:18080
${keepalive}`,
    );

    service = start(initiatorNs, [
      process.execPath,
      '--import',
      'tsx',
      'test/helpers/chaos-load.ts',
      'service',
      '18080',
    ]);
    const responder = start(
      responderNs,
      revtun('responder', '--config', join(dir, 'responder.yaml')),
    );
    await service.waitForStdout('listening\n');
    await responder.waitForStdout('  admin http://127.0.0.1:8889/stats\n');
    await startInitiator();
    await waitForGauge('the tunnel up', (value) => value >= 1, 10_000);
  });

  after(async () => {
    try {
      if (initiatorNs !== undefined)
        await runToEnd(inNamespace(initiatorNs, ['iptables', '-F']), commandDeadlineMs);
    } finally {
      try {
        for (const proc of started) await proc.stop();
      } finally {
        await namespaces.close();
        if (dir !== undefined) await rm(dir, { recursive: true, force: true });
      }
    }
  });

  it('fails an in-flight request with 502 once the link is black-holed, and recovers', async (t) => {
    assert.equal(await callEdge(), 200);
    const slow = start(responderNs, [
      'curl',
      '-s',
      '-o',
      '/dev/null',
      '--max-time',
      '20',
      '-w',
      '%{http_code}',
      '-H',
      'x-cluster-id: edge',
      'http://127.0.0.1:8085/slow?ms=3000',
    ]);
    await service.waitForStdout('slow request started\n', 10_000);
    const closesBefore = await tunnelCloses();
    const holed = Date.now();
    try {
      await dropOnVeth();
      const exit = await slow.waitForExit(15_000);
      const to502 = Date.now() - holed;
      assert.equal(exit.code, 0, slow.describe());
      assert.equal(slow.stdout, '502', slow.describe());
      await waitForGauge('the node gone', (value) => value === 0, 15_000);
      const toGone = Date.now() - holed;
      // The initiator runs its own keepalive on the same session: it gives up on its side too.
      await pollUntil(
        "the initiator's connection_closed",
        async () => (await tunnelCloses()).initiator.length > closesBefore.initiator.length,
        { timeoutMs: keepaliveBoundMs + 2_000, intervalMs: 50 },
      );
      const toInitiatorClose = Date.now() - holed;
      const closes = await tunnelCloses();
      report(t, 'black hole', {
        msTo502: to502,
        boundMs: keepaliveBoundMs,
        msToNodeGaugeZero: toGone,
        msToInitiatorConnectionClosed: toInitiatorClose,
        responderCloseReasons: closes.responder.slice(closesBefore.responder.length),
        initiatorCloseReasons: closes.initiator.slice(closesBefore.initiator.length),
      });
      assert.ok(to502 <= keepaliveBoundMs, `502 after ${to502} ms, over ${keepaliveBoundMs} ms`);
      assert.ok(toGone <= keepaliveBoundMs + 2_500, `node gone after ${toGone} ms`);
    } finally {
      await clearRules();
    }
    const opened = Date.now();
    await waitForGauge('the tunnel back', (value) => value >= 1, 15_000);
    const toTunnel = Date.now() - opened;
    await pollUntil('a request through the tunnel', async () => (await callEdge()) === 200, {
      timeoutMs: 10_000,
      intervalMs: 100,
    });
    report(t, 'black hole lifted', {
      msToTunnelBack: toTunnel,
      msToFirst200: Date.now() - opened,
    });
  });

  it('loses no request when `ss -K` kills the tunnel sockets under load, and recovers', async (t) => {
    const { proc, done } = startLoad(8_000);
    await loadIsFlowing(proc);
    const killed = Date.now();
    const ss = await shellIn(initiatorNs, `ss -K -t dst ${responderIp}`);
    const results = await done;
    const summary = summarize(results);
    const recovered = recovery(results, killed);
    report(t, 'ss -K', {
      socketsKilled: ss.stdout.split('\n').filter((line) => line.includes(`${responderIp}:9000`))
        .length,
      ...summary,
      ...recovered,
      oddFailures: oddFailures(results, killed),
      localServiceFailures: localServiceFailures(),
    });
    assert.match(
      ss.stdout,
      new RegExp(`${responderIp.replaceAll('.', '\\.')}:9000`),
      ss.stdout + ss.stderr,
    );
    assert.equal(summary.byKind.hang ?? 0, 0, 'requests neither answered nor failed in time');
    assert.equal(summary.byKind.bad_checksum ?? 0, 0, '200s with a wrong body');
    assert.notEqual(recovered.firstOkAfterLastFailureMs, null, 'no success after the kill');
    await waitForGauge('the tunnel up', (value) => value >= 1, 10_000);
  });

  it('serves again after the initiator is SIGKILLed and restarted under load', async (t) => {
    const { proc, done } = startLoad(12_000);
    await loadIsFlowing(proc);
    const killed = Date.now();
    initiator!.signal('SIGKILL');
    assert.deepEqual(await initiator!.waitForExit(stopDeadlineMs), {
      code: null,
      signal: 'SIGKILL',
    });
    await waitForGauge('the node gone', (value) => value === 0, 10_000);
    const toGone = Date.now() - killed;
    const restarted = Date.now();
    await startInitiator();
    const toBanner = Date.now() - restarted;
    await waitForGauge('the tunnel back', (value) => value >= 1, 10_000);
    const toTunnel = Date.now() - restarted;
    const results = await done;
    const summary = summarize(results);
    const afterRestart = results.filter((r) => r.kind === 'ok' && r.start >= restarted);
    const firstOk = Math.min(...afterRestart.map((r) => r.end));
    report(t, 'SIGKILL + restart', {
      msKillToNodeGaugeZero: toGone,
      msRestartToBanner: toBanner,
      msRestartToTunnel: toTunnel,
      msRestartToFirstOk: Number.isFinite(firstOk) ? firstOk - restarted : null,
      ...summary,
      oddFailures: oddFailures(results, restarted),
      localServiceFailures: localServiceFailures(),
    });
    assert.equal(summary.byKind.hang ?? 0, 0, 'requests neither answered nor failed in time');
    assert.equal(summary.byKind.bad_checksum ?? 0, 0, '200s with a wrong body');
    assert.ok(afterRestart.length > 0, 'no success after the restart');
  });

  it('loses no request under 5 % packet loss, and closes no tunnel under 1 %', async (t) => {
    const lossyMs = 14_000;
    const { proc, done } = startLoad(2 * lossyMs + 1_000);
    await loadIsFlowing(proc);
    let closesAtStart: Awaited<ReturnType<typeof tunnelCloses>>;
    let closesBefore: Awaited<ReturnType<typeof tunnelCloses>>;
    let closesAfter: Awaited<ReturnType<typeof tunnelCloses>>;
    let fiveFrom: number;
    let oneFrom: number;
    let oneTo: number;
    try {
      closesAtStart = await tunnelCloses();
      fiveFrom = Date.now();
      await dropOnVeth(0.05);
      await delay(lossyMs);
      await clearRules();
      // A tunnel the 5 % closed is re-dialled at once; let that settle before counting closes.
      await waitForGauge('the tunnel up', (value) => value >= 1, 10_000);
      await delay(500);
      closesBefore = await tunnelCloses();
      oneFrom = Date.now();
      await dropOnVeth(0.01);
      await delay(lossyMs);
      oneTo = Date.now();
      closesAfter = await tunnelCloses();
    } finally {
      await clearRules();
    }
    const results = await done;
    const fivePercent = results.filter((r) => r.start >= fiveFrom && r.start < oneFrom - 1_000);
    const onePercent = results.filter((r) => r.start >= oneFrom && r.end <= oneTo);
    const five = summarize(fivePercent);
    const one = summarize(onePercent);
    const newCloses = {
      responder: closesAfter.responder.slice(closesBefore.responder.length),
      initiator: closesAfter.initiator.slice(closesBefore.initiator.length),
    };
    const fiveCloses = closesBefore.responder.slice(closesAtStart.responder.length);
    report(t, '5 % loss', {
      ...five,
      tunnelClosesResponder: fiveCloses.length,
      closeReasons: fiveCloses,
    });
    report(t, '1 % loss', {
      ...one,
      tunnelClosesResponder: newCloses.responder.length,
      tunnelClosesInitiator: newCloses.initiator.length,
      closeReasons: [...newCloses.responder, ...newCloses.initiator],
    });
    const all = summarize(results);
    assert.equal(all.byKind.hang ?? 0, 0, 'requests neither answered nor failed in time');
    assert.equal(all.byKind.bad_checksum ?? 0, 0, '200s with a wrong body');
    assert.ok(five.total > 0 && one.total > 0);
    assert.deepEqual(newCloses, { responder: [], initiator: [] }, 'tunnels closed under 1 % loss');
  });
});
