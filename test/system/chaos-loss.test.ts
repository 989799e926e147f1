/**
 * Packet loss on the link between two hosts (issue 5 item 7), on the two network namespaces of
 * test/helpers/chaos-hosts.ts: 5 % random loss (iptables' statistic match, both directions of the
 * initiator's veth) for 60 s under checksummed load, then 1 % for 14 s. Under 5 % no request may be
 * lost without an error and no 200 may carry a wrong body; under 1 % no tunnel may be closed (the
 * keepalive does not kill a lossy but live link). Prints counts and p50/p99 with t.diagnostic.
 * Needs root, iproute2, iptables and curl.
 */
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { chaosHosts, summarize } from '../helpers/chaos-hosts.ts';

describe('packet loss on the tunnel link between two hosts (network namespaces, iptables)', () => {
  const hosts = chaosHosts();
  const { dropOnVeth, clearRules, waitForGauge, startLoad, loadIsFlowing, tunnelCloses, report } =
    hosts;
  before(hosts.setUp);
  after(hosts.tearDown);

  it('loses no request under 5 % packet loss, and closes no tunnel under 1 %', async (t) => {
    const fiveMs = 60_000;
    const oneMs = 14_000;
    const { proc, done } = startLoad(fiveMs + oneMs + 4_000);
    await loadIsFlowing(proc);
    let fiveFrom: number;
    let oneFrom: number;
    let oneTo: number;
    try {
      fiveFrom = Date.now();
      await dropOnVeth(0.05);
      await delay(fiveMs);
      await clearRules();
      // A tunnel the 5 % closed is re-dialled at once; the 1 % starts once it is back. Closes are
      // told apart by the time they were logged, so a late write is counted in its own phase.
      await waitForGauge('the tunnel up', (value) => value >= 1, 10_000);
      oneFrom = Date.now();
      await dropOnVeth(0.01);
      await delay(oneMs);
      oneTo = Date.now();
    } finally {
      await clearRules();
    }
    const results = await done;
    const fivePercent = results.filter((r) => r.start >= fiveFrom && r.start < oneFrom - 1_000);
    const onePercent = results.filter((r) => r.start >= oneFrom && r.end <= oneTo);
    const five = summarize(fivePercent);
    const one = summarize(onePercent);
    // Read once the load is done, so every close of either phase has been written.
    const newCloses = await tunnelCloses('edge-1', oneFrom, oneTo);
    const fiveCloses = (await tunnelCloses('edge-1', fiveFrom, oneFrom - 1)).responder;
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
