/**
 * The revtun responder's handshake against a fake Envoy initiator (protocol reference §3, §8, §9;
 * acceptance scenarios 1–7, 9–12, 15, 19, 29, 33): Envoy's checks in Envoy's order, each with its
 * status, body and `reverse_tunnel.handshake.*` counter, and no other counter moving.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ConfigError, validateResponderConfig } from '../../src/config/load.ts';
import { handshakeCounters } from '../../src/protocol/handshake.ts';
import { startResponder, type Responder } from '../../src/responder/responder.ts';
import { FakeInitiator, envoyHandshakeRequest, type EnvoyIds } from '../helpers/fake-initiator.ts';
import { request } from '../helpers/http.ts';
import { responderOnFreePorts, waitForEvent } from '../helpers/tunnels.ts';

const ids = { node: 'n1', cluster: 'c1', tenant: 't1' };
/** Long enough that no RPING comes while a test looks at the handshake alone. */
const quiet = { ping_interval: '60s' };

type Counts = Record<string, number>;

function countsOf(responder: Responder): Counts {
  return Object.fromEntries(
    handshakeCounters.map((name) => [
      name,
      responder.stats.value(`reverse_tunnel.handshake.${name}`) ?? 0,
    ]),
  );
}

/** Asserts that exactly the named counters moved, by the given amounts. */
function assertMoved(responder: Responder, before: Counts, moved: Counts): void {
  const expected = Object.fromEntries(
    Object.entries(before).map(([name, value]) => [name, value + (moved[name] ?? 0)]),
  );
  assert.deepEqual(countsOf(responder), expected);
}

interface Expected {
  readonly status: number;
  readonly body: string;
  /** The one counter that moves, or undefined for none (a wrong path). */
  readonly counter: string | undefined;
  readonly headers?: Readonly<Record<string, string>>;
}

/** Sends `bytes`, expects the rejection and its counter, and that no tunnel was registered. */
async function assertRejected(
  responder: Responder,
  bytes: string,
  expected: Expected,
): Promise<void> {
  const before = countsOf(responder);
  const peer = await FakeInitiator.connect(responder.addresses.tunnel, bytes);
  const answer = await peer.expectRejection();
  assert.equal(answer.status, expected.status, answer.head);
  assert.equal(answer.body, expected.body);
  assert.equal(answer.headers.get('content-type'), 'text/plain');
  assert.equal(answer.headers.get('connection'), 'close');
  for (const [name, value] of Object.entries(expected.headers ?? {})) {
    assert.equal(answer.headers.get(name), value, name);
  }
  assertMoved(responder, before, expected.counter === undefined ? {} : { [expected.counter]: 1 });
}

/** Sends `bytes` and expects Envoy's exact 200 and a registered tunnel. */
async function assertAccepted(
  responder: Responder,
  bytes: string,
  options: { upgraded?: boolean } = {},
): Promise<FakeInitiator> {
  const before = countsOf(responder);
  const setup = waitForEvent(responder, 'tunnel_setup');
  const peer = await FakeInitiator.connect(responder.addresses.tunnel, bytes);
  if (options.upgraded === true) await peer.expectUpgraded();
  else await peer.expectAccepted();
  await setup;
  assertMoved(responder, before, { accepted: 1 });
  return peer;
}

const req = (ids: EnvoyIds, options: Parameters<typeof envoyHandshakeRequest>[1] = {}) =>
  envoyHandshakeRequest(ids, options);

describe('the default responder', () => {
  let responder: Responder;
  const open: FakeInitiator[] = [];
  before(async () => {
    responder = await responderOnFreePorts({ tunnel: { ...quiet, handshake_timeout: '300ms' } });
  });
  after(async () => {
    for (const peer of open) peer.destroy();
    await responder.close({ graceMs: 0 });
  });

  it("scenario 1: Envoy's own request bytes get exactly Envoy's 200, the gauges and a tunnel_setup", async () => {
    const peer = await assertAccepted(
      responder,
      req({ node: 'n-basic', cluster: 'c-basic', tenant: 't1' }),
    );
    open.push(peer);
    for (const name of [
      'nodes.n-basic',
      'clusters.c-basic',
      'worker_0.node.n-basic',
      'worker_0.cluster.c-basic',
    ]) {
      assert.equal(responder.stats.value(`reverse_connections.${name}`), 1, name);
    }
    assert.equal(await peer.silentFor(100), true, 'nothing follows the 200 before the first RPING');
  });

  it('scenario 2: a path with a query string is not the request path (404, no counter)', async () => {
    await assertRejected(responder, req(ids, { path: '/reverse_connections/request?x=1' }), {
      status: 404,
      body: 'Not a reverse tunnel request',
      counter: undefined,
    });
  });

  it('scenario 2: another method is not a reverse tunnel request (404, no counter)', async () => {
    await assertRejected(responder, req(ids, { method: 'POST' }), {
      status: 404,
      body: 'Not a reverse tunnel request',
      counter: undefined,
    });
  });

  it('compares the method case-insensitively: "get" is accepted', async () => {
    open.push(await assertAccepted(responder, req({ ...ids, node: 'n-lower' }, { method: 'get' })));
  });

  it('accepts a request without content-length (only a non-zero one is a body)', async () => {
    open.push(
      await assertAccepted(responder, req({ ...ids, node: 'n-nolength' }, { contentLength: null })),
    );
  });

  it('scenario 3: a missing node header gets 400 and parse_error +1', async () => {
    await assertRejected(responder, req({ cluster: 'c1', tenant: 't1' }), {
      status: 400,
      body: 'Missing required reverse tunnel headers',
      counter: 'parse_error',
    });
  });

  it('scenario 3: a missing cluster or tenant header gets the same 400', async () => {
    for (const missing of [
      { node: 'n1', tenant: 't1' },
      { node: 'n1', cluster: 'c1' },
    ]) {
      await assertRejected(responder, req(missing), {
        status: 400,
        body: 'Missing required reverse tunnel headers',
        counter: 'parse_error',
      });
    }
  });

  it('scenario 4: an empty tenant gets 400 "Empty tenant-id header value" and parse_error +1', async () => {
    await assertRejected(responder, req({ ...ids, tenant: '' }), {
      status: 400,
      body: 'Empty tenant-id header value',
      counter: 'parse_error',
    });
  });

  it('scenario 5: content-length 15 with a body gets 400 and body_rejected +1', async () => {
    await assertRejected(responder, req(ids, { contentLength: '15', after: 'fifteen bytes!!' }), {
      status: 400,
      body: 'Reverse tunnel handshake must not carry a body',
      counter: 'body_rejected',
    });
  });

  it('scenario 5: transfer-encoding is a body too', async () => {
    await assertRejected(
      responder,
      req(ids, { contentLength: null, extra: ['transfer-encoding: chunked'], after: '0\r\n\r\n' }),
      {
        status: 400,
        body: 'Reverse tunnel handshake must not carry a body',
        counter: 'body_rejected',
      },
    );
  });

  describe('when two checks fail at once, the earlier one decides', () => {
    it('check 0 before 1: a body on a wrong path is body_rejected, not 404', async () => {
      await assertRejected(
        responder,
        req(ids, { path: '/elsewhere', contentLength: '2', after: 'hi' }),
        {
          status: 400,
          body: 'Reverse tunnel handshake must not carry a body',
          counter: 'body_rejected',
        },
      );
    });

    it('check 1 before 3: a wrong path without identity headers is 404, no counter', async () => {
      await assertRejected(responder, req({}, { path: '/custom/reverse' }), {
        status: 404,
        body: 'Not a reverse tunnel request',
        counter: undefined,
      });
    });

    it('check 3 before 4: a missing node with an empty tenant is "Missing required"', async () => {
      await assertRejected(responder, req({ cluster: 'c1', tenant: '' }), {
        status: 400,
        body: 'Missing required reverse tunnel headers',
        counter: 'parse_error',
      });
    });

    it('check 4 before 5: an empty tenant with a ":" in the node id is "Empty tenant-id"', async () => {
      await assertRejected(responder, req({ node: 'a:b', cluster: 'c1', tenant: '' }), {
        status: 400,
        body: 'Empty tenant-id header value',
        counter: 'parse_error',
      });
    });
  });

  it('scenario 19: four tunnels from one node (an Envoy initiator with --concurrency 4) show nodes.<node> = 4', async () => {
    const request = req({ node: 'n-four', cluster: 'c-four', tenant: 't1' });
    for (let i = 0; i < 4; i += 1) open.push(await assertAccepted(responder, request));
    for (const name of ['nodes.n-four', 'clusters.c-four', 'worker_0.node.n-four']) {
      assert.equal(responder.stats.value(`reverse_connections.${name}`), 4, name);
    }
  });

  it('scenario 29: a client that sends nothing is closed at the configured deadline and counted as timeout', async () => {
    const before = countsOf(responder);
    const peer = await FakeInitiator.connect(responder.addresses.tunnel, '');
    const started = performance.now();
    await peer.peer.whenClosed(2_000);
    const elapsed = performance.now() - started;
    assert.ok(
      elapsed >= 280 && elapsed < 1_000,
      `closed after ${Math.round(elapsed)} ms (deadline 300 ms)`,
    );
    assert.equal(peer.peer.pending.length, 0, 'no response on a timeout');
    assertMoved(responder, before, { timeout: 1 });
  });

  it('scenario 29: a request still incomplete at the deadline is closed and counted as timeout', async () => {
    const before = countsOf(responder);
    const peer = await FakeInitiator.connect(responder.addresses.tunnel, req(ids).slice(0, 60));
    await peer.peer.whenClosed(2_000);
    assert.equal(peer.peer.pending.length, 0);
    assertMoved(responder, before, { timeout: 1 });
  });

  it("scenario 29: the handshake deadline defaults to Envoy's 10 s", () => {
    const config = validateResponderConfig({
      tunnel_listener: { address: '127.0.0.1:0' },
      egress_listeners: [{ address: '127.0.0.1:0' }],
    });
    assert.equal(config.tunnel_listener.handshake_timeout, 10_000);
  });
});

describe('a responder with its own request path and method', () => {
  let responder: Responder;
  const open: FakeInitiator[] = [];
  before(async () => {
    responder = await responderOnFreePorts({
      tunnel: { ...quiet, request_path: '/custom/reverse', request_method: 'put' },
    });
  });
  after(async () => {
    for (const peer of open) peer.destroy();
    await responder.close({ graceMs: 0 });
  });

  it('scenario 15: the custom path and method are accepted', async () => {
    open.push(
      await assertAccepted(responder, req(ids, { path: '/custom/reverse', method: 'PUT' })),
    );
  });

  it("scenario 15: Envoy's default GET /reverse_connections/request is then a 404", async () => {
    await assertRejected(responder, req(ids), {
      status: 404,
      body: 'Not a reverse tunnel request',
      counter: undefined,
    });
    await assertRejected(responder, req(ids, { path: '/custom/reverse' }), {
      status: 404,
      body: 'Not a reverse tunnel request',
      counter: undefined,
    });
  });
});

describe('a responder with header prefix x-custom', () => {
  let responder: Responder;
  const open: FakeInitiator[] = [];
  before(async () => {
    responder = await responderOnFreePorts({ tunnel: { ...quiet, header_prefix: 'x-custom' } });
  });
  after(async () => {
    for (const peer of open) peer.destroy();
    await responder.close({ graceMs: 0 });
  });

  it('scenario 33: x-custom-reverse-tunnel-* headers are accepted', async () => {
    open.push(await assertAccepted(responder, req(ids, { prefix: 'x-custom' })));
    assert.equal(responder.stats.value('reverse_connections.nodes.n1'), 1);
  });

  it('scenario 33: a default-prefix request gets 400', async () => {
    await assertRejected(responder, req(ids), {
      status: 400,
      body: 'Missing required reverse tunnel headers',
      counter: 'parse_error',
    });
  });
});

describe('a responder in Upgrade mode', () => {
  let responder: Responder;
  const open: FakeInitiator[] = [];
  before(async () => {
    responder = await responderOnFreePorts({
      tunnel: { ping_interval: '200ms', use_http_upgrade: true },
    });
  });
  after(async () => {
    for (const peer of open) peer.destroy();
    await responder.close({ graceMs: 0 });
  });

  it('scenario 12: connection: Upgrade + upgrade: reverse-tunnel gets 101 with both headers, then RPING', async () => {
    const peer = await assertAccepted(responder, req(ids, { upgrade: 'reverse-tunnel' }), {
      upgraded: true,
    });
    open.push(peer);
    await peer.expectPing(1_000);
  });

  it('scenario 12: the upgrade token is compared case-insensitively', async () => {
    open.push(
      await assertAccepted(
        responder,
        req({ ...ids, node: 'n-case' }, { upgrade: 'Reverse-Tunnel' }),
        {
          upgraded: true,
        },
      ),
    );
  });

  it('scenario 12: a missing upgrade header gets 426 with upgrade: reverse-tunnel and parse_error +1', async () => {
    await assertRejected(responder, req(ids), {
      status: 426,
      body: 'Upgrade: reverse-tunnel required',
      counter: 'parse_error',
      headers: { upgrade: 'reverse-tunnel' },
    });
  });

  it('scenario 12: another upgrade token gets the same 426', async () => {
    await assertRejected(responder, req(ids, { upgrade: 'websocket' }), {
      status: 426,
      body: 'Upgrade: reverse-tunnel required',
      counter: 'parse_error',
      headers: { upgrade: 'reverse-tunnel' },
    });
  });

  it('check 1 before 2: a wrong path without the upgrade header is 404', async () => {
    await assertRejected(responder, req(ids, { path: '/x' }), {
      status: 404,
      body: 'Not a reverse tunnel request',
      counter: undefined,
    });
  });

  it('check 2 before 3: no upgrade header and no node header is 426', async () => {
    await assertRejected(responder, req({ cluster: 'c1', tenant: 't1' }), {
      status: 426,
      body: 'Upgrade: reverse-tunnel required',
      counter: 'parse_error',
      headers: { upgrade: 'reverse-tunnel' },
    });
  });
});

describe('a responder with required_cluster_name', () => {
  let responder: Responder;
  const open: FakeInitiator[] = [];
  before(async () => {
    responder = await responderOnFreePorts({
      tunnel: { ...quiet, required_cluster_name: 'upstream-cluster' },
    });
  });
  after(async () => {
    for (const peer of open) peer.destroy();
    await responder.close({ graceMs: 0 });
  });

  it('scenario 9: a missing upstream-cluster-name header gets 400 and parse_error +1', async () => {
    await assertRejected(responder, req(ids), {
      status: 400,
      body: 'Missing upstream cluster name header',
      counter: 'parse_error',
    });
  });

  it('scenario 9: a different cluster name gets 400 "Cluster name mismatch" and validation_failed +1', async () => {
    await assertRejected(responder, req(ids, { upstreamClusterName: 'other-cluster' }), {
      status: 400,
      body: 'Cluster name mismatch',
      counter: 'validation_failed',
    });
  });

  it('scenario 9: the matching cluster name gets 200', async () => {
    open.push(
      await assertAccepted(responder, req(ids, { upstreamClusterName: 'upstream-cluster' })),
    );
  });

  it('check 4 before 6: an empty tenant without the cluster name header is "Empty tenant-id"', async () => {
    await assertRejected(responder, req({ ...ids, tenant: '' }), {
      status: 400,
      body: 'Empty tenant-id header value',
      counter: 'parse_error',
    });
  });
});

describe('a responder with static validation of every id', () => {
  let responder: Responder;
  const open: FakeInitiator[] = [];
  before(async () => {
    responder = await responderOnFreePorts({
      tunnel: { ...quiet, validation: { node_id: 'n1', cluster_id: 'c1', tenant_id: 't1' } },
    });
  });
  after(async () => {
    for (const peer of open) peer.destroy();
    await responder.close({ graceMs: 0 });
  });

  it('scenario 6: a wrong node, cluster or tenant id gets 403 and validation_failed +1', async () => {
    for (const wrong of [
      { ...ids, node: 'n2' },
      { ...ids, cluster: 'c2' },
      { ...ids, tenant: 't2' },
    ]) {
      await assertRejected(responder, req(wrong), {
        status: 403,
        body: 'validation_failed',
        counter: 'validation_failed',
      });
    }
  });

  it('scenario 6: matching ids get 200', async () => {
    open.push(await assertAccepted(responder, req(ids)));
  });
});

describe('a responder that validates only the node id', () => {
  let responder: Responder;
  const open: FakeInitiator[] = [];
  before(async () => {
    responder = await responderOnFreePorts({ tunnel: { ...quiet, validation: { node_id: 'n1' } } });
  });
  after(async () => {
    for (const peer of open) peer.destroy();
    await responder.close({ graceMs: 0 });
  });

  it('scenario 7: any cluster and tenant pass', async () => {
    open.push(
      await assertAccepted(responder, req({ node: 'n1', cluster: 'any-cluster', tenant: 'any' })),
    );
  });

  it('scenario 7: a wrong node gets 403', async () => {
    await assertRejected(responder, req({ ...ids, node: 'n2' }), {
      status: 403,
      body: 'validation_failed',
      counter: 'validation_failed',
    });
  });
});

describe('a responder that validates ids against %REQ(header)%', () => {
  let responder: Responder;
  const open: FakeInitiator[] = [];
  before(async () => {
    responder = await responderOnFreePorts({
      tunnel: {
        ...quiet,
        validation: { node_id: '%REQ(x-expected-node)%', tenant_id: '%REQ(X-Expected-Tenant)%' },
      },
    });
  });
  after(async () => {
    for (const peer of open) peer.destroy();
    await responder.close({ graceMs: 0 });
  });

  it('accepts ids equal to the named headers', async () => {
    open.push(
      await assertAccepted(
        responder,
        req(ids, { extra: ['x-expected-node: n1', 'x-expected-tenant: t1'] }),
      ),
    );
  });

  it('rejects an id that differs from its header with 403', async () => {
    await assertRejected(
      responder,
      req(ids, { extra: ['x-expected-node: n2', 'x-expected-tenant: t1'] }),
      { status: 403, body: 'validation_failed', counter: 'validation_failed' },
    );
  });

  it('rejects with 403 when the expected value is missing, empty or "-"', async () => {
    for (const extra of [
      ['x-expected-tenant: t1'],
      ['x-expected-node:', 'x-expected-tenant: t1'],
      ['x-expected-node: -', 'x-expected-tenant: t1'],
    ]) {
      await assertRejected(responder, req({ ...ids, node: '-' }, { extra }), {
        status: 403,
        body: 'validation_failed',
        counter: 'validation_failed',
      });
    }
  });
});

describe('a responder with a limit of one tunnel per node', () => {
  let responder: Responder;
  const open: FakeInitiator[] = [];
  before(async () => {
    responder = await responderOnFreePorts({
      tunnel: {
        ...quiet,
        max_tunnels_per_node: 1,
        required_cluster_name: 'upstream-cluster',
        validation: { tenant_id: 't1' },
      },
    });
  });
  after(async () => {
    for (const peer of open) peer.destroy();
    await responder.close({ graceMs: 0 });
  });

  const good = (node: string) => req({ ...ids, node }, { upstreamClusterName: 'upstream-cluster' });

  it('scenario 11: the first tunnel gets 200, a second for the node 429 "rejected" with Retry-After, another node 200', async () => {
    open.push(await assertAccepted(responder, good('n1')));
    await assertRejected(responder, good('n1'), {
      status: 429,
      body: 'rejected',
      counter: 'rejected',
      headers: { 'retry-after': '10' },
    });
    open.push(await assertAccepted(responder, good('n2')));
  });

  it('scenario 11: the place is free again once the tunnel is gone', async () => {
    const closed = waitForEvent(
      responder,
      'tunnel_closed',
      (identity: { nodeId: string }) => identity.nodeId === 'n1',
    );
    open.shift()?.destroy();
    await closed;
    open.push(await assertAccepted(responder, good('n1')));
  });

  it('check 6 before 8: a cluster-name mismatch for a node at its limit is 400, not 429', async () => {
    await assertRejected(responder, req(ids, { upstreamClusterName: 'other' }), {
      status: 400,
      body: 'Cluster name mismatch',
      counter: 'validation_failed',
    });
  });

  it('check 8 before 9: a node at its limit with a wrong tenant is 429, not 403', async () => {
    await assertRejected(
      responder,
      req({ ...ids, tenant: 't2' }, { upstreamClusterName: 'upstream-cluster' }),
      { status: 429, body: 'rejected', counter: 'rejected', headers: { 'retry-after': '10' } },
    );
  });

  it('check 6a before 9: a missing cluster name with a wrong tenant is 400 parse_error', async () => {
    await assertRejected(responder, req({ ...ids, node: 'n9', tenant: 't2' }), {
      status: 400,
      body: 'Missing upstream cluster name header',
      counter: 'parse_error',
    });
  });
});

describe('the per-node limit under concurrency', () => {
  let responder: Responder;
  before(async () => {
    responder = await responderOnFreePorts({
      tunnel: { ...quiet, max_tunnels_per_node: 2, connection_limit_retry_after: '3s' },
    });
  });
  after(() => responder.close({ graceMs: 0 }));

  it('lets exactly the limit through when eight handshakes for one node arrive at once', async () => {
    const before = countsOf(responder);
    const bytes = req({ ...ids, node: 'burst' });
    const peers = await Promise.all(
      Array.from({ length: 8 }, () => FakeInitiator.connect(responder.addresses.tunnel, bytes)),
    );
    const statuses = await Promise.all(
      peers.map(async (peer) => {
        const line = (await peer.peer.readUntil('\r\n')).trim();
        return line;
      }),
    );
    const ok = statuses.filter((line) => line === 'HTTP/1.1 200 OK');
    const limited = statuses.filter((line) => line === 'HTTP/1.1 429 Too Many Requests');
    assert.deepEqual([ok.length, limited.length], [2, 6], statuses.join(' | '));
    assertMoved(responder, before, { accepted: 2, rejected: 6 });
    assert.equal(responder.stats.value('reverse_connections.nodes.burst'), 2);
    for (const peer of peers) peer.destroy();
  });

  it('sends the configured Retry-After (3 s → "3")', async () => {
    const open = [
      await assertAccepted(responder, req({ ...ids, node: 'ra' })),
      await assertAccepted(responder, req({ ...ids, node: 'ra' })),
    ];
    await assertRejected(responder, req({ ...ids, node: 'ra' }), {
      status: 429,
      body: 'rejected',
      counter: 'rejected',
      headers: { 'retry-after': '3' },
    });
    for (const peer of open) peer.destroy();
  });
});

describe('tenant isolation', () => {
  let responder: Responder;
  const open: FakeInitiator[] = [];
  before(async () => {
    responder = await responderOnFreePorts({
      enable_tenant_isolation: true,
      tunnel: { ...quiet, max_tunnels_per_node: 1 },
      egress_listeners: [{ address: '127.0.0.1:0', tenant_id_headers: ['x-tenant-id'] }],
    });
  });
  after(async () => {
    for (const peer of open) peer.destroy();
    await responder.close({ graceMs: 0 });
  });

  it('scenario 10: two tenants with the same node id are both accepted and routed separately', async () => {
    const tenants = ['t1', 't2'];
    for (const tenant of tenants) {
      open.push(await assertAccepted(responder, req({ node: 'shared', cluster: 'c1', tenant })));
    }
    const sp = 'reverse_connections';
    assert.equal(
      responder.stats.value(`${sp}.nodes.shared`),
      2,
      'the bare node gauge sums tenants',
    );
    assert.equal(responder.stats.value(`${sp}.clusters.c1`), 2);
    for (const tenant of tenants) {
      assert.equal(responder.stats.value(`${sp}.tenants.${tenant}.nodes.shared`), 1, tenant);
      assert.equal(responder.stats.value(`${sp}.tenants.${tenant}.clusters.c1`), 1, tenant);
    }
    // Each request reaches the tunnel of its own tenant; the other tenant's fake sees no byte.
    for (const [index, tenant] of tenants.entries()) {
      const reply = request(responder.addresses.egress[0]!, '/who', {
        headers: { 'x-node-id': 'shared', 'x-tenant-id': tenant },
      });
      const session = await open[index]!.serveHttp2((stream) => {
        stream.respond({ ':status': 200 });
        stream.end(`tenant ${tenant}`);
      });
      assert.equal((await reply).text, `tenant ${tenant}`);
      const other = open[1 - index]!;
      if (index === 0)
        assert.equal(await other.silentFor(50), true, 'the other tenant is not used');
      session.destroy();
    }
  });

  it('scenario 10: a request that names no tenant is not routed', async () => {
    const reply = await request(responder.addresses.egress[0]!, '/who', {
      headers: { 'x-node-id': 'shared' },
    });
    assert.equal(reply.status, 400);
  });

  it("scenario 10: an identifier containing ':' gets 400 and parse_error +1", async () => {
    for (const bad of [
      { ...ids, node: 'a:b' },
      { ...ids, cluster: 'a:b' },
      { ...ids, tenant: 'a:b' },
    ]) {
      const before = countsOf(responder);
      const peer = await FakeInitiator.connect(responder.addresses.tunnel, req(bad));
      const answer = await peer.expectRejection();
      assert.equal(answer.status, 400);
      assert.ok(
        answer.body.startsWith("Reverse tunnel identifiers must not contain ':'"),
        answer.body,
      );
      assertMoved(responder, before, { parse_error: 1 });
    }
  });

  it('scenario 11: under isolation the limit counts per tenant and node', async () => {
    const node = { node: 'limited', cluster: 'c1' };
    open.push(await assertAccepted(responder, req({ ...node, tenant: 't1' })));
    await assertRejected(responder, req({ ...node, tenant: 't1' }), {
      status: 429,
      body: 'rejected',
      counter: 'rejected',
      headers: { 'retry-after': '10' },
    });
    open.push(await assertAccepted(responder, req({ ...node, tenant: 't2' })));
  });

  it('scenario 10: isolation without a request-side tenant source fails at startup', async () => {
    await assert.rejects(
      startResponder({
        enable_tenant_isolation: true,
        tunnel_listener: { address: '127.0.0.1:0' },
        egress_listeners: [{ address: '127.0.0.1:0' }],
      }),
      (error: unknown) => error instanceof ConfigError && /tenant_id_headers/.test(error.message),
    );
  });
});
