/**
 * Chaos on the link between two hosts (issue 5 item 7), on the two network namespaces of
 * test/helpers/chaos-hosts.ts (responder 10.214.0.1, initiator 10.214.0.2, HTTP/2 PING keepalive
 * 1 s / 2 s, checksummed load from the responder host):
 *
 * 1. a black hole under an in-flight request: 502 within ping_interval + ping_timeout + slack, the
 *    node gone from the responder, and back once the hole is closed;
 * 2. `ss -K` kills the tunnel sockets under load: every request answered or failed, none hanging,
 *    no 200 with a wrong body, and the tunnel back;
 * 3. SIGKILL of the initiator and a restart under load;
 * 4. SIGKILL of the responder and a restart on the same address under load: the tunnel back, and
 *    the first 200, within 3 s of the new responder listening;
 * 5. through the project's fault-injecting TCP proxy (test/helpers/fault-proxy.ts, run in the
 *    initiator's namespace; a second initiator, node edge-2 of cluster edge-proxied, dials it and
 *    it forwards over the veth): 150 ms added each way, then a 2 MiB/s throttle each way with
 *    4 MiB bodies, each under checksummed load, and no tunnel closed by the keepalive.
 *
 * Packet loss is in test/system/chaos-loss.test.ts: its 60 s would take this file past the 120 s
 * that `npm run test:system` gives one file (--test-timeout applies to each file as a whole).
 * Each prints its figures with t.diagnostic. Needs root, iproute2 (`ip`, `ss`), iptables and curl.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  chaosHosts,
  keepaliveBoundMs,
  recovery,
  responderIp,
  responderRestartBoundMs,
  summarize,
} from '../helpers/chaos-hosts.ts';
import { shellIn } from '../helpers/netns.ts';
import { pollUntil, stopDeadlineMs } from '../helpers/process.ts';

describe('chaos on the tunnel link between two hosts (network namespaces, iptables, ss -K, fault proxy)', () => {
  const hosts = chaosHosts();
  const {
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
  } = hosts;
  before(hosts.setUp);
  after(hosts.tearDown);

  it('fails an in-flight request with 502 once the link is black-holed, and recovers', async (t) => {
    assert.equal(await callEdge(), 200);
    const slow = start(hosts.responderNs, [
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
    await hosts.service.waitForStdout('slow request started\n', 10_000);
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
    const ss = await shellIn(hosts.initiatorNs, `ss -K -t dst ${responderIp}`);
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
    hosts.initiator!.signal('SIGKILL');
    assert.deepEqual(await hosts.initiator!.waitForExit(stopDeadlineMs), {
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

  it('serves again within 3 s of a SIGKILLed responder listening again, under load', async (t) => {
    const { proc, done } = startLoad(12_000);
    await loadIsFlowing(proc);
    const killed = Date.now();
    hosts.responder.signal('SIGKILL');
    assert.deepEqual(await hosts.responder.waitForExit(stopDeadlineMs), {
      code: null,
      signal: 'SIGKILL',
    });
    // The initiator sees its tunnels reset and its re-dials refused: it is in backoff now.
    const restarted = Date.now();
    await startResponder();
    const listening = Date.now();
    await waitForGauge('the tunnel back', (value) => value >= 1, 10_000);
    const toTunnel = Date.now() - listening;
    const results = await done;
    const summary = summarize(results);
    const afterListening = results.filter((r) => r.kind === 'ok' && r.start >= listening);
    const firstOk = Math.min(...afterListening.map((r) => r.end));
    const toFirstOk = Number.isFinite(firstOk) ? firstOk - listening : null;
    const inFlightAtKill = results.filter((r) => r.start < killed && r.end >= killed);
    report(t, 'responder SIGKILL + restart', {
      msKillToRestart: restarted - killed,
      msRestartToListening: listening - restarted,
      msListeningToTunnel: toTunnel,
      msListeningToFirstOk: toFirstOk,
      boundMs: responderRestartBoundMs,
      inFlightAtKill: inFlightAtKill.map((r) => `${r.kind} ${r.error ?? ''}`.trim()),
      ...summary,
      oddFailures: oddFailures(results, killed).slice(0, 10),
    });
    assert.equal(summary.byKind.hang ?? 0, 0, 'requests neither answered nor failed in time');
    assert.equal(summary.byKind.bad_checksum ?? 0, 0, '200s with a wrong body');
    assert.ok(toTunnel <= responderRestartBoundMs, `tunnel back ${toTunnel} ms after listening`);
    assert.notEqual(toFirstOk, null, 'no success after the restart');
    assert.ok(toFirstOk! <= responderRestartBoundMs, `first 200 ${toFirstOk} ms after listening`);
  });

  it('serves every request over a link with 150 ms added each way, and closes no tunnel', async (t) => {
    const delayMs = 150;
    const proxied = await startProxiedInitiator(delayMs, 0);
    try {
      const closesBefore = await tunnelCloses('edge-2');
      const { proc, done } = startLoad(12_000, { hostId: 'edge-proxied' });
      await loadIsFlowing(proc, 4);
      const results = await done;
      const summary = summarize(results);
      const closes = await closesSince(closesBefore, 'edge-2');
      report(t, '150 ms each way', {
        ...summary,
        proxy: await proxied.figures(),
        tunnelCloses: closes,
      });
      assert.equal(summary.byKind.ok, summary.total, JSON.stringify(summary.failures));
      // A request crosses the link at least once each way: the delay is really on the path.
      assert.ok(summary.p50 >= 2 * delayMs, `p50 ${summary.p50} ms, under the added round trip`);
      assert.deepEqual(closes, { responder: [], initiator: [] }, 'tunnels closed by the delay');
    } finally {
      await proxied.stop();
    }
  });

  /**
   * The keepalive's PINGs share the TCP connection with DATA: on a throttled link they queue behind
   * it. With a 2 s PING timeout a healthy tunnel must not be declared dead while it moves 4 MiB
   * bodies at 2 MiB/s.
   */
  const throttleRate = 2 * 1024 * 1024;
  const bigBytes = 4 * 1024 * 1024;
  it('moves 4 MiB bodies intact over a 2 MiB/s link, and the keepalive kills no tunnel', async (t) => {
    const proxied = await startProxiedInitiator(0, throttleRate);
    try {
      const closesBefore = await tunnelCloses('edge-2');
      const { proc, done } = startLoad(16_000, { hostId: 'edge-proxied', bigBytes });
      await loadIsFlowing(proc, 4);
      const results = await done;
      const summary = summarize(results);
      const big = results.filter((r) => r.bytes === bigBytes);
      const bigOk = big.filter((r) => r.kind === 'ok');
      const small = summarize(results.filter((r) => r.bytes !== bigBytes));
      const closes = await closesSince(closesBefore, 'edge-2');
      report(t, '2 MiB/s each way', {
        ...summary,
        bigBodies: big.length,
        bigOk: bigOk.length,
        bigMs: bigOk.map((r) => r.end - r.start),
        bigMiBps: bigOk.map((r) =>
          Number(((2 * bigBytes) / 1048576 / ((r.end - r.start) / 1000)).toFixed(2)),
        ),
        smallP50: small.p50,
        smallP99: small.p99,
        smallMax: small.max,
        proxy: await proxied.figures(),
        tunnelCloses: closes,
      });
      assert.equal(summary.byKind.bad_checksum ?? 0, 0, '200s with a wrong body');
      assert.ok(bigOk.length >= 2, `${bigOk.length} big bodies echoed intact`);
      // 4 MiB up and 4 MiB down at 2 MiB/s each way: at least 2 s; the throttle is on the path.
      assert.ok(Math.min(...bigOk.map((r) => r.end - r.start)) >= 2_000 - 100);
      assert.equal(summary.byKind.ok, summary.total, JSON.stringify(summary.failures));
      assert.deepEqual(closes, { responder: [], initiator: [] }, 'tunnels closed on a slow link');
    } finally {
      await proxied.stop();
    }
  });
});
