/**
 * A revtun initiator and a revtun responder together (protocol reference §6, §8; acceptance
 * scenarios 12, 15, 16, 17, 20, 33): the options both sides must agree on, routing by node and by
 * cluster, multiplexing on one tunnel, and a node that goes and comes back.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { InitiatorConfigInput } from '../../src/config/schema.ts';
import { startInitiator, type Initiator } from '../../src/initiator/initiator.ts';
import type { Responder } from '../../src/responder/responder.ts';
import { request, startNamedService, type TestService } from '../helpers/http.ts';
import {
  connectedInitiator,
  responderOnFreePorts,
  tunnelsRegistered,
  waitForEvent,
} from '../helpers/tunnels.ts';

const egressOf = (responder: Responder) => responder.addresses.egress[0]!;

async function initiatorWith(
  responder: Responder,
  service: TestService,
  spec: { node: string; cluster: string; tunnels?: number },
  handshake: InitiatorConfigInput['handshake'] = {},
): Promise<Initiator> {
  const registered = tunnelsRegistered(responder, spec.node, spec.tunnels ?? 1);
  const initiator = await startInitiator({
    node_id: spec.node,
    cluster_id: spec.cluster,
    tenant_id: 't1',
    handshake,
    remote_clusters: [
      {
        name: 'upstream-cluster',
        hosts: [`127.0.0.1:${responder.addresses.tunnel.port}`],
        tunnels_per_host: spec.tunnels ?? 1,
      },
    ],
    local_routes: [{ prefix: '/', target: service.target }],
  });
  await registered;
  return initiator;
}

describe('options both sides agree on', () => {
  let service: TestService;
  before(async () => {
    service = await startNamedService('n1');
  });
  after(() => service.close());

  const cases: Array<
    [string, Parameters<typeof responderOnFreePorts>[0], InitiatorConfigInput['handshake']]
  > = [
    [
      'scenario 15: request path /custom/reverse on both sides brings the tunnel up',
      { tunnel: { request_path: '/custom/reverse' } },
      { request_path: '/custom/reverse' },
    ],
    [
      'scenario 33: header prefix x-custom on both sides brings the tunnel up',
      { tunnel: { header_prefix: 'x-custom' } },
      { header_prefix: 'x-custom' },
    ],
    [
      'scenario 12: Upgrade mode on both sides brings the tunnel up with a 101',
      { tunnel: { use_http_upgrade: true } },
      { use_http_upgrade: true },
    ],
  ];
  for (const [name, responderOptions, handshake] of cases) {
    it(name, async () => {
      const responder = await responderOnFreePorts(responderOptions);
      try {
        const initiator = await initiatorWith(
          responder,
          service,
          { node: 'n1', cluster: 'c1' },
          handshake,
        );
        try {
          assert.equal(responder.stats.value('reverse_tunnel.handshake.accepted'), 1);
          const reply = await request(egressOf(responder), '/ok', {
            headers: { 'x-node-id': 'n1' },
          });
          assert.equal(reply.status, 200);
          assert.equal(reply.headers['x-served-by'], 'n1');
        } finally {
          await initiator.close();
        }
      } finally {
        await responder.close();
      }
    });
  }
});

describe('routing and multiplexing', () => {
  let responder: Responder;
  let service: TestService;
  let initiator: Initiator;
  before(async () => {
    responder = await responderOnFreePorts();
    service = await startNamedService('downstream-node');
    initiator = await initiatorWith(responder, service, {
      node: 'downstream-node',
      cluster: 'downstream-cluster',
    });
  });
  after(async () => {
    await initiator.close();
    await responder.close();
    await service.close();
  });

  it('scenario 16: host id downstream-node and host id downstream-cluster both get 200 from the private service', async () => {
    for (const headers of [
      { 'x-node-id': 'downstream-node' },
      { 'x-cluster-id': 'downstream-cluster' },
      { 'x-remote-node-id': 'downstream-node' },
      { 'x-dst-cluster-uuid': 'downstream-cluster' },
    ]) {
      const reply = await request(egressOf(responder), '/private', { headers });
      assert.equal(reply.status, 200, JSON.stringify(headers));
      assert.equal(reply.headers['x-served-by'], 'downstream-node');
    }
  });

  it('scenario 17: 5 concurrent requests all get 200 on one HTTP/2 connection; accepted stays 1; upstream_rq_total ≥ 6 with a warm-up', async () => {
    const total = 'cluster.reverse_connection_cluster.upstream_rq_total';
    const before = responder.stats.value(total) ?? 0;
    const headers = { 'x-node-id': 'downstream-node' };
    assert.equal((await request(egressOf(responder), '/warm-up', { headers })).status, 200);
    const replies = await Promise.all(
      [1, 2, 3, 4, 5].map((i) => request(egressOf(responder), `/r/${i}`, { headers })),
    );
    assert.deepEqual(
      replies.map((reply) => reply.status),
      [200, 200, 200, 200, 200],
    );
    assert.equal(responder.stats.value('reverse_tunnel.handshake.accepted'), 1);
    assert.deepEqual(
      responder.tunnels().map(({ nodeId, idle, sessions }) => ({ nodeId, idle, sessions })),
      [{ nodeId: 'downstream-node', idle: 0, sessions: 1 }],
    );
    assert.ok((responder.stats.value(total) ?? 0) - before >= 6);
  });
});

describe('multiplexing with a spare tunnel', () => {
  it('keeps the second tunnel idle while the first HTTP/2 connection has room', async () => {
    const responder = await responderOnFreePorts();
    const service = await startNamedService('n1');
    const initiator = await initiatorWith(responder, service, {
      node: 'n1',
      cluster: 'c1',
      tunnels: 2,
    });
    try {
      const replies = await Promise.all(
        Array.from({ length: 10 }, () =>
          request(egressOf(responder), '/', { headers: { 'x-node-id': 'n1' } }),
        ),
      );
      assert.deepEqual(new Set(replies.map((reply) => reply.status)), new Set([200]));
      assert.deepEqual(
        responder.tunnels().map(({ idle, sessions }) => ({ idle, sessions })),
        [{ idle: 1, sessions: 1 }],
      );
    } finally {
      await initiator.close();
      await responder.close();
      await service.close();
    }
  });
});

describe('scenario 20: node loss and recovery', () => {
  it('scenario 20: node-1 going away drops its gauge to 0 and its requests to 503, node-2 is unaffected, and node-1 comes back', async () => {
    const responder = await responderOnFreePorts();
    const services = await Promise.all([startNamedService('node-1'), startNamedService('node-2')]);
    const spec = (index: number) => ({
      node: `node-${index + 1}`,
      cluster: 'c1',
      routes: [{ prefix: '/', target: services[index]!.target }],
    });
    const node2 = await connectedInitiator(responder, spec(1));
    let node1 = await connectedInitiator(responder, spec(0));
    const ask = (node: string) =>
      request(egressOf(responder), '/', { headers: { 'x-node-id': node } });
    try {
      assert.equal((await ask('node-1')).status, 200);
      const gone = waitForEvent(
        responder,
        'tunnel_closed',
        (identity: { nodeId: string }) => identity.nodeId === 'node-1',
      );
      await node1.close();
      await gone;
      assert.equal(responder.stats.value('reverse_connections.nodes.node-1'), 0);
      assert.equal(responder.stats.value('reverse_connections.nodes.node-2'), 1);
      assert.equal((await ask('node-1')).status, 503);
      const other = await ask('node-2');
      assert.equal(other.status, 200);
      assert.equal(other.headers['x-served-by'], 'node-2');
      // Requests for the cluster now all go to node-2.
      for (let i = 0; i < 3; i += 1) {
        const byCluster = await request(egressOf(responder), '/', {
          headers: { 'x-cluster-id': 'c1' },
        });
        assert.equal(byCluster.headers['x-served-by'], 'node-2');
      }
      node1 = await connectedInitiator(responder, spec(0));
      assert.equal(responder.stats.value('reverse_connections.nodes.node-1'), 1);
      const back = await ask('node-1');
      assert.equal(back.status, 200);
      assert.equal(back.headers['x-served-by'], 'node-1');
    } finally {
      await node1.close();
      await node2.close();
      await responder.close();
      for (const service of services) await service.close();
    }
  });
});
