/**
 * The `tunnel up` / `tunnel down` lines a running role prints: one per change while they are few,
 * a summary once a window has more than 20, and the real events of a responder and an initiator
 * in this process on port 0.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  linesPerWindow,
  printInitiatorTunnels,
  printResponderTunnels,
  TunnelLines,
} from '../../src/cli/tunnel-lines.ts';
import { startInitiator, type Initiator } from '../../src/initiator/initiator.ts';
import type { Responder } from '../../src/responder/responder.ts';
import { pollUntil } from '../helpers/process.ts';
import { responderOnFreePorts } from '../helpers/tunnels.ts';

describe('TunnelLines', () => {
  it('prints the first 20 changes of a window one by one and sums up the rest when it ends', () => {
    const printed: string[] = [];
    const lines = new TunnelLines((line) => printed.push(line));
    try {
      for (let index = 0; index < 25; index += 1) lines.up(`node n${index}`);
      lines.down('node n0', 'remote_close');
      assert.equal(printed.length, linesPerWindow);
      assert.equal(printed[0], 'tunnel up: node n0');
      assert.equal(printed[19], 'tunnel up: node n19');
      lines.endWindow();
      assert.equal(printed.at(-1), 'tunnels: 5 more up, 1 more down in the last 10 s; 24 open');
      // A new window prints again.
      lines.down('node n1', 'ping_timeout');
      assert.equal(printed.at(-1), 'tunnel down: node n1 (ping_timeout)');
      lines.endWindow();
      assert.equal(
        printed.length,
        linesPerWindow + 2,
        'no summary for a window with none left out',
      );
    } finally {
      lines.close();
    }
  });
});

describe('a running role prints a line as each tunnel comes up and goes down', () => {
  let responder: Responder;
  let initiator: Initiator | undefined;
  const responderLines: string[] = [];
  const initiatorLines: string[] = [];
  let responderPrinter: TunnelLines;
  let initiatorPrinter: TunnelLines;

  before(async () => {
    responder = await responderOnFreePorts();
    responderPrinter = new TunnelLines((line) => responderLines.push(line));
    printResponderTunnels(responder, responderPrinter);
  });

  after(async () => {
    responderPrinter.close();
    initiatorPrinter?.close();
    await initiator?.close({ graceMs: 0 });
    await responder.close();
  });

  it('on both ends, naming the node on the responder and the host on the initiator', async () => {
    const tunnelPort = responder.addresses.tunnel.port;
    initiator = await startInitiator({
      node_id: 'n1',
      cluster_id: 'c1',
      tenant_id: 't1',
      remote_clusters: [
        { name: 'upstream-cluster', hosts: [`127.0.0.1:${tunnelPort}`], tunnels_per_host: 2 },
      ],
      local_routes: [{ prefix: '/', target: 'http://127.0.0.1:1' }],
    });
    initiatorPrinter = new TunnelLines((line) => initiatorLines.push(line));
    printInitiatorTunnels(initiator, initiatorPrinter);
    await pollUntil('two tunnel up lines on each end', () =>
      Promise.resolve(responderLines.length >= 2 && initiatorLines.length >= 2),
    );
    for (const line of responderLines) {
      assert.match(line, /^tunnel up: node n1 \(cluster c1, tenant t1\) #\d+$/);
    }
    assert.deepEqual([...initiatorLines].sort(), [
      `tunnel up: upstream-cluster 127.0.0.1:${tunnelPort} #1`,
      `tunnel up: upstream-cluster 127.0.0.1:${tunnelPort} #2`,
    ]);
  });

  it('and a tunnel down line on the responder when the initiator goes', async () => {
    await initiator?.close({ graceMs: 0 });
    await pollUntil('two tunnel down lines on the responder', () =>
      Promise.resolve(
        responderLines.filter((line) => line.startsWith('tunnel down: ')).length >= 2,
      ),
    );
    const down = responderLines.filter((line) => line.startsWith('tunnel down: '));
    for (const line of down) {
      assert.match(line, /^tunnel down: node n1 \(cluster c1, tenant t1\) #\d+ \(\w+\)$/);
    }
    assert.equal(responderPrinter.open, 0);
  });
});
