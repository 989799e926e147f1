/**
 * `revtun sandbox` on its default ports (8888, 8889, 9000, 8085), run the way the sandbox page tells
 * a user to, and checked with the page's own curl commands. Each run gets a fresh network namespace,
 * where those ports are free whatever else runs on this machine. Needs root and iproute2's `ip`.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Namespaces, inNamespace, requireRootAndTools, shellIn } from '../helpers/netns.ts';
import { assertStopsCleanly, revtun, TestProcess } from '../helpers/process.ts';

describe('revtun sandbox in a fresh network namespace, checked with the sandbox page’s commands', () => {
  const namespaces = new Namespaces();
  let namespace: string;
  let sandbox: TestProcess | undefined;

  before(async () => {
    requireRootAndTools();
    namespace = await namespaces.add('sandbox');
    sandbox = new TestProcess(inNamespace(namespace, revtun('sandbox')));
    await sandbox.waitForStdout('Press Ctrl-C to stop.');
  });

  after(async () => {
    try {
      await sandbox?.stop();
    } finally {
      await namespaces.close();
    }
  });

  it('starts on the default ports with the tunnel established', () => {
    const out = sandbox!.stdout;
    for (const line of [
      '  initiator admin    http://127.0.0.1:8888/stats  (node downstream-node, cluster downstream-cluster)\n',
      '  responder admin    http://127.0.0.1:8889/stats\n',
      '  tunnel listener    127.0.0.1:9000\n',
      '  egress listener    http://127.0.0.1:8085\n',
      '  tunnel             established\n',
      '  curl -s localhost:8888/stats | grep reverse_connection\n',
      '  curl -s localhost:8889/stats | grep reverse_connections\n',
    ])
      assert.ok(out.includes(line), `missing ${JSON.stringify(line)} in:\n${out}`);
  });

  it('curl -s localhost:8888/stats | grep reverse_connection prints the 8 lines of step 5', async () => {
    const result = await shellIn(
      namespace,
      'curl -s localhost:8888/stats | grep reverse_connection',
    );
    assert.equal(result.code, 0, result.stderr);
    assert.equal(
      result.stdout,
      [
        'downstream_reverse_connection.cluster.upstream-cluster.connected: 1',
        'downstream_reverse_connection.cluster.upstream-cluster.connecting: 0',
        'downstream_reverse_connection.host.127.0.0.1:9000.connected: 1',
        'downstream_reverse_connection.host.127.0.0.1:9000.connecting: 0',
        'downstream_reverse_connection.worker_0.cluster.upstream-cluster.connected: 1',
        'downstream_reverse_connection.worker_0.cluster.upstream-cluster.connecting: 0',
        'downstream_reverse_connection.worker_0.host.127.0.0.1:9000.connected: 1',
        'downstream_reverse_connection.worker_0.host.127.0.0.1:9000.connecting: 0',
        '',
      ].join('\n'),
    );
  });

  it('curl -s localhost:8889/stats | grep reverse_connections prints the 4 lines of step 5', async () => {
    const result = await shellIn(
      namespace,
      'curl -s localhost:8889/stats | grep reverse_connections',
    );
    assert.equal(result.code, 0, result.stderr);
    assert.equal(
      result.stdout,
      [
        'reverse_connections.clusters.downstream-cluster: 1',
        'reverse_connections.nodes.downstream-node: 1',
        'reverse_connections.worker_0.cluster.downstream-cluster: 1',
        'reverse_connections.worker_0.node.downstream-node: 1',
        '',
      ].join('\n'),
    );
  });

  it('the step 6 request through the egress listener answers from the demo service', async () => {
    const result = await shellIn(
      namespace,
      'curl -s -H "x-remote-node-id: downstream-node" -H "x-dst-cluster-uuid: downstream-cluster" http://localhost:8085/downstream_service',
    );
    assert.equal(result.code, 0, result.stderr);
    assert.match(
      result.stdout,
      /^Server address: 127\.0\.0\.1:\d+\nServer name: .+\nDate: .+\nURI: \/downstream_service\nRequest ID: [0-9a-f]{32}\n$/,
    );
  });

  it('exits 0 within 5 s of SIGINT (Ctrl-C) and leaves no process behind', async () => {
    await assertStopsCleanly([sandbox!], 'SIGINT');
  });
});
