/**
 * Tenant isolation on the egress listener (issue 4): a property test over generated callers and
 * routing headers, proving that a caller in tenant A never reaches a node of tenant B.
 *
 * One responder with `enable_tenant_isolation`, two egress listeners with the same callers (0
 * refuses with 403, 1 with 404), and five real initiators whose ids overlap across tenants on
 * purpose:
 *
 *   tA: n1 (cluster c1), n2 (cluster c2)
 *   tB: n1 (cluster c1), n3 (cluster c3), c2 (cluster c9)
 *
 * so the same node id lives in two tenants, and tB's node "c2" has the id of tA's cluster "c2".
 * Each initiator has its own local service that answers with its tenant and node, so the test
 * knows which node served a request. Requests are sent with raw header arrays, so that repeated
 * headers really arrive on separate lines.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { startInitiator, type Initiator } from '../../src/initiator/initiator.ts';
import type { Identity } from '../../src/protocol/handshake.ts';
import { startResponder, type Responder } from '../../src/responder/responder.ts';
import type { HostPort } from '../../src/shared/address.ts';
import { startService, type TestService } from '../helpers/http.ts';
import { waitForEvent } from '../helpers/tunnels.ts';

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');
const newToken = () => randomBytes(24).toString('base64url');

interface NodeSpec {
  readonly tenant: string;
  readonly node: string;
  readonly cluster: string;
}

const topology: readonly NodeSpec[] = [
  { tenant: 'tA', node: 'n1', cluster: 'c1' },
  { tenant: 'tA', node: 'n2', cluster: 'c2' },
  { tenant: 'tB', node: 'n1', cluster: 'c1' },
  { tenant: 'tB', node: 'n3', cluster: 'c3' },
  { tenant: 'tB', node: 'c2', cluster: 'c9' },
];
const keyOf = (spec: { tenant: string; node: string }) => `${spec.tenant}/${spec.node}`;

type TokenKind = 'a' | 'b' | 'any' | 'bad' | 'none';
type CallerName = 'a' | 'b' | 'any';

/** The tenants each caller's allow-list names; `any` has none, so it may reach every tenant. */
const callerTenants: Readonly<Record<CallerName, readonly string[] | undefined>> = {
  a: ['tA'],
  b: ['tB'],
  any: undefined,
};

/** The listener's host id headers (the default order), then its tenant header. */
const hostIdHeaders = ['x-node-id', 'x-remote-node-id', 'x-cluster-id', 'x-dst-cluster-uuid'];
const tenantHeader = 'x-tenant-id';
const routingHeaders = [...hostIdHeaders, tenantHeader];

/** What a local service answers: who it is, and which header names reached it. */
interface Served {
  readonly tenant: string;
  readonly node: string;
  readonly cluster: string;
  readonly headerNames: readonly string[];
}

interface Answer {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: Buffer;
}

/**
 * One request with its head given as raw `[name, value]` lines (node:http sends an array of
 * headers as is: each pair is a line, duplicates included, and no Host is added for it). One
 * connection per request; rejects after `timeoutMs`, so a hang is a failure, not a stuck test.
 */
function send(
  target: HostPort,
  lines: ReadonlyArray<readonly [string, string]>,
  timeoutMs = 5_000,
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const outgoing = http.request(
      {
        host: target.host,
        port: target.port,
        path: '/',
        method: 'GET',
        headers: [['host', 'egress'] as const, ...lines].flat(),
        agent: false,
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('error', reject);
        response.on('end', () => {
          clearTimeout(timer);
          resolve({
            status: response.statusCode ?? 0,
            headers: response.headers,
            body: Buffer.concat(chunks),
          });
        });
      },
    );
    const timer = setTimeout(() => {
      const error = new Error(`no answer in ${timeoutMs} ms to ${JSON.stringify(lines)}`);
      reject(error);
      outgoing.destroy(error);
    }, timeoutMs);
    outgoing.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    outgoing.end();
  });
}

interface Request {
  readonly listener: 0 | 1;
  readonly token: TokenKind;
  /** Routing header lines, in the order sent (names possibly in upper case). */
  readonly lines: ReadonlyArray<readonly [string, string]>;
}

/** A header value as the server reads it: RFC 9110 §5.5, leading and trailing OWS is not part of it. */
const fieldValue = (raw: string) => raw.replace(/^[ \t]+|[ \t]+$/g, '');

/** The outcome the listener's documented rules give for a request, and the nodes that may serve it. */
interface Expected {
  readonly status: number;
  readonly servers: readonly string[];
  readonly why: string;
}

/**
 * The rules of src/responder/egress-listener.ts, as its header comment and config docs state them:
 * 401 without a caller; 400 if a routing header is repeated or holds a list; the host id is the
 * first host id header with a non-empty value, else 400; the tenant is the tenant header's value,
 * 400 if none or "-"; within that tenant, a cluster id picks one of its nodes the caller may
 * reach, otherwise the id names a node; none reachable: `refused_status` 404 answers 404, a known
 * id 403, else 503.
 */
function expectedOutcome(request: Request): Expected {
  if (request.token === 'none' || request.token === 'bad') {
    return { status: 401, servers: [], why: 'no valid caller' };
  }
  const caller = request.token;
  const values = (name: string) =>
    request.lines.filter(([line]) => line.toLowerCase() === name).map(([, v]) => fieldValue(v));
  for (const name of routingHeaders) {
    const seen = values(name);
    if (seen.length > 1 || seen.join(', ').includes(',')) {
      return { status: 400, servers: [], why: `${name} repeated` };
    }
  }
  const firstValue = (names: readonly string[]) => {
    for (const name of names) {
      const value = values(name)[0]?.trim();
      if (value !== undefined && value !== '') return value;
    }
    return undefined;
  };
  const hostId = firstValue(hostIdHeaders);
  if (hostId === undefined) return { status: 400, servers: [], why: 'no host id' };
  const tenant = firstValue([tenantHeader]);
  if (tenant === undefined || tenant === '-') return { status: 400, servers: [], why: 'no tenant' };
  const allowed = (spec: NodeSpec) => callerTenants[caller]?.includes(spec.tenant) ?? true;
  const cluster = topology.filter((spec) => spec.tenant === tenant && spec.cluster === hostId);
  const named =
    cluster.length > 0
      ? cluster
      : topology.filter((spec) => spec.tenant === tenant && spec.node === hostId);
  const reachable = named.filter(allowed);
  if (reachable.length > 0) {
    return { status: 200, servers: reachable.map(keyOf), why: `${tenant}/${hostId}` };
  }
  const status = request.listener === 1 ? 404 : named.length > 0 ? 403 : 503;
  return { status, servers: [], why: `${tenant}/${hostId} not reachable by ${caller}` };
}

const idPool = ['tA', 'tB', 'n1', 'n2', 'n3', 'c1', 'c2', 'c3', 'c9'] as const;
const crafted = [
  'tA:n1',
  'tB:n1',
  ' tA',
  'tB\t',
  'TA',
  'tb',
  '',
  '-',
  ' - ',
  'n'.repeat(129),
  'x'.repeat(600),
  'tA,tB',
  'n1, n2',
  'tA;tB',
  'n1 n2',
] as const;
const headerValue = fc.oneof(
  { weight: 5, arbitrary: fc.constantFrom(...idPool) },
  { weight: 2, arbitrary: fc.constantFrom(...crafted) },
);

/** Absent, present once, or repeated (2 or 3 lines); `onceWeight` biases towards present. */
const occurrences = (onceWeight: number) =>
  fc.oneof(
    { weight: 4, arbitrary: fc.constant<string[]>([]) },
    { weight: onceWeight, arbitrary: fc.array(headerValue, { minLength: 1, maxLength: 1 }) },
    { weight: 1, arbitrary: fc.array(headerValue, { minLength: 2, maxLength: 3 }) },
  );

/** Per routing header (in `routingHeaders` order), the values of its lines. */
type HeaderValues = readonly [string[], string[], string[], string[], string[]];

/** Anything: every header absent, once or repeated, any value; any token. */
const freeShape = fc.record({
  token: fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom<TokenKind>('a', 'b', 'any') },
    { weight: 1, arbitrary: fc.constantFrom<TokenKind>('bad', 'none') },
  ),
  headers: fc.tuple(
    occurrences(3), // x-node-id
    occurrences(1), // x-remote-node-id
    occurrences(3), // x-cluster-id
    occurrences(1), // x-dst-cluster-uuid
    occurrences(12), // x-tenant-id
  ),
});

/**
 * Close to a good request, so that many are served: a valid caller, one host id header with an id
 * of the pool, one tenant line, and maybe a second host id header (which must not win over the
 * first in the listener's order, whatever order the lines come in).
 */
const focusedShape = fc
  .record({
    token: fc.constantFrom<TokenKind>('a', 'b', 'any'),
    primary: fc.integer({ min: 0, max: hostIdHeaders.length - 1 }),
    id: fc.constantFrom(...idPool),
    secondary: fc.oneof(
      { weight: 2, arbitrary: fc.constant(null) },
      {
        weight: 1,
        arbitrary: fc.record({
          index: fc.integer({ min: 0, max: hostIdHeaders.length - 1 }),
          value: headerValue,
        }),
      },
    ),
    tenant: fc.oneof(
      { weight: 6, arbitrary: fc.constantFrom('tA', 'tB') },
      { weight: 1, arbitrary: fc.constantFrom(' tA', 'tB\t', 'TA', 'tA:n1') },
    ),
  })
  .map(({ token, primary, id, secondary, tenant }) => {
    const headers: HeaderValues = [[], [], [], [], [tenant]];
    headers[primary]!.push(id);
    if (secondary !== null) headers[secondary.index]!.push(secondary.value);
    return { token, headers };
  });

const maxLines = 15;

const requestArbitrary: fc.Arbitrary<Request> = fc
  .record({
    listener: fc.constantFrom<0 | 1>(0, 1),
    shape: fc.oneof({ weight: 1, arbitrary: freeShape }, { weight: 1, arbitrary: focusedShape }),
    // One sort key and one spelling per line: the order and case of the lines must not matter.
    order: fc.array(fc.integer({ min: 0, max: 1000 }), {
      minLength: maxLines,
      maxLength: maxLines,
    }),
    upper: fc.array(fc.boolean(), { minLength: maxLines, maxLength: maxLines }),
  })
  .map(({ listener, shape, order, upper }) => {
    const keyed: Array<{ key: number; line: readonly [string, string] }> = [];
    shape.headers.forEach((values, index) => {
      const name = routingHeaders[index] as string;
      for (const value of values) {
        const at = keyed.length;
        const spelled = upper[at] === true ? name.toUpperCase() : name;
        keyed.push({ key: order[at] ?? 0, line: [spelled, value] });
      }
    });
    keyed.sort((x, y) => x.key - y.key);
    return { listener, token: shape.token, lines: keyed.map(({ line }) => line) };
  });

describe('tenant isolation on the egress listener', () => {
  const tokens: Record<CallerName, string> = { a: newToken(), b: newToken(), any: newToken() };
  const badToken = newToken();
  let responder: Responder;
  const services: TestService[] = [];
  const initiators: Initiator[] = [];
  /** Listener 0 refuses with 403, listener 1 with 404. */
  const egress = (index: 0 | 1): HostPort => responder.addresses.egress[index]!;

  const authorization = (token: TokenKind): Array<readonly [string, string]> => {
    if (token === 'none') return [];
    return [['authorization', `Bearer ${token === 'bad' ? badToken : tokens[token]}`]];
  };
  const sendAs = (request: Request) =>
    send(egress(request.listener), [...authorization(request.token), ...request.lines]);

  before(async () => {
    const callers = [
      { name: 'a', token_sha256: sha256(tokens.a), allow: { tenants: ['tA'] } },
      { name: 'b', token_sha256: sha256(tokens.b), allow: { tenants: ['tB'] } },
      { name: 'any', token_sha256: sha256(tokens.any) },
    ];
    responder = await startResponder({
      stat_prefix: 'reverse_connections',
      enable_tenant_isolation: true,
      tunnel_listener: { address: '127.0.0.1:0' },
      egress_listeners: [
        { address: '127.0.0.1:0', tenant_id_headers: [tenantHeader], callers },
        {
          address: '127.0.0.1:0',
          stat_prefix: 'egress_404',
          tenant_id_headers: [tenantHeader],
          callers,
          refused_status: 404,
        },
      ],
    });
    // Counted by tenant and node: the helper's tunnelsRegistered keys by node id only, and n1
    // exists in both tenants.
    const pending = new Set(topology.map(keyOf));
    const registered = waitForEvent<[Identity]>(
      responder,
      'tunnel_setup',
      (identity) => {
        pending.delete(keyOf({ tenant: identity.tenantId, node: identity.nodeId }));
        return pending.size === 0;
      },
      10_000,
    );
    // A failure to start must not leave the wait's rejection unhandled.
    registered.catch(() => {});
    for (const spec of topology) {
      const service = await startService((req, res) => {
        req.resume();
        req.on('end', () => {
          const body: Served = { ...spec, headerNames: Object.keys(req.headers) };
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify(body));
        });
      });
      services.push(service);
      initiators.push(
        await startInitiator({
          node_id: spec.node,
          cluster_id: spec.cluster,
          tenant_id: spec.tenant,
          stat_prefix: 'downstream_reverse_connection',
          remote_clusters: [
            {
              name: 'upstream-cluster',
              hosts: [`127.0.0.1:${responder.addresses.tunnel.port}`],
              tunnels_per_host: 1,
            },
          ],
          local_routes: [{ prefix: '/', target: service.target }],
        }),
      );
    }
    await registered;
    assert.deepEqual(
      responder
        .tunnels()
        .map((entry) => `${entry.tenantId}/${entry.nodeId}:${entry.clusterId}`)
        .sort(),
      topology.map((spec) => `${keyOf(spec)}:${spec.cluster}`).sort(),
    );
  });

  after(async () => {
    for (const initiator of initiators) await initiator.close();
    await responder?.close();
    for (const service of services) await service.close();
  });

  const served = (answer: Answer): Served => JSON.parse(answer.body.toString('utf8')) as Served;

  it('routes the same ids to different nodes by tenant (the examples the property generalises)', async () => {
    const cases: Array<{ caller: CallerName; tenant: string; header: string; id: string }> = [
      { caller: 'a', tenant: 'tA', header: 'x-node-id', id: 'n1' },
      { caller: 'b', tenant: 'tB', header: 'x-node-id', id: 'n1' },
      { caller: 'any', tenant: 'tA', header: 'x-node-id', id: 'n1' },
      { caller: 'any', tenant: 'tB', header: 'x-node-id', id: 'n1' },
      // c2 is a cluster in tA (node n2) and a node in tB.
      { caller: 'any', tenant: 'tA', header: 'x-cluster-id', id: 'c2' },
      { caller: 'any', tenant: 'tB', header: 'x-cluster-id', id: 'c2' },
      { caller: 'any', tenant: 'tB', header: 'x-node-id', id: 'c2' },
      { caller: 'b', tenant: 'tB', header: 'x-dst-cluster-uuid', id: 'c9' },
    ];
    for (const { caller, tenant, header, id } of cases) {
      const request: Request = {
        listener: 0,
        token: caller,
        lines: [
          [header, id],
          [tenantHeader, tenant],
        ],
      };
      const answer = await sendAs(request);
      const expected = expectedOutcome(request);
      assert.equal(answer.status, 200, `${caller} → ${tenant}/${id}: ${answer.body.toString()}`);
      assert.ok(
        expected.servers.includes(keyOf(served(answer))),
        `${caller} → ${tenant}/${id} served by ${keyOf(served(answer))}, expected one of ${expected.servers.join(', ')}`,
      );
    }
  });

  it('never lets a caller reach another tenant, whatever the ids and headers (property)', async (t) => {
    const statuses = new Map<string, number>();
    const servedBy = new Map<string, number>();
    const started = Date.now();
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(requestArbitrary, async (request) => {
        const answer = await sendAs(request);
        runs += 1;
        const label = `listener ${request.listener} ${answer.status}`;
        statuses.set(label, (statuses.get(label) ?? 0) + 1);
        const expected = expectedOutcome(request);
        const text = answer.body.toString('utf8');
        const context = `${JSON.stringify(request)} → ${answer.status} ${JSON.stringify(text)}`;
        if (answer.status >= 200 && answer.status < 300) {
          const by = served(answer);
          servedBy.set(keyOf(by), (servedBy.get(keyOf(by)) ?? 0) + 1);
          // (1) The request named exactly one tenant, and that is the serving node's tenant.
          const tenants = request.lines
            .filter(([name]) => name.toLowerCase() === tenantHeader)
            .map(([, value]) => fieldValue(value));
          assert.deepEqual(tenants, [by.tenant], `(1) tenant: ${context}`);
          // (2) The caller may reach that tenant.
          assert.ok(
            request.token === 'a' || request.token === 'b' || request.token === 'any',
            `(2) served without a valid caller: ${context}`,
          );
          const allowList = callerTenants[request.token];
          assert.ok(
            allowList === undefined || allowList.includes(by.tenant),
            `(2) caller ${request.token} reached tenant ${by.tenant}: ${context}`,
          );
          // (3) The serving node is the node, or a node of the cluster, that the first host id
          // header names, within that tenant.
          const hostId = hostIdHeaders
            .map((name) =>
              request.lines
                .filter(([line]) => line.toLowerCase() === name)
                .map(([, value]) => fieldValue(value)),
            )
            .find((values) => values.length > 0 && values[0] !== '')?.[0];
          assert.ok(
            hostId === by.node || hostId === by.cluster,
            `(3) served by ${keyOf(by)} (cluster ${by.cluster}) for host id ${hostId}: ${context}`,
          );
          // Hygiene: the service sees neither the credential nor how it was routed.
          for (const name of ['authorization', ...routingHeaders]) {
            assert.ok(!by.headerNames.includes(name), `${name} reached the service: ${context}`);
          }
        } else {
          assert.ok(
            [400, 401, 403, 404, 503].includes(answer.status),
            `unexpected status: ${context}`,
          );
        }
        // The documented rules give exactly this answer (and, for a 2xx, one of these nodes).
        assert.equal(answer.status, expected.status, `model (${expected.why}): ${context}`);
        if (expected.status === 200) {
          assert.ok(
            expected.servers.includes(keyOf(served(answer))),
            `model: served by ${keyOf(served(answer))}, expected one of ${expected.servers.join(', ')}: ${context}`,
          );
        }
      }),
      { numRuns: 500, includeErrorInReport: true },
    );
    const byStatus = [...statuses].sort().map(([label, count]) => `${label}: ${count}`);
    const byNode = [...servedBy].sort().map(([node, count]) => `${node}: ${count}`);
    t.diagnostic(
      `${runs} requests in ${Date.now() - started} ms; ${byStatus.join(', ')}; served by ${byNode.join(', ')}`,
    );
  });

  it('answers caller a naming tenant tB with exactly the configured refused status', async () => {
    for (const [header, id] of [
      ['x-node-id', 'n1'],
      ['x-node-id', 'n3'],
      ['x-node-id', 'c2'],
      ['x-cluster-id', 'c1'],
      ['x-cluster-id', 'c9'],
    ] as const) {
      const lines = [
        ['authorization', `Bearer ${tokens.a}`],
        [header, id],
        [tenantHeader, 'tB'],
      ] as const;
      const refused403 = await send(egress(0), lines);
      assert.equal(refused403.status, 403, `${header}: ${id}`);
      assert.equal(refused403.body.toString(), `caller a may not reach host id ${id}\n`);
      const refused404 = await send(egress(1), lines);
      assert.equal(refused404.status, 404, `${header}: ${id}`);
    }
  });

  it('with refused_status 404, answers a refused caller exactly as for a node that does not exist', async () => {
    const withoutDate = (answer: Answer) => {
      const headers = { ...answer.headers };
      delete headers.date;
      return { status: answer.status, headers, body: answer.body.toString('latin1') };
    };
    // Each id exists in tB (refused to caller a) and not in tA (tA's c2 is a cluster: not here),
    // nor in a tenant nobody uses.
    for (const [header, id] of [
      ['x-node-id', 'n3'],
      ['x-cluster-id', 'c3'],
      ['x-remote-node-id', 'n3'],
      ['x-cluster-id', 'c9'],
    ] as const) {
      const asA = (tenant: string) =>
        send(egress(1), [
          ['authorization', `Bearer ${tokens.a}`],
          [header, id],
          [tenantHeader, tenant],
        ]);
      const refused = await asA('tB');
      const missingInOwnTenant = await asA('tA');
      const missingTenant = await asA('tZ');
      const missingForAny = await send(egress(1), [
        ['authorization', `Bearer ${tokens.any}`],
        [header, id],
        [tenantHeader, 'tZ'],
      ]);
      assert.equal(refused.status, 404);
      assert.equal(refused.body.toString(), `no route for host id ${id}\n`);
      assert.deepEqual(withoutDate(refused), withoutDate(missingInOwnTenant), `${header}: ${id}`);
      assert.deepEqual(withoutDate(refused), withoutDate(missingTenant), `${header}: ${id}`);
      assert.deepEqual(withoutDate(refused), withoutDate(missingForAny), `${header}: ${id}`);
    }
  });
});
