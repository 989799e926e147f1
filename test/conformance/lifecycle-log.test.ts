/**
 * Lifecycle logs on both sides (protocol reference §10): one JSON line per event, with Envoy's event
 * and field names, the same records the Initiator and Responder emit as `lifecycle` events.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startInitiator, type Initiator } from '../../src/initiator/initiator.ts';
import type { Responder } from '../../src/responder/responder.ts';
import type { LifecycleRecord } from '../../src/shared/lifecycle-log.ts';
import { FakeInitiator, envoyHandshakeRequest } from '../helpers/fake-initiator.ts';
import { FakeResponder } from '../helpers/fake-responder.ts';
import { request, startNamedService, type TestService } from '../helpers/http.ts';
import { readLifecycleLog, type LoggedRecord } from '../helpers/lifecycle-log.ts';
import { responderOnFreePorts, waitForEvent } from '../helpers/tunnels.ts';

/** Resolves at the first record from `emitter` that matches. */
function record(
  emitter: Responder | Initiator,
  match: Partial<Record<string, string | number>>,
  timeoutMs = 5_000,
): Promise<LifecycleRecord> {
  return waitForEvent<[LifecycleRecord]>(
    emitter,
    'lifecycle',
    (r) => Object.entries(match).every(([key, value]) => r[key] === value),
    timeoutMs,
  ).then(([r]) => r);
}

/** A record as it reads back from JSON: without `time` and without undefined fields. */
const asLogged = (r: LifecycleRecord) => JSON.parse(JSON.stringify(r)) as LoggedRecord;
const withoutTime = ({ time, ...rest }: LoggedRecord): LoggedRecord => {
  assert.match(String(time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  return rest;
};

describe('lifecycle logs', () => {
  let dir: string;
  let service: TestService;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'revtun-lifecycle-'));
    service = await startNamedService('n1');
  });
  after(async () => {
    await service.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("write Envoy's events and fields to the file, one JSON line each, as emitted", async () => {
    const responderLog = join(dir, 'responder.jsonl');
    const initiatorLog = join(dir, 'initiator.jsonl');
    const responder = await responderOnFreePorts({
      lifecycle_log: { path: responderLog },
      tunnel: { ping_interval: '200ms', ping_failure_threshold: 3 },
    });
    const emittedByResponder: LifecycleRecord[] = [];
    responder.on('lifecycle', (r) => emittedByResponder.push(r));
    const broken = await FakeResponder.listen();
    const setup = record(responder, { event: 'tunnel_setup', node_id: 'n1' });
    const acked = record(responder, { event: 'idle_ping_ack', node_id: 'n1' });
    const initiator = await startInitiator({
      node_id: 'n1',
      cluster_id: 'c1',
      tenant_id: 't1',
      lifecycle_log: { path: initiatorLog },
      remote_clusters: [
        { name: 'upstream-cluster', hosts: [`127.0.0.1:${responder.addresses.tunnel.port}`] },
        { name: 'broken-cluster', hosts: [broken.hostText] },
      ],
      local_routes: [{ prefix: '/', target: service.target }],
    });
    const emittedByInitiator: LifecycleRecord[] = [];
    initiator.on('lifecycle', (r) => emittedByInitiator.push(r));
    try {
      // The initiator's failure: the broken responder answers 500.
      const failed = record(initiator, { event: 'handshake_failure' });
      const attempt = await broken.accept();
      await attempt.readHandshake();
      attempt.answer(500);
      assert.equal((await failed).error, 'http.500');

      // Setup, a ping and its echo, then a checkout.
      await setup;
      await acked;
      const handoff = record(responder, { event: 'socket_handoff', node_id: 'n1' });
      const reply = await request(responder.addresses.egress[0]!, '/', {
        headers: { 'x-node-id': 'n1' },
      });
      assert.equal(reply.status, 200);
      assert.equal((await handoff).handoff_kind, 'pool_to_upstream');

      // A fake Envoy initiator that never echoes: misses, the timeout, the close.
      const closedSilent = record(responder, { event: 'tunnel_closed', node_id: 'silent' });
      const silent = await FakeInitiator.connect(
        responder.addresses.tunnel,
        envoyHandshakeRequest({ node: 'silent', cluster: 'c1', tenant: 't1' }),
      );
      await silent.expectAccepted();
      assert.equal((await closedSilent).close_reason, 'idle_ping_timeout');

      // The initiator goes away: its tunnel closes on both sides.
      const closedN1 = record(responder, { event: 'tunnel_closed', node_id: 'n1' });
      await initiator.close();
      assert.equal((await closedN1).close_reason, 'remote_close');
    } finally {
      await initiator.close({ graceMs: 0 });
      await responder.close({ graceMs: 0 });
      await broken.close();
    }

    const responderLines = (await readLifecycleLog(responderLog)).map(withoutTime);
    const initiatorLines = (await readLifecycleLog(initiatorLog)).map(withoutTime);
    assert.deepEqual(responderLines, emittedByResponder.map(asLogged));
    assert.deepEqual(initiatorLines, emittedByInitiator.map(asLogged));

    const n1 = responderLines.filter((r) => r.node_id === 'n1');
    const identity = { node_id: 'n1', cluster_id: 'c1', tenant_id: 't1', worker: 'worker_0' };
    const first = (event: string) => {
      const found = n1.find((r) => r.event === event);
      assert.ok(found, `no ${event} for n1 in ${responderLog}`);
      return found;
    };
    assert.deepEqual(
      { ...first('tunnel_setup'), fd: 0 },
      { event: 'tunnel_setup', ...identity, socket_state: 'idle', fd: 0 },
    );
    for (const event of ['idle_ping_sent', 'idle_ping_ack']) {
      assert.deepEqual(
        { ...first(event), fd: 0 },
        { event, ...identity, socket_state: 'idle', fd: 0 },
      );
    }
    assert.deepEqual(
      { ...first('socket_handoff'), fd: 0 },
      {
        event: 'socket_handoff',
        ...identity,
        socket_state: 'handed_off',
        handoff_kind: 'pool_to_upstream',
        fd: 0,
      },
    );
    assert.deepEqual(
      { ...first('tunnel_closed'), fd: 0 },
      {
        event: 'tunnel_closed',
        ...identity,
        socket_state: 'in_use',
        close_reason: 'remote_close',
        fd: 0,
      },
    );
    assert.equal(typeof first('tunnel_setup').fd, 'number');

    const silent = responderLines.filter((r) => r.node_id === 'silent');
    assert.deepEqual(
      silent.map((r) => [r.event, r.miss_count ?? r.close_reason ?? '']),
      [
        ['tunnel_setup', ''],
        ['idle_ping_sent', ''],
        ['idle_ping_miss', 1],
        ['idle_ping_sent', ''],
        ['idle_ping_miss', 2],
        ['idle_ping_sent', ''],
        ['idle_ping_miss', 3],
        ['idle_ping_timeout', 3],
        ['tunnel_closed', 'idle_ping_timeout'],
      ],
    );
    // The fake sent Envoy's optional worker-id and connection-id headers.
    for (const r of silent) {
      assert.equal(r.initiator_worker_id, 'worker_0', r.event);
      assert.equal(r.initiator_connection_id, '7', r.event);
    }

    const ids = { node_id: 'n1', cluster_id: 'c1', tenant_id: 't1', worker_id: 'worker_0' };
    const byEvent = (event: string, cluster: string) =>
      initiatorLines.find((r) => r.event === event && r.upstream_cluster === cluster);
    const success = byEvent('handshake_success', 'upstream-cluster');
    assert.deepEqual(
      { ...success, connection_id: 0 },
      {
        event: 'handshake_success',
        ...ids,
        upstream_cluster: 'upstream-cluster',
        host_address: `127.0.0.1:${responder.addresses.tunnel.port}`,
        connection_id: 0,
      },
    );
    const failure = byEvent('handshake_failure', 'broken-cluster');
    assert.equal(failure?.error, 'http.500');
    assert.equal(failure?.host_address, broken.hostText);
    assert.equal(failure?.worker_id, 'worker_0');
    const closed = byEvent('connection_closed', 'upstream-cluster');
    assert.equal(closed?.connection_id, success?.connection_id);
    assert.equal(closed?.node_id, 'n1');
  });
});
