/**
 * The two hosts of the chaos suites (test/system/chaos*.test.ts, issue 5 item 7): the responder
 * host (10.214.0.1) and the initiator host (10.214.0.2) in two network namespaces joined by a veth
 * pair, both roles started with the CLI and a config file that sets a short HTTP/2 PING keepalive
 * (1 s / 2 s), a local service on the initiator's loopback, and checksummed load from the responder
 * host (test/helpers/chaos-load.ts). Faults are made with iptables and `ss -K` in the initiator's
 * namespace, on its veth only (its loopback, towards the local service, is left alone), and with
 * the fault-injecting proxy (test/helpers/fault-proxy.ts) for latency and throttling.
 *
 * `chaosHosts()` returns the fixture; a suite calls `setUp()` in `before` and `tearDown()` in
 * `after`, which stops every process it started by its PID and deletes the namespaces.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import type { LoadResult } from './chaos-load.ts';
import {
  Namespaces,
  commandDeadlineMs,
  inNamespace,
  joinWithVeth,
  requireRootAndTools,
  shellIn,
} from './netns.ts';
import { pollUntil, revtun, runToEnd, TestProcess } from './process.ts';

export const responderIp = '10.214.0.1';
export const initiatorIp = '10.214.0.2';
export const initiatorDevice = 'veth-ci';
/** The keepalive both roles run in this test (README: `http2.ping_interval`, `http2.ping_timeout`). */
export const pingIntervalMs = 1_000;
/**
 * Short, so that a black hole is found fast, but not shorter than TCP needs to get a PING through a
 * few retransmissions (RTO from 200 ms, doubling): at 1 s, 1 % loss once closed a healthy tunnel.
 */
export const pingTimeoutMs = 2_000;
/** The keepalive's jitter is up to 15 % of the interval; the rest is scheduling and the poll. */
export const keepaliveBoundMs = pingIntervalMs * 1.15 + pingTimeoutMs + 1_000;
/** A load request not answered (status or connection error) within this counts as lost. */
export const loadDeadlineMs = 10_000;
export const loadConcurrency = 4;
/** Where the fault proxy listens in the initiator's namespace (it forwards to the responder). */
export const proxyAddress = '127.0.0.1:19000';
/** The issue's bound for a restarted responder: its node's tunnel back within this. */
export const responderRestartBoundMs = 3_000;

export const percentile = (sorted: readonly number[], p: number) =>
  sorted.length === 0
    ? NaN
    : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;

/** Counts by kind (and status or error text), success rate and latencies of a load run. */
export function summarize(results: readonly LoadResult[]) {
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
export function recovery(results: readonly LoadResult[], at: number) {
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

export type ChaosHosts = ReturnType<typeof chaosHosts>;

export function chaosHosts() {
  const namespaces = new Namespaces();
  let responderNs: string;
  let initiatorNs: string;
  let dir: string;
  const started: TestProcess[] = [];
  let service: TestProcess;
  let initiator: TestProcess | undefined;
  let responder: TestProcess;

  const start = (namespace: string, argv: string[]) => {
    const proc = new TestProcess(inNamespace(namespace, argv));
    started.push(proc);
    return proc;
  };
  /** Starts the responder; resolves once it printed its last banner line (every listener bound). */
  const startResponder = async () => {
    responder = start(responderNs, revtun('responder', '--config', join(dir, 'responder.yaml')));
    await responder.waitForStdout('  admin http://127.0.0.1:8889/stats\n');
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

  /** The responder's gauge `reverse_tunnel_acceptor.nodes.NODE`, or undefined if not shown. */
  const nodeGauge = async (node: string) => {
    const stats = await shellIn(responderNs, 'curl -s --max-time 2 http://127.0.0.1:8889/stats');
    const line = stats.stdout
      .split('\n')
      .find((l) => l.startsWith(`reverse_tunnel_acceptor.nodes.${node}: `));
    return line === undefined ? undefined : Number(line.split(': ')[1]);
  };
  const waitForGauge = (
    what: string,
    check: (value: number) => boolean,
    timeoutMs: number,
    node = 'edge-1',
  ) =>
    pollUntil(what, async () => check((await nodeGauge(node)) ?? 0), {
      timeoutMs,
      intervalMs: 100,
    });
  /** A GET through the tunnel from the responder host: the status, or 0 when curl failed. */
  const callEdge = async (path = '/ok', maxTimeS = 5) => {
    const result = await shellIn(
      responderNs,
      `curl -s -o /dev/null --max-time ${maxTimeS} -w '%{http_code}' -H 'x-cluster-id: edge' http://127.0.0.1:8085${path}`,
    );
    return Number(result.stdout) || 0;
  };
  /**
   * Checksummed load from the responder host for `durationMs` on `hostId` (with `bigBytes`, one of
   * the loops sends bodies of that size); resolves with every result.
   */
  const startLoad = (durationMs: number, { hostId = 'edge', bigBytes = 0 } = {}) => {
    const proc = start(responderNs, [
      process.execPath,
      '--import',
      'tsx',
      'test/helpers/chaos-load.ts',
      'load',
      'http://127.0.0.1:8085',
      hostId,
      String(durationMs),
      String(loadConcurrency),
      String(loadDeadlineMs),
      ...(bigBytes > 0 ? [String(bigBytes)] : []),
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
  /**
   * The close reasons of every tunnel of `node` closed so far, from the responder's lifecycle log
   * and that node's initiator's; only those logged between `from` and `to` (epoch ms) if given.
   */
  const tunnelCloses = async (node = 'edge-1', from = -Infinity, to = Infinity) => {
    const read = async (file: string, event: string) => {
      const text = await readFile(join(dir, file), 'utf8').catch(() => '');
      return (
        text
          .split('\n')
          // A SIGKILLed role may leave half a line behind.
          .filter((line) => line.startsWith('{') && line.endsWith('}'))
          .map(
            (line) =>
              JSON.parse(line) as {
                time: string;
                event: string;
                node_id?: string;
                close_reason?: string;
              },
          )
          .filter((record) => record.event === event)
          .filter((record) => {
            const at = Date.parse(record.time);
            return at >= from && at <= to;
          })
          .filter((record) => record.node_id === undefined || record.node_id === node)
          .map((record) => record.close_reason ?? '?')
      );
    };
    return {
      responder: await read('responder-lifecycle.jsonl', 'tunnel_closed'),
      initiator: await read(
        node === 'edge-1' ? 'initiator-lifecycle.jsonl' : `initiator-${node}-lifecycle.jsonl`,
        'connection_closed',
      ),
    };
  };
  /** The closes of `node` since `before`, from both logs. */
  const closesSince = async (before: Awaited<ReturnType<typeof tunnelCloses>>, node: string) => {
    const now = await tunnelCloses(node);
    return {
      responder: now.responder.slice(before.responder.length),
      initiator: now.initiator.slice(before.initiator.length),
    };
  };
  /**
   * The fault proxy in the initiator's namespace (forwarding to the responder, `delayMs` and
   * `bytesPerSecond` each way) and a second initiator, node edge-2 of cluster edge-proxied, that
   * dials it; resolves once edge-2's tunnel is up. `figures()` asks the proxy for its figures.
   */
  const startProxiedInitiator = async (delayMs: number, bytesPerSecond: number) => {
    const proxy = start(initiatorNs, [
      process.execPath,
      '--import',
      'tsx',
      'test/helpers/fault-proxy-main.ts',
      proxyAddress,
      `${responderIp}:9000`,
      String(delayMs),
      String(bytesPerSecond),
    ]);
    await proxy.waitForStdout(`fault proxy listening ${proxyAddress}\n`);
    const proxied = start(
      initiatorNs,
      revtun('initiator', '--config', join(dir, 'initiator-edge-2.yaml')),
    );
    await proxied.waitForStdout('  local route / → http://127.0.0.1:18080\n');
    await waitForGauge('the tunnel of edge-2 up', (value) => value >= 1, 10_000, 'edge-2');
    const figures = async () => {
      const lines = proxy.stdout.split('\n').length;
      proxy.signal('SIGUSR2');
      await pollUntil(
        'the proxy figures',
        () => Promise.resolve(proxy.stdout.split('\n').length > lines),
        {
          timeoutMs: 5_000,
          intervalMs: 20,
        },
      );
      return JSON.parse(proxy.stdout.trimEnd().split('\n').at(-1)!) as {
        peakQueuedBytes: number;
        accepted: number;
        open: number;
      };
    };
    const stop = async () => {
      await proxied.stop();
      await proxy.stop();
      await waitForGauge('the tunnel of edge-2 gone', (value) => value === 0, 10_000, 'edge-2');
    };
    return { figures, stop };
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

  const setUp = async () => {
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
    const initiatorYaml = (node: string, cluster: string, responderAt: string, log: string) =>
      `node_id: ${node}
cluster_id: ${cluster}
tenant_id: t1
allow_insecure: true
lifecycle_log:
  path: ${join(dir, log)}
handshake:
  timeout: 2s
max_reconnect_backoff: 2s
remote_clusters:
  - name: responders
    hosts: [${responderAt}]
local_routes:
  - prefix: /
    target: http://127.0.0.1:18080
${keepalive}`;
    await writeFile(
      join(dir, 'initiator.yaml'),
      initiatorYaml('edge-1', 'edge', `${responderIp}:9000`, 'initiator-lifecycle.jsonl'),
    );
    await writeFile(
      join(dir, 'initiator-edge-2.yaml'),
      initiatorYaml('edge-2', 'edge-proxied', proxyAddress, 'initiator-edge-2-lifecycle.jsonl'),
    );

    service = start(initiatorNs, [
      process.execPath,
      '--import',
      'tsx',
      'test/helpers/chaos-load.ts',
      'service',
      '18080',
    ]);
    await service.waitForStdout('listening\n');
    await startResponder();
    await startInitiator();
    await waitForGauge('the tunnel up', (value) => value >= 1, 10_000);
  };

  const tearDown = async () => {
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
  };

  return {
    setUp,
    tearDown,
    get responderNs() {
      return responderNs;
    },
    get initiatorNs() {
      return initiatorNs;
    },
    get service() {
      return service;
    },
    get initiator() {
      return initiator;
    },
    get responder() {
      return responder;
    },
    start,
    startResponder,
    startInitiator,
    dropOnVeth,
    clearRules,
    waitForGauge,
    callEdge,
    startLoad,
    loadIsFlowing,
    tunnelCloses,
    closesSince,
    startProxiedInitiator,
    report,
    oddFailures,
    localServiceFailures,
  };
}
