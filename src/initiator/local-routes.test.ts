import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { pino } from 'pino';
import { initiatorSchema, type InitiatorConfigInput } from '../config/schema.ts';
import { silentLogger, type Logger } from '../shared/logger.ts';
import { maxRegexPathLength } from '../shared/route-regex.ts';
import { LocalRouteTable, hostOf, type LocalEndpoint } from './local-routes.ts';

type RouteInput = NonNullable<InitiatorConfigInput['local_routes']>[number];

/** A fake client: which origin and protocol it was made for. */
interface FakeClient {
  readonly origin: string;
  readonly protocol: string;
  closed: boolean;
  destroyed: boolean;
}

interface TableOptions {
  readonly now?: () => number;
  readonly logger?: Logger;
}

function table(routes: RouteInput[], options: TableOptions = {}) {
  const config = initiatorSchema.parse({
    node_id: 'n',
    cluster_id: 'c',
    tenant_id: 't',
    remote_clusters: [{ name: 'r', hosts: ['127.0.0.1:1'] }],
    local_routes: routes,
  });
  const clients: FakeClient[] = [];
  const routeTable = new LocalRouteTable<FakeClient>(config.local_routes, {
    createClient: (origin, route) => {
      const client = { origin, protocol: route.protocol, closed: false, destroyed: false };
      clients.push(client);
      return client;
    },
    closeClient: (client) => {
      client.closed = true;
      return Promise.resolve();
    },
    destroyClient: (client) => {
      client.destroyed = true;
    },
    logger: options.logger ?? silentLogger,
    ...(options.now === undefined ? {} : { now: options.now }),
  });
  return { routeTable, clients };
}

/** The origin a route's next pick goes to. */
function next(routeTable: LocalRouteTable<FakeClient>, path = '/'): string | undefined {
  return routeTable.match(path, undefined)?.pick()?.origin;
}

function endpointOf(routeTable: LocalRouteTable<FakeClient>, origin: string, path = '/') {
  for (let i = 0; i < 100; i += 1) {
    const endpoint = routeTable.match(path, undefined)?.pick();
    if (endpoint?.origin === origin) return endpoint;
  }
  throw new Error(`no pick of ${origin} in 100 tries`);
}

function failTimes(endpoint: LocalEndpoint<FakeClient>, times: number): void {
  for (let i = 0; i < times; i += 1) endpoint.failed();
}

/** A logger whose lines are kept, parsed. */
function recordingLogger(): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n')) {
        if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
      }
      done();
    },
  });
  return { logger: pino({ level: 'info' }, sink), lines };
}

const a = 'http://127.0.0.1:8081';
const b = 'http://127.0.0.1:8082';
const c = 'http://127.0.0.1:8083';

describe('LocalRouteTable matching', () => {
  it('takes the first route that matches, in order', () => {
    const { routeTable } = table([
      { path: '/api/health', target: a },
      { prefix: '/api', target: b },
      { prefix: '/', target: c },
    ]);
    assert.equal(next(routeTable, '/api/health'), a);
    assert.equal(next(routeTable, '/api/health/deep'), b);
    assert.equal(next(routeTable, '/apix'), b);
    assert.equal(next(routeTable, '/other?x=1'), c);
  });

  it('matches on the path without its query string', () => {
    const { routeTable } = table([{ path: '/exact', target: a }]);
    assert.equal(next(routeTable, '/exact?q=/elsewhere'), a);
    assert.equal(routeTable.match('/exact/more', undefined), undefined);
  });

  it('anchors a regex at both ends of the path', () => {
    const { routeTable } = table([{ regex: '/v[0-9]+/items', target: a }]);
    assert.equal(next(routeTable, '/v2/items'), a);
    assert.equal(next(routeTable, '/v2/items?page=3'), a);
    assert.equal(routeTable.match('/v2/items/1', undefined), undefined);
    assert.equal(routeTable.match('/x/v2/items', undefined), undefined);
  });

  it('keeps a top-level alternation anchored on both sides', () => {
    const { routeTable } = table([{ regex: '/a|/b', target: a }]);
    assert.equal(next(routeTable, '/a'), a);
    assert.equal(next(routeTable, '/b'), a);
    assert.equal(routeTable.match('/ab', undefined), undefined);
    assert.equal(routeTable.match('/b/c', undefined), undefined);
  });

  it('never matches a regex route on a path longer than the regex cap', () => {
    const { routeTable } = table([{ regex: '/.*', target: a }]);
    assert.equal(next(routeTable, `/${'x'.repeat(maxRegexPathLength - 1)}`), a);
    assert.equal(routeTable.match(`/${'x'.repeat(maxRegexPathLength)}`, undefined), undefined);
  });

  it('matches a host case-insensitively with the port stripped', () => {
    const { routeTable } = table([
      { prefix: '/', host: 'App.Example.com', target: a },
      { prefix: '/', host: '[::1]', target: b },
      { prefix: '/', target: c },
    ]);
    assert.equal(routeTable.match('/', 'app.example.com')?.pick()?.origin, a);
    assert.equal(routeTable.match('/', 'APP.EXAMPLE.COM:8443')?.pick()?.origin, a);
    assert.equal(routeTable.match('/', '[::1]:80')?.pick()?.origin, b);
    assert.equal(routeTable.match('/', 'other.example.com')?.pick()?.origin, c);
    assert.equal(routeTable.match('/', undefined)?.pick()?.origin, c);
  });

  it('matches a wildcard host on any name below the domain, but not the domain itself', () => {
    const { routeTable } = table([{ prefix: '/', host: '*.example.com', target: a }]);
    assert.equal(routeTable.match('/', 'a.example.com')?.pick()?.origin, a);
    assert.equal(routeTable.match('/', 'a.b.example.com:81')?.pick()?.origin, a);
    assert.equal(routeTable.match('/', 'example.com'), undefined);
    assert.equal(routeTable.match('/', '.example.com'), undefined);
    assert.equal(routeTable.match('/', 'badexample.com'), undefined);
    assert.equal(routeTable.match('/', undefined), undefined);
  });

  it('strips the port of an authority, IPv6 literals included', () => {
    assert.equal(hostOf('Example.COM:8080'), 'example.com');
    assert.equal(hostOf('example.com'), 'example.com');
    assert.equal(hostOf('[2001:DB8::1]:443'), '[2001:db8::1]');
    assert.equal(hostOf('[::1]'), '[::1]');
  });

  it('describes each route as logs name it', () => {
    const { routeTable } = table([
      { prefix: '/p', target: a },
      { path: '/x', host: '*.example.com', target: a },
      { regex: '/r.*', target: a },
    ]);
    assert.equal(routeTable.match('/p', undefined)?.route.description, 'prefix /p');
    assert.equal(
      routeTable.match('/x', 'q.example.com')?.route.description,
      'path /x on host *.example.com',
    );
    assert.equal(routeTable.match('/rr', undefined)?.route.description, 'regex /r.*');
  });
});

describe('LocalRouteTable rewriting', () => {
  it('replaces the matched prefix and keeps the rest of the path and the query', () => {
    const { routeTable } = table([{ prefix: '/api/', prefix_rewrite: '/', target: a }]);
    assert.equal(routeTable.match('/api/v1/x?y=/api/', undefined)?.path, '/v1/x?y=/api/');
    assert.equal(routeTable.match('/api/', undefined)?.path, '/');
  });

  it('replaces the prefix as written, as Envoy does, so /api with / gives a double slash', () => {
    const { routeTable } = table([{ prefix: '/api', prefix_rewrite: '/', target: a }]);
    assert.equal(routeTable.match('/api/v1', undefined)?.path, '//v1');
    assert.equal(routeTable.match('/api?x=1', undefined)?.path, '/?x=1');
  });

  it('sends the request target unchanged without a rewrite', () => {
    const { routeTable } = table([{ prefix: '/api', target: a }]);
    assert.equal(routeTable.match('/api/v1?q', undefined)?.path, '/api/v1?q');
  });

  it('exposes the protocol and the timeout of the route', () => {
    const { routeTable } = table([
      { prefix: '/grpc', protocol: 'http2', timeout: '2s', target: a },
      { prefix: '/', target: a },
    ]);
    const grpc = routeTable.match('/grpc/x', undefined);
    assert.equal(grpc?.timeoutMs, 2000);
    assert.equal(grpc?.route.protocol, 'http2');
    assert.equal(grpc?.pick()?.protocol, 'http2');
    const plain = routeTable.match('/x', undefined);
    assert.equal(plain?.timeoutMs, undefined);
    assert.equal(plain?.route.protocol, 'http1');
  });
});

describe('LocalRouteTable endpoints', () => {
  it('makes one client per origin and protocol, shared by the routes that name it', async () => {
    const { routeTable, clients } = table([
      { prefix: '/one', targets: [a, b] },
      { prefix: '/two', target: b },
      { prefix: '/three', target: b, protocol: 'http2' },
    ]);
    assert.deepEqual(
      clients.map((client) => `${client.protocol} ${client.origin}`),
      [`http1 ${a}`, `http1 ${b}`, `http2 ${b}`],
    );
    const viaTwo = routeTable.match('/two', undefined)?.pick();
    const viaOne = endpointOf(routeTable, b, '/one');
    assert.equal(viaOne, viaTwo);
    // Failures through one route count for the other: it is one endpoint.
    failTimes(viaOne, 4);
    viaTwo?.failed();
    assert.equal(routeTable.endpoints()[1]?.ejected, true);
    assert.equal(routeTable.endpoints()[2]?.ejected, false);
    await routeTable.close();
    assert.ok(clients.every((client) => client.closed));
    routeTable.destroy();
    assert.ok(clients.every((client) => client.destroyed));
  });

  it('takes turns over the endpoints of a route', () => {
    const { routeTable } = table([{ prefix: '/', targets: [a, b, c] }]);
    assert.deepEqual(
      Array.from({ length: 7 }, () => next(routeTable)),
      [a, b, c, a, b, c, a],
    );
  });

  it('picks every healthy endpoint equally often, whichever are ejected', () => {
    const origins = Array.from({ length: 6 }, (_, i) => `http://127.0.0.1:${9100 + i}`);
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 6 }),
        fc.uniqueArray(fc.integer({ min: 0, max: 5 }), { maxLength: 5 }),
        fc.integer({ min: 1, max: 5 }),
        (count, toEject, rounds) => {
          const targets = origins.slice(0, count);
          const { routeTable } = table([
            { prefix: '/', targets, outlier_detection: { consecutive_failures: 1 } },
          ]);
          const ejected = new Set(toEject.filter((i) => i < count - 1).map((i) => targets[i]));
          for (const origin of ejected) endpointOf(routeTable, origin as string).failed();
          const healthy = targets.filter((origin) => !ejected.has(origin));
          const counts = new Map<string, number>();
          for (let i = 0; i < healthy.length * rounds; i += 1) {
            const origin = next(routeTable) as string;
            counts.set(origin, (counts.get(origin) ?? 0) + 1);
          }
          assert.deepEqual(
            [...counts.entries()].sort(),
            healthy.map((origin) => [origin, rounds]).sort(),
          );
        },
      ),
    );
  });
});

describe('LocalRouteTable outlier detection', () => {
  it('ejects an endpoint after the configured number of consecutive failures', () => {
    const { routeTable } = table([
      { prefix: '/', targets: [a, b], outlier_detection: { consecutive_failures: 3 } },
    ]);
    const endpoint = endpointOf(routeTable, a);
    failTimes(endpoint, 2);
    endpoint.succeeded();
    failTimes(endpoint, 2);
    assert.deepEqual(routeTable.endpoints()[0], {
      origin: a,
      protocol: 'http1',
      ejected: false,
      consecutiveFailures: 2,
      ejections: 0,
    });
    endpoint.failed();
    assert.equal(routeTable.endpoints()[0]?.ejected, true);
    assert.deepEqual(
      Array.from({ length: 3 }, () => next(routeTable)),
      [b, b, b],
    );
  });

  it('ejects after 5 consecutive failures by default', () => {
    const { routeTable } = table([{ prefix: '/', targets: [a, b] }]);
    const endpoint = endpointOf(routeTable, a);
    failTimes(endpoint, 4);
    assert.equal(routeTable.endpoints()[0]?.ejected, false);
    endpoint.failed();
    assert.equal(routeTable.endpoints()[0]?.ejected, true);
  });

  it('returns an endpoint after the ejection time, with its failures forgotten', () => {
    let now = 1_000_000;
    const { routeTable } = table(
      [
        {
          prefix: '/',
          targets: [a, b],
          outlier_detection: { consecutive_failures: 2, ejection_time: '10s' },
        },
      ],
      { now: () => now },
    );
    const endpoint = endpointOf(routeTable, a);
    failTimes(endpoint, 2);
    now += 9999;
    assert.equal(routeTable.endpoints()[0]?.ejected, true);
    now += 1;
    assert.deepEqual(routeTable.endpoints()[0], {
      origin: a,
      protocol: 'http1',
      ejected: false,
      consecutiveFailures: 0,
      ejections: 1,
    });
    assert.deepEqual(new Set([next(routeTable), next(routeTable)]), new Set([a, b]));
  });

  it('counts the time in from when an ejection ended, not from when it was noticed', () => {
    let now = 0;
    const { routeTable } = table(
      [
        {
          prefix: '/',
          targets: [a, b],
          outlier_detection: { consecutive_failures: 1, ejection_time: '10s' },
        },
      ],
      { now: () => now },
    );
    const endpoint = endpointOf(routeTable, a);
    endpoint.failed();
    // Nobody asks until long after the ejection ended at 10 s: 20 s in, so both are forgotten.
    now = 30_000;
    endpoint.failed();
    assert.equal(routeTable.endpoints()[0]?.ejections, 1);
  });

  it('lengthens each ejection in a row by the ejection time, up to max_ejection_time', () => {
    let now = 0;
    const { routeTable } = table(
      [
        {
          prefix: '/',
          targets: [a, b],
          outlier_detection: {
            consecutive_failures: 1,
            ejection_time: '10s',
            max_ejection_time: '25s',
          },
        },
      ],
      { now: () => now },
    );
    const endpoint = endpointOf(routeTable, a);
    const lengths: number[] = [];
    for (let ejection = 0; ejection < 4; ejection += 1) {
      endpoint.failed();
      const start = now;
      // Bounded: the longest ejection is 25 s, stepped by 1 s.
      for (let step = 0; step < 100 && routeTable.endpoints()[0]?.ejected === true; step += 1) {
        now += 1000;
      }
      lengths.push(now - start);
    }
    assert.deepEqual(lengths, [10_000, 20_000, 25_000, 25_000]);
  });

  it('forgets one ejection in a row for each ejection time the endpoint stays in', () => {
    let now = 0;
    const { routeTable } = table(
      [
        {
          prefix: '/',
          targets: [a, b],
          outlier_detection: { consecutive_failures: 1, ejection_time: '10s' },
        },
      ],
      { now: () => now },
    );
    const endpoint = endpointOf(routeTable, a);
    endpoint.failed();
    now += 10_000;
    endpoint.failed();
    now += 20_000;
    assert.equal(routeTable.endpoints()[0]?.ejections, 2);
    // In for 20 s: two ejection times, so the next ejection is the first again.
    now += 20_000;
    endpoint.failed();
    assert.equal(routeTable.endpoints()[0]?.ejections, 1);
  });

  it('serves every endpoint again when all of a route are ejected (panic)', () => {
    const { routeTable } = table([
      { prefix: '/c', target: c, outlier_detection: { consecutive_failures: 1 } },
      { prefix: '/', targets: [a, b], outlier_detection: { consecutive_failures: 1 } },
    ]);
    endpointOf(routeTable, a).failed();
    endpointOf(routeTable, b).failed();
    assert.deepEqual(
      routeTable.endpoints().map((endpoint) => endpoint.ejected),
      [false, true, true],
    );
    assert.deepEqual(new Set([next(routeTable), next(routeTable)]), new Set([a, b]));
  });

  it('keeps serving a lone endpoint that is ejected', () => {
    const { routeTable } = table([
      { prefix: '/', target: a, outlier_detection: { consecutive_failures: 1 } },
    ]);
    endpointOf(routeTable, a).failed();
    assert.equal(routeTable.endpoints()[0]?.ejected, true);
    assert.equal(next(routeTable), a);
  });

  it('ejects no more than max_ejection_percent of a route, but always one', () => {
    const { routeTable } = table([
      {
        prefix: '/',
        targets: [a, b, c],
        outlier_detection: { consecutive_failures: 1, max_ejection_percent: 10 },
      },
    ]);
    endpointOf(routeTable, a).failed();
    endpointOf(routeTable, b).failed();
    assert.deepEqual(
      routeTable.endpoints().map((endpoint) => endpoint.ejected),
      [true, false, false],
    );
  });

  it('logs an ejection and a return at info', () => {
    let now = 0;
    const { logger, lines } = recordingLogger();
    const { routeTable } = table(
      [{ prefix: '/', target: a, outlier_detection: { consecutive_failures: 1 } }],
      { now: () => now, logger },
    );
    endpointOf(routeTable, a).failed();
    now += 30_000;
    routeTable.endpoints();
    assert.deepEqual(
      lines.map((line) => [line['level'], line['msg'], line['target']]),
      [
        [30, 'local endpoint ejected after consecutive failures', a],
        [30, 'local endpoint returns after its ejection', a],
      ],
    );
    assert.equal(lines[0]?.['ejection_ms'], 30_000);
  });
});
