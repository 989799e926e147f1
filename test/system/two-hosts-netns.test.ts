/**
 * Two hosts in two network namespaces joined by a veth pair, as in a real deployment: the initiator
 * host (10.213.0.2) runs the demo service on its loopback and dials the responder host (10.213.0.1),
 * whose egress listener is the only way in. Checks that requests cross the tunnel, that the service
 * is not reachable directly, and that a killed initiator is noticed and a restarted one served.
 * Needs root and iproute2's `ip`.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  Namespaces,
  inNamespace,
  joinWithVeth,
  requireRootAndTools,
  shellIn,
} from '../helpers/netns.ts';
import {
  assertStopsCleanly,
  pollUntil,
  revtun,
  stopDeadlineMs,
  TestProcess,
} from '../helpers/process.ts';

describe('an initiator and a responder on two hosts (network namespaces joined by a veth pair)', () => {
  const namespaces = new Namespaces();
  let responderNs: string;
  let initiatorNs: string;
  const started: TestProcess[] = [];
  let initiator: TestProcess | undefined;

  const start = (namespace: string, ...args: string[]) => {
    const proc = new TestProcess(inNamespace(namespace, revtun(...args)));
    started.push(proc);
    return proc;
  };
  const startInitiator = async () => {
    initiator = start(
      initiatorNs,
      'initiator',
      '--node-id',
      'edge-1',
      '--cluster-id',
      'edge',
      '--tenant-id',
      't1',
      '--responder',
      '10.213.0.1:9000',
      '--route',
      '/=http://127.0.0.1:18080',
      // A cleartext tunnel to 10.213.0.1 (beyond loopback) is refused without it; the veth pair
      // between two namespaces of this machine is the trusted network the flag is for.
      '--allow-insecure',
    );
    await initiator.waitForStdout('  local route / → http://127.0.0.1:18080\n');
  };
  /** The responder's node gauge for edge-1, read from its admin server on the responder host. */
  const nodeGaugeIs = (value: number) =>
    pollUntil(
      `reverse_tunnel_acceptor.nodes.edge-1: ${value} at the responder`,
      async () => {
        const stats = await shellIn(
          responderNs,
          'curl -s --max-time 2 http://127.0.0.1:8889/stats',
        );
        return stats.stdout.split('\n').includes(`reverse_tunnel_acceptor.nodes.edge-1: ${value}`);
      },
      // Each probe starts a curl in the namespace, so not as often as an in-process request.
      { intervalMs: 100 },
    );
  /** `curl -H 'x-cluster-id: edge' http://127.0.0.1:8085/hello` on the responder host. */
  const callEdge = async () => {
    const result = await shellIn(
      responderNs,
      "curl -s --max-time 5 -w '%{http_code}' -H 'x-cluster-id: edge' http://127.0.0.1:8085/hello",
    );
    assert.equal(result.code, 0, `curl failed: ${result.stderr}`);
    const status = Number(result.stdout.slice(-3));
    return { status, body: result.stdout.slice(0, -3) };
  };

  before(async () => {
    requireRootAndTools();
    responderNs = await namespaces.add('r');
    initiatorNs = await namespaces.add('i');
    await joinWithVeth(
      { namespace: responderNs, device: 'veth-r', address: '10.213.0.1/24' },
      { namespace: initiatorNs, device: 'veth-i', address: '10.213.0.2/24' },
    );

    const demo = start(initiatorNs, 'demo-service', '--listen', '127.0.0.1:18080');
    const responder = start(
      responderNs,
      'responder',
      '--tunnel-listen',
      '10.213.0.1:9000',
      '--egress-listen',
      '127.0.0.1:8085',
      '--admin-listen',
      '8889',
      // The tunnel listener on 10.213.0.1 takes no credentials: refused without it.
      '--allow-insecure',
    );
    await demo.waitForStdout('revtun demo service on http://127.0.0.1:18080\n');
    await responder.waitForStdout('  admin http://127.0.0.1:8889/stats\n');
    await startInitiator();
  });

  after(async () => {
    try {
      for (const proc of started) await proc.stop();
    } finally {
      await namespaces.close();
    }
  });

  it('sends a request naming the cluster through the tunnel to the demo service', async () => {
    await nodeGaugeIs(1);
    const reply = await callEdge();
    assert.equal(reply.status, 200, reply.body);
    assert.match(reply.body, /^Server address: 127\.0\.0\.1:18080\n/);
    assert.match(reply.body, /^URI: \/hello$/m);
  });

  it('leaves the demo service unreachable from the responder host', async () => {
    const result = await shellIn(responderNs, 'curl -s --max-time 2 http://10.213.0.2:18080/');
    // 7 is "failed to connect": the initiator host answers (the link is up), its port is closed.
    assert.equal(result.code, 7, `curl exited ${result.code}: ${result.stdout}${result.stderr}`);
  });

  it('drops the node and answers 503 once the initiator is killed', async () => {
    const killed = initiator!;
    killed.signal('SIGKILL');
    assert.deepEqual(await killed.waitForExit(stopDeadlineMs), { code: null, signal: 'SIGKILL' });
    await nodeGaugeIs(0);
    const reply = await callEdge();
    assert.equal(reply.status, 503, reply.body);
    assert.match(reply.body, /^no tunnel for host id edge/);
  });

  it('serves the requests again once the initiator is started again', async () => {
    await startInitiator();
    await nodeGaugeIs(1);
    const reply = await callEdge();
    assert.equal(reply.status, 200, reply.body);
    assert.match(reply.body, /^URI: \/hello$/m);
  });

  it('stops every process with exit code 0 within 5 s of SIGTERM', async () => {
    const running = started.filter((proc) => proc.running);
    assert.equal(running.length, 3);
    await assertStopsCleanly(running, 'SIGTERM');
  });
});
