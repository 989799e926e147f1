/**
 * The gauges of nodes and clusters that went away (`max_departed_stats`): they read 0, as in Envoy,
 * until more than the bound are kept; then the oldest are removed, so that a stream of distinct node
 * ids cannot grow the stats registry without bound.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Responder } from '../../src/responder/responder.ts';
import { startNamedService, type TestService } from '../helpers/http.ts';
import { connectedInitiator, responderOnFreePorts, waitForEvent } from '../helpers/tunnels.ts';

const sp = 'reverse_connections';
const gaugesOf = (kind: 'node' | 'cluster', id: string) => [
  `${sp}.${kind === 'node' ? 'nodes' : 'clusters'}.${id}`,
  `${sp}.worker_0.${kind}.${id}`,
];

describe('gauges of departed nodes and clusters', () => {
  let responder: Responder;
  let service: TestService;

  before(async () => {
    // Two gauges per node and two per cluster: four names is one node and its cluster.
    responder = await responderOnFreePorts({ max_departed_stats: 4 });
    service = await startNamedService('departed');
  });

  after(async () => {
    await responder?.close({ graceMs: 0 });
    await service?.close();
  });

  const values = (names: readonly string[]) => names.map((name) => responder.stats.value(name));

  /** Connects `node` in cluster c1, then closes it and waits for the responder to see it go. */
  async function visit(node: string): Promise<void> {
    const initiator = await connectedInitiator(responder, {
      node,
      cluster: 'c1',
      routes: [{ prefix: '/', target: service.target }],
    });
    assert.deepEqual(values(gaugesOf('node', node)), [1, 1]);
    const gone = waitForEvent(
      responder,
      'tunnel_closed',
      (identity: { nodeId: string }) => identity.nodeId === node,
    );
    await initiator.close({ graceMs: 0 });
    await gone;
  }

  it('read 0 within the bound, and the oldest are removed past it', async () => {
    await visit('n1');
    // n1 and c1: four names, within the bound.
    assert.deepEqual(values(gaugesOf('node', 'n1')), [0, 0]);
    assert.deepEqual(values(gaugesOf('cluster', 'c1')), [0, 0]);

    await visit('n2');
    // n1, n2 and c1 (which n2 brought back, so it is the newest): n1's go.
    assert.deepEqual(values(gaugesOf('node', 'n1')), [undefined, undefined]);
    assert.deepEqual(values(gaugesOf('node', 'n2')), [0, 0]);
    assert.deepEqual(values(gaugesOf('cluster', 'c1')), [0, 0]);

    // A removed node that comes back counts from 0 again.
    await visit('n1');
    assert.deepEqual(values(gaugesOf('node', 'n1')), [0, 0]);
    assert.deepEqual(values(gaugesOf('node', 'n2')), [undefined, undefined]);
  });
});
