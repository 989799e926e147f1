/**
 * Several responders (issue 5 item 5, architecture decision 7): three responders on 127.0.0.2–4
 * behind one name that a resolver the test controls answers, and one initiator that dials every
 * address. Every responder reaches the initiator; an address that leaves the answer has its tunnels
 * drained (GOAWAY), and the request in flight on it still completes.
 *
 * The three tunnel listeners share one port, since the resolver answers addresses and the port is
 * the configured entry's: the first binds 127.0.0.2:0, the others reuse its port, and the whole
 * set is tried again on a new port if one of them is taken.
 */
import assert from 'node:assert/strict';
import type { LookupAddress } from 'node:dns';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { startInitiator, type Initiator } from '../../src/initiator/initiator.ts';
import type { HostLookup } from '../../src/initiator/host-resolver.ts';
import { startResponder, type Responder } from '../../src/responder/responder.ts';
import { isRevtunError } from '../../src/shared/errors.ts';
import { makeTestPki, type TestPki } from '../helpers/certs.ts';
import { request, startNamedService, startService, type TestService } from '../helpers/http.ts';
import { tunnelsRegistered, waitForEvent } from '../helpers/tunnels.ts';

const addresses = ['127.0.0.2', '127.0.0.3', '127.0.0.4'] as const;
const name = 'responders.test';
const tunnelsPerHost = 2;
const prefix = 'downstream_reverse_connection';

function responderAt(address: string): Promise<Responder> {
  return startResponder({
    stat_prefix: 'reverse_connections',
    tunnel_listener: { address },
    egress_listeners: [{ address: '127.0.0.1:0' }],
  });
}

/** One responder per address, all on one tunnel port; a few attempts if the port is taken. */
async function respondersOnOnePort(attempts = 5): Promise<Responder[]> {
  for (let attempt = 1; ; attempt += 1) {
    const first = await responderAt(`${addresses[0]}:0`);
    const started = [first];
    try {
      for (const address of addresses.slice(1)) {
        started.push(await responderAt(`${address}:${first.addresses.tunnel.port}`));
      }
      return started;
    } catch (error) {
      await Promise.all(started.map((responder) => responder.close({ graceMs: 0 })));
      const inUse =
        isRevtunError(error) && (error.cause as NodeJS.ErrnoException)?.code === 'EADDRINUSE';
      if (!inUse || attempt >= attempts) throw error;
    }
  }
}

/** A resolver whose answer for `name` the test sets; any other name does not resolve. */
function controlledLookup(initial: readonly string[]) {
  let answer = initial;
  const lookup: HostLookup = (hostname) => {
    if (hostname !== name) {
      return Promise.reject(
        Object.assign(new Error(`ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' }),
      );
    }
    return Promise.resolve(answer.map((address): LookupAddress => ({ address, family: 4 })));
  };
  return {
    lookup,
    answer(next: readonly string[]) {
      answer = next;
    },
  };
}

/**
 * `/slow` waits until the test releases it, so a request can be in flight on a tunnel while the
 * tunnel's host is retired; everything else answers at once, naming the path.
 */
function startSlowService() {
  let arrived: () => void = () => {};
  let release: () => void = () => {};
  const slowArrived = new Promise<void>((resolve) => (arrived = resolve));
  const released = new Promise<void>((resolve) => (release = resolve));
  const service = startService((incoming: IncomingMessage, response: ServerResponse) => {
    if (incoming.url === '/slow') {
      arrived();
      void released.then(() => response.end('slow done'));
      return;
    }
    response.end(`served ${incoming.url ?? ''}`);
  });
  return { service, slowArrived, release };
}

const egressOf = (responder: Responder) => responder.addresses.egress[0]!;

/**
 * Resolves once the initiator's stat `name` is `expected`, checked now and at each of its lifecycle
 * events (the gauges move before the event is emitted); rejects after waitForEvent's deadline.
 */
async function statReaches(initiator: Initiator, name: string, expected: number): Promise<void> {
  const reached = () => initiator.stats.value(name) === expected;
  if (reached()) return;
  await waitForEvent(initiator, 'lifecycle', reached);
}
/** An initiator of `node` dialling every address `lookup` gives for the shared name, on `port`. */
function initiatorByName(
  node: string,
  port: number,
  service: TestService,
  lookup: HostLookup,
): Promise<Initiator> {
  return startInitiator(
    {
      node_id: node,
      cluster_id: 'edges',
      tenant_id: 't1',
      stat_prefix: prefix,
      // A name is beyond loopback as far as the security check can tell.
      allow_insecure: true,
      remote_clusters: [
        {
          name: 'upstream-cluster',
          hosts: [`${name}:${port}`],
          tunnels_per_host: tunnelsPerHost,
          resolve_interval: '1h', // the tests re-resolve with resolveHosts()
        },
      ],
      local_routes: [{ prefix: '/', target: service.target }],
    },
    { lookup },
  );
}
/** Sends `path` for `node` through each responder's egress listener; each must answer 200. */
async function servedThrough(list: readonly Responder[], path: string, node: string) {
  for (const responder of list) {
    const reply = await request(egressOf(responder), path, toNode(node));
    assert.equal(reply.status, 200, `through ${responder.addresses.tunnel.host}`);
  }
}
const toNode = (node: string) => ({ headers: { 'x-node-id': node }, timeoutMs: 10_000 });

describe('an initiator dialling every responder behind one name', () => {
  let responders: Responder[] = [];
  let port: number;
  let slow: ReturnType<typeof startSlowService>;
  let service: TestService;
  const dns = controlledLookup(addresses);
  const initiators: Initiator[] = [];

  before(async () => {
    responders = await respondersOnOnePort();
    port = responders[0]!.addresses.tunnel.port;
    slow = startSlowService();
    service = await slow.service;
    const registered = responders.map((responder) =>
      tunnelsRegistered(responder, 'edge-1', tunnelsPerHost),
    );
    initiators.push(await initiatorByName('edge-1', port, service, dns.lookup));
    await Promise.all(registered);
  });

  after(async () => {
    slow?.release();
    for (const initiator of initiators) await initiator.close({ graceMs: 0 });
    for (const responder of responders) await responder.close({ graceMs: 0 });
    await service?.close();
  });

  it('keeps tunnels_per_host tunnels to every address, each named address:port in the stats', async () => {
    const [edge] = initiators;
    for (const address of addresses) {
      await statReaches(edge!, `${prefix}.host.${address}:${port}.connected`, tunnelsPerHost);
      assert.equal(
        edge!.stats.value(`${prefix}.host.${address}:${port}.connected`),
        tunnelsPerHost,
      );
    }
    assert.equal(
      edge!.stats.value(`${prefix}.cluster.upstream-cluster.connected`),
      tunnelsPerHost * addresses.length,
    );
    assert.equal(edge!.stats.value(`${prefix}.host.${name}:${port}.connected`), undefined);
  });

  it('is reached through the egress listener of every responder', async () => {
    for (const responder of responders) {
      const reply = await request(egressOf(responder), '/hello', toNode('edge-1'));
      assert.equal(reply.status, 200, `through ${responder.addresses.tunnel.host}`);
      assert.equal(reply.text, 'served /hello');
    }
  });

  it('keeps a list of hosts working: IP literals, one host each', async () => {
    const registered = responders.map((responder) => tunnelsRegistered(responder, 'edge-2', 1));
    initiators.push(
      await startInitiator({
        node_id: 'edge-2',
        cluster_id: 'edges',
        tenant_id: 't1',
        stat_prefix: prefix,
        remote_clusters: [
          { name: 'upstream-cluster', hosts: addresses.map((address) => `${address}:${port}`) },
        ],
        local_routes: [{ prefix: '/', target: service.target }],
      }),
    );
    await Promise.all(registered);
    await servedThrough(responders, '/listed', 'edge-2');
  });

  it('drains the tunnels of an address that leaves the answer, finishing the request in flight on it', async () => {
    const [edge] = initiators;
    const retired = responders[2]!;
    const kept = responders.slice(0, 2);
    // A request is in flight on the responder about to be retired.
    const inFlight = request(egressOf(retired), '/slow', toNode('edge-1'));
    await slow.slowArrived;
    let closed = 0;
    const allClosed = waitForEvent(
      retired,
      'tunnel_closed',
      (identity: { nodeId: string }) => identity.nodeId === 'edge-1' && ++closed >= tunnelsPerHost,
    );
    dns.answer(addresses.slice(0, 2));
    await edge!.resolveHosts();
    // The other two keep serving while the retired host drains.
    await servedThrough(kept, '/during', 'edge-1');
    // The tunnel carrying /slow drains (GOAWAY) instead of closing under the request.
    assert.ok(closed < tunnelsPerHost, `${closed} of the retired host's tunnels closed already`);
    slow.release();
    const reply = await inFlight;
    assert.equal(reply.status, 200);
    assert.equal(reply.text, 'slow done');
    await allClosed;
    await statReaches(edge!, `${prefix}.host.${addresses[2]}:${port}.connected`, 0);
    assert.equal(edge!.stats.value(`${prefix}.host.${addresses[2]}:${port}.connected`), 0);
    assert.equal(
      edge!.stats.value(`${prefix}.cluster.upstream-cluster.connected`),
      tunnelsPerHost * 2,
    );
    await servedThrough(kept, '/after', 'edge-1');
  });

  it('dials an address again once it comes back in the answer', async () => {
    const [edge] = initiators;
    const back = responders[2]!;
    const registered = tunnelsRegistered(back, 'edge-1', tunnelsPerHost);
    dns.answer(addresses);
    await edge!.resolveHosts();
    await registered;
    const reply = await request(egressOf(back), '/back', toNode('edge-1'));
    assert.equal(reply.status, 200);
  });

  it('closes the tunnels to every address on close, those added by a re-resolution too', async () => {
    const [edge] = initiators;
    const closedEverywhere = responders.map((responder) => {
      let closed = 0;
      return waitForEvent(
        responder,
        'tunnel_closed',
        (identity: { nodeId: string }) =>
          identity.nodeId === 'edge-1' && ++closed >= tunnelsPerHost,
      );
    });
    await edge!.close();
    await Promise.all(closedEverywhere);
    assert.equal(edge!.stats.value(`${prefix}.cluster.upstream-cluster.connected`), 0);
  });
});

describe('TLS to a host given by name', () => {
  let pki: TestPki;
  let service: TestService;
  const running: Array<{ close(options?: { graceMs?: number }): Promise<void> }> = [];

  before(async () => {
    pki = await makeTestPki();
    service = await startNamedService('tls-edge');
  });

  after(async () => {
    for (const item of running.reverse()) await item.close({ graceMs: 0 });
    await service?.close();
    await pki?.remove();
  });

  it('dials the resolved address but checks the certificate against the configured name', async () => {
    // The certificate names responder.revtun.test, 127.0.0.1 and ::1, not 127.0.0.2: a check
    // against the dialled address would fail.
    const responder = await startResponder({
      tunnel_listener: {
        address: '127.0.0.2:0',
        tls: { cert_file: pki.server.certFile, key_file: pki.server.keyFile },
      },
      egress_listeners: [{ address: '127.0.0.1:0' }],
    });
    running.push(responder);
    const registered = tunnelsRegistered(responder, 'tls-edge');
    const lookup: HostLookup = (hostname) =>
      hostname === 'responder.revtun.test'
        ? Promise.resolve([{ address: '127.0.0.2', family: 4 }])
        : Promise.reject(new Error(`ENOTFOUND ${hostname}`));
    const initiator = await startInitiator(
      {
        node_id: 'tls-edge',
        cluster_id: 'edges',
        tenant_id: 't1',
        remote_clusters: [
          {
            name: 'upstream-cluster',
            hosts: [`responder.revtun.test:${responder.addresses.tunnel.port}`],
            tls: { ca_file: pki.ca.certFile },
          },
        ],
        local_routes: [{ prefix: '/', target: service.target }],
      },
      { lookup },
    );
    running.push(initiator);
    await registered;
    const reply = await request(egressOf(responder), '/tls', toNode('tls-edge'));
    assert.equal(reply.status, 200);
    assert.equal(reply.headers['x-served-by'], 'tls-edge');
  });
});

describe('a responder that drains while the initiator reaches others (issue 5 item 4)', () => {
  let responders: Responder[] = [];
  let slow: ReturnType<typeof startSlowService>;
  let service: TestService;
  let initiator: Initiator | undefined;
  let port: number;

  before(async () => {
    responders = await respondersOnOnePort();
    port = responders[0]!.addresses.tunnel.port;
    slow = startSlowService();
    service = await slow.service;
    const registered = responders.map((responder) =>
      tunnelsRegistered(responder, 'edge-d', tunnelsPerHost),
    );
    initiator = await initiatorByName('edge-d', port, service, controlledLookup(addresses).lookup);
    await Promise.all(registered);
  });

  after(async () => {
    slow?.release();
    await initiator?.close({ graceMs: 0 });
    for (const responder of responders) await responder.close({ graceMs: 0 });
    await service?.close();
  });

  it('serves through the other responders during the drain, finishes the request on the draining one', async (t) => {
    const edge = initiator!;
    const draining = responders[1]!;
    const others = [responders[0]!, responders[2]!];
    const drainingHost = `${prefix}.host.${addresses[1]}:${port}`;
    const inFlight = request(egressOf(draining), '/slow', toNode('edge-d'));
    await slow.slowArrived;
    const started = Date.now();
    const closed = draining.close({ graceMs: 10_000 });
    // While the drain holds /slow, the initiator's other responders serve; its dials to the
    // draining one fail (the tunnel listener is closed) and put only that host in backoff.
    await statReaches(edge, `${drainingHost}.backoff`, 1);
    const statuses: number[] = [];
    for (let i = 0; i < 40; i += 1) {
      const reply = await request(egressOf(others[i % 2]!), `/during-${i}`, toNode('edge-d'));
      statuses.push(reply.status);
    }
    assert.deepEqual(
      new Set(statuses),
      new Set([200]),
      `statuses during the drain: ${statuses.join(' ')}`,
    );
    for (const address of [addresses[0], addresses[2]]) {
      assert.equal(edge.stats.value(`${prefix}.host.${address}:${port}.connected`), tunnelsPerHost);
    }
    slow.release();
    const reply = await inFlight;
    assert.equal(reply.status, 200);
    assert.equal(reply.text, 'slow done');
    await closed;
    const drainMs = Date.now() - started;
    await statReaches(edge, `${drainingHost}.connected`, 0);
    await servedThrough(others, '/after', 'edge-d');
    t.diagnostic(
      `drain of ${addresses[1]}: ${drainMs} ms with /slow in flight; ` +
        `${statuses.length} requests through the other two during it, all 200`,
    );
  });
});
