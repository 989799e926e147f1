/**
 * Envoy's reverse-tunnel sandbox, run from its own bootstrap files: responder-envoy.yaml and
 * initiator-envoy.yaml (test/fixtures/envoy/sandbox/, unchanged but for host names and ports,
 * rewritten in memory) translated by revtun, with the demo service behind the initiator, all in
 * this process on loopback. It passes every check of the sandbox's verify.sh
 * (reference envoy-sandbox/verify-steps.md).
 */
import assert from 'node:assert/strict';
import type { OutgoingHttpHeaders } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { translateEnvoyBootstrap } from '../../src/config/envoy-bootstrap.ts';
import type { InitiatorConfig, ResponderConfig } from '../../src/config/schema.ts';
import { startInitiator, type Initiator } from '../../src/initiator/initiator.ts';
import { startResponder, type Responder } from '../../src/responder/responder.ts';
import { startDemoService, type DemoService } from '../../src/sandbox/demo-service.ts';
import type { HostPort } from '../../src/shared/address.ts';
import { rewriteSandboxInitiator, rewriteSandboxResponder } from '../helpers/envoy-sandbox.ts';
import { request, type Reply } from '../helpers/http.ts';
import { tunnelsRegistered, waitForEvent } from '../helpers/tunnels.ts';

const get = (target: HostPort, path: string, headers: OutgoingHttpHeaders = {}): Promise<Reply> =>
  request(target, path, { headers, timeoutMs: 5_000 });

async function statLines(admin: HostPort | undefined): Promise<string[]> {
  assert.ok(admin, 'the admin server is not running');
  const reply = await get(admin, '/stats?hidden=include');
  assert.equal(reply.status, 200, reply.text);
  return reply.text.split('\n');
}

interface LogLine {
  readonly msg: string;
  readonly lua?: boolean;
}

function responderConfig(): ResponderConfig {
  const { responder, initiator } = translateEnvoyBootstrap(
    rewriteSandboxResponder(),
    'responder-envoy.yaml',
  );
  assert.equal(initiator, undefined);
  assert.ok(responder);
  return responder;
}

function initiatorConfig(ports: { tunnelPort: number; servicePort: number }): InitiatorConfig {
  const { responder, initiator } = translateEnvoyBootstrap(
    rewriteSandboxInitiator(ports),
    'initiator-envoy.yaml',
  );
  assert.equal(responder, undefined);
  assert.ok(initiator);
  return initiator;
}

describe("Envoy's sandbox bootstrap files, translated, pass the sandbox's verify.sh", () => {
  let service: DemoService;
  let responder: Responder;
  let initiator: Initiator;
  const responderLog: LogLine[] = [];

  before(async () => {
    service = await startDemoService({ host: '127.0.0.1', port: 0 });
    responder = await startResponder(responderConfig(), {
      logger: pino(
        { level: 'info' },
        { write: (line: string) => responderLog.push(JSON.parse(line) as LogLine) },
      ),
    });
    const registered = tunnelsRegistered(responder, 'downstream-node');
    initiator = await startInitiator(
      initiatorConfig({
        tunnelPort: responder.addresses.tunnel.port,
        servicePort: service.address.port,
      }),
    );
    const connected = waitForEvent(initiator, 'handshake_success');
    await Promise.all([registered, connected]);
  });

  after(async () => {
    await initiator?.close({ graceMs: 0 });
    await responder?.close({ graceMs: 0 });
    await service?.close();
  });

  it('steps 1-2: the initiator shows upstream-cluster connected: 1 and connecting: 0', async () => {
    const lines = await statLines(initiator.addresses.admin);
    assert.ok(
      lines.includes('downstream_reverse_connection.cluster.upstream-cluster.connected: 1'),
      lines.join('\n'),
    );
    assert.ok(
      lines.includes('downstream_reverse_connection.cluster.upstream-cluster.connecting: 0'),
      lines.join('\n'),
    );
  });

  it('step 3: the responder shows downstream-cluster: 1 and downstream-node: 1', async () => {
    const lines = await statLines(responder.addresses.admin);
    assert.ok(
      lines.includes('upstream_reverse_connection.clusters.downstream-cluster: 1'),
      lines.join('\n'),
    );
    assert.ok(
      lines.includes('upstream_reverse_connection.nodes.downstream-node: 1'),
      lines.join('\n'),
    );
  });

  for (const [step, header, value] of [
    ['step 4', 'x-cluster-id', 'downstream-cluster'],
    ['step 5', 'x-node-id', 'downstream-node'],
  ] as const) {
    it(`${step}: GET /downstream_service with ${header} is routed by the Lua script to the demo service`, async () => {
      const egress = responder.addresses.egress[0];
      assert.ok(egress);
      responderLog.length = 0;
      const reply = await get(egress, '/downstream_service', { [header]: value });
      assert.equal(reply.status, 200, reply.text);
      assert.match(reply.text, /^URI: \/downstream_service$/m);
      // The egress listener reads only x-computed-host-id, which the script sets.
      assert.deepEqual(
        responderLog.filter((line) => line.lua === true).map((line) => line.msg),
        [`Using ${header} as host_id: ${value}`],
      );
    });
  }

  it('a request with neither header is not routed: the script sets no host id', async () => {
    const egress = responder.addresses.egress[0];
    assert.ok(egress);
    responderLog.length = 0;
    const reply = await get(egress, '/downstream_service');
    assert.ok(reply.status >= 400, `status ${reply.status}: ${reply.text}`);
    assert.doesNotMatch(reply.text, /URI: /);
    assert.deepEqual(
      responderLog.filter((line) => line.lua === true).map((line) => line.msg),
      ['No valid headers found: x-node-id or x-cluster-id'],
    );
  });

  it('answers that request 503, as Envoy does when the reverse_connection cluster has no host', async () => {
    const egress = responder.addresses.egress[0];
    assert.ok(egress);
    const before =
      responder.stats.value('cluster.reverse_connection_cluster.upstream_cx_none_healthy') ?? 0;
    const reply = await get(egress, '/downstream_service');
    assert.equal(reply.status, 503, reply.text);
    assert.equal(
      responder.stats.value('cluster.reverse_connection_cluster.upstream_cx_none_healthy'),
      before + 1,
    );
  });
});

/** An initiator whose listener has two rc:// addresses, to the responders of cluster-a and -b. */
function multiClusterBootstrap(a: HostPort, b: HostPort, service: HostPort): string {
  const cluster = (name: string, { host, port }: HostPort) => [
    `  - name: ${name}`,
    '    type: STATIC',
    '    load_assignment:',
    '      endpoints:',
    '      - lb_endpoints:',
    `        - endpoint: { address: { socket_address: { address: ${host}, port_value: ${port} } } }`,
  ];
  const rc = (address: string, indent: string) => [
    `${indent}socket_address:`,
    `${indent}  address: "${address}"`,
    `${indent}  port_value: 0`,
    `${indent}  resolver_name: envoy.resolvers.reverse_connection`,
  ];
  return [
    'bootstrap_extensions:',
    '- name: envoy.bootstrap.reverse_tunnel.downstream_socket_interface',
    '  typed_config:',
    '    "@type": type.googleapis.com/envoy.extensions.bootstrap.reverse_tunnel.downstream_socket_interface.v3.DownstreamReverseConnectionSocketInterface',
    'static_resources:',
    '  listeners:',
    '  - name: multi_cluster_listener',
    '    address:',
    ...rc('rc://node-1:downstream-cluster:tenant-a@cluster-a:2', '      '),
    '    additional_addresses:',
    '    - address:',
    ...rc('rc://node-1:downstream-cluster:tenant-a@cluster-b:3', '        '),
    '    filter_chains:',
    '    - filters:',
    '      - name: envoy.filters.network.http_connection_manager',
    '        typed_config:',
    '          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
    '          stat_prefix: rc',
    '          route_config:',
    '            virtual_hosts:',
    '            - name: local',
    '              domains: ["*"]',
    '              routes:',
    '              - match: { prefix: / }',
    '                route: { cluster: local }',
    '          http_filters:',
    '          - name: envoy.filters.http.router',
    '  clusters:',
    ...cluster('cluster-a', a),
    ...cluster('cluster-b', b),
    ...cluster('local', service),
    '',
  ].join('\n');
}

describe('additional_addresses: one initiator, two remote clusters, their own tunnel counts', () => {
  let service: DemoService;
  const responders: Responder[] = [];
  let initiator: Initiator;

  before(async () => {
    service = await startDemoService({ host: '127.0.0.1', port: 0 });
    for (let i = 0; i < 2; i += 1) {
      responders.push(
        await startResponder({
          tunnel_listener: { address: '127.0.0.1:0' },
          egress_listeners: [{ address: '127.0.0.1:0' }],
        }),
      );
    }
  });

  after(async () => {
    await initiator?.close({ graceMs: 0 });
    for (const responder of responders) await responder.close({ graceMs: 0 });
    await service?.close();
  });

  it('keeps 2 tunnels to cluster-a and 3 to cluster-b, and both can reach the node', async () => {
    const [a, b] = responders;
    assert.ok(a && b);
    const { initiator: config } = translateEnvoyBootstrap(
      multiClusterBootstrap(a.addresses.tunnel, b.addresses.tunnel, service.address),
    );
    assert.ok(config);
    const registered = [tunnelsRegistered(a, 'node-1', 2), tunnelsRegistered(b, 'node-1', 3)];
    initiator = await startInitiator(config);
    await Promise.all(registered);
    const count = (responder: Responder) =>
      responder.tunnels().map((node) => [node.nodeId, node.idle + node.sessions]);
    assert.deepEqual(count(a), [['node-1', 2]]);
    assert.deepEqual(count(b), [['node-1', 3]]);
    for (const responder of responders) {
      const egress = responder.addresses.egress[0];
      assert.ok(egress);
      const reply = await get(egress, '/x', { 'x-node-id': 'node-1' });
      assert.equal(reply.status, 200, reply.text);
      assert.match(reply.text, /^URI: \/x$/m);
    }
  });
});
