/**
 * The three renderings of `/stats` (Envoy text, JSON, Prometheus) agree on the same numbers, the
 * Prometheus one parses with a real exposition-format parser, and `enable_detailed_stats: false`
 * bounds the families to the aggregates (issue 8, first done-when).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import parsePrometheusTextFormat, { type ParsedFamily } from 'parse-prometheus-text-format';
import type { Initiator } from '../../src/initiator/initiator.ts';
import type { Responder } from '../../src/responder/responder.ts';
import type { HostPort } from '../../src/shared/address.ts';
import { request } from '../helpers/http.ts';
import { startNamedService, type TestService } from '../helpers/http.ts';
import { connectedInitiator, responderOnFreePorts, waitForEvent } from '../helpers/tunnels.ts';

const sp = 'reverse_connections';
const ip = 'downstream_reverse_connection';
const validName = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;

interface Scrape {
  readonly text: string;
  readonly json: { stats: Array<Record<string, unknown>> };
  readonly prometheus: string;
  readonly families: ParsedFamily[];
}

async function get(admin: HostPort, path: string): Promise<string> {
  const reply = await request(admin, path);
  assert.equal(reply.status, 200, `${path}: ${reply.text}`);
  return reply.text;
}

/**
 * Scrapes the three formats, with histograms as buckets, until two text scrapes around them are
 * equal: the three then show one moment (keepalive pings may land between scrapes).
 */
async function scrape(admin: HostPort): Promise<Scrape> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const before = await get(admin, '/stats?histogram_buckets=cumulative');
    const json = await get(admin, '/stats?format=json&histogram_buckets=cumulative');
    const prometheus = await get(admin, '/stats/prometheus');
    const afterText = await get(admin, '/stats?histogram_buckets=cumulative');
    if (before === afterText) {
      return {
        text: before,
        json: JSON.parse(json) as Scrape['json'],
        prometheus,
        families: parsePrometheusTextFormat(prometheus),
      };
    }
  }
  throw new Error('the stats kept changing over 20 scrapes');
}

/** Counter and gauge lines of the text rendering, and its histograms' cumulative buckets. */
function readText(text: string) {
  const values = new Map<string, number>();
  const histograms = new Map<string, number[]>();
  for (const line of text.trimEnd().split('\n')) {
    const match = /^(\S+): (.*)$/.exec(line);
    assert.ok(match !== null, line);
    const [, name = '', value = ''] = match;
    if (value.startsWith('B')) {
      histograms.set(
        name,
        [...value.matchAll(/B[^(]+\(nan,(\d+)\)/g)].map((bucket) => Number(bucket[1])),
      );
    } else values.set(name, Number(value));
  }
  return { values, histograms };
}

function readJson(json: Scrape['json']) {
  const values = new Map<string, number>();
  const histograms = new Map<string, number[]>();
  for (const row of json.stats) {
    if ('histograms' in row) {
      const list = row['histograms'] as Array<{ name: string; buckets: { cumulative: number }[] }>;
      for (const histogram of list) {
        histograms.set(
          histogram.name,
          histogram.buckets.map((bucket) => bucket.cumulative),
        );
      }
    } else values.set(row['name'] as string, row['value'] as number);
  }
  return { values, histograms };
}

/** Each Prometheus series as `name{label="value",…}` (labels sorted) → value. */
function readPrometheus(families: readonly ParsedFamily[]) {
  const values = new Map<string, number>();
  const histograms = new Map<string, { buckets: Record<string, string>; count: number }>();
  for (const family of families) {
    assert.match(family.name, validName);
    assert.ok(family.help.length > 0, `${family.name} has HELP`);
    for (const sample of family.metrics) {
      if (family.type === 'HISTOGRAM') {
        histograms.set(family.name, {
          buckets: { ...sample.buckets },
          count: Number(sample.count),
        });
      } else {
        assert.ok(family.type === 'COUNTER' || family.type === 'GAUGE', family.type);
        values.set(seriesKey(family.name, sample.labels ?? {}), Number(sample.value));
      }
    }
  }
  return { values, histograms };
}

function seriesKey(name: string, labels: Readonly<Record<string, string>>): string {
  const pairs = Object.entries(labels)
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([label, value]) => `${label}="${value}"`);
  return pairs.length === 0 ? name : `${name}{${pairs.join(',')}}`;
}

const sanitized = (name: string) => `envoy_${name.replace(/[^a-zA-Z0-9_:]/g, '_')}`;

/**
 * The Prometheus series a stat is documented to become (docs/operations.md): the tunnel gauges
 * with their ids as labels, every other stat under its sanitised name.
 */
function expectedSeries(name: string): string {
  const tagged: Array<[RegExp, (m: RegExpExecArray) => string]> = [
    [
      /^reverse_tunnel\.(acceptor|initiator)\.tunnel_closed\.(.+)$/,
      (m) => seriesKey(`envoy_reverse_tunnel_${m[1]}_tunnel_closed`, { reason: m[2]! }),
    ],
    [
      new RegExp(`^${sp}\\.(nodes|clusters)\\.(.+)$`),
      (m) => seriesKey(`envoy_${sp}_${m[1]}`, { [m[1] === 'nodes' ? 'node' : 'cluster']: m[2]! }),
    ],
    [
      new RegExp(`^${sp}\\.worker_0\\.(node|cluster)\\.(.+)$`),
      (m) => seriesKey(`envoy_${sp}_worker_${m[1]}`, { worker: 'worker_0', [m[1]!]: m[2]! }),
    ],
    [
      new RegExp(`^${ip}\\.(worker_0\\.)?(cluster|host)\\.(.+)\\.([a-z_]+)$`),
      (m) =>
        seriesKey(
          `envoy_${ip}_${m[1] === undefined ? '' : 'worker_'}${m[2]}_${m[4]}`,
          m[1] === undefined ? { [m[2]!]: m[3]! } : { worker: 'worker_0', [m[2]!]: m[3]! },
        ),
    ],
  ];
  for (const [pattern, series] of tagged) {
    const match = pattern.exec(name);
    if (match !== null) return series(match);
  }
  return sanitized(name);
}

/** Asserts that the three renderings of one scrape list the same stats with the same numbers. */
function assertAgree(scraped: Scrape): number {
  const text = readText(scraped.text);
  const json = readJson(scraped.json);
  const prometheus = readPrometheus(scraped.families);
  assert.deepEqual(json.values, text.values);
  assert.deepEqual(json.histograms, text.histograms);
  const expected = new Map(
    [...text.values].map(([name, value]) => [expectedSeries(name), value] as const),
  );
  assert.deepEqual(prometheus.values, expected);
  assert.deepEqual(
    [...prometheus.histograms.keys()].sort(),
    [...text.histograms.keys()].map(sanitized).sort(),
  );
  for (const [name, cumulative] of text.histograms) {
    const parsed = prometheus.histograms.get(sanitized(name));
    assert.ok(parsed !== undefined, name);
    // The parser returns buckets as an object, whose integer-like keys come first: sort by bound.
    const finite = Object.entries(parsed.buckets)
      .filter(([le]) => le !== '+Inf')
      .sort(([a], [b]) => Number(a) - Number(b));
    assert.deepEqual(
      finite.map(([, count]) => Number(count)),
      cumulative,
      name,
    );
    assert.ok(parsed.count >= (cumulative.at(-1) ?? 0), name);
    assert.equal(Number(parsed.buckets['+Inf']), parsed.count, name);
  }
  return text.values.size;
}

describe('/stats in Envoy text, JSON and Prometheus', () => {
  let responder: Responder;
  let service: TestService;
  const initiators: Initiator[] = [];
  const admin = () => responder.addresses.admin!;

  before(async () => {
    // Keepalive PINGs every 100 ms, so that the ping-RTT histograms see samples.
    const http2 = { ping_interval: '100ms' };
    responder = await responderOnFreePorts({ http2 });
    service = await startNamedService('stats');
    for (const node of ['n.1', 'n2']) {
      initiators.push(
        await connectedInitiator(responder, {
          node,
          routes: [{ prefix: '/', target: service.target }],
          config: { http2 },
        }),
      );
    }
    // A node that comes and goes: its gauges read 0 and a tunnel_closed counter appears.
    const gone = await connectedInitiator(responder, {
      node: 'gone.1',
      routes: [{ prefix: '/', target: service.target }],
    });
    const closed = waitForEvent(
      responder,
      'tunnel_closed',
      (identity: { nodeId: string }) => identity.nodeId === 'gone.1',
    );
    await gone.close({ graceMs: 0 });
    await closed;
    const egress = responder.addresses.egress[0]!;
    for (const node of ['n.1', 'n.1', 'n.1', 'n2', 'n2', 'nobody']) {
      await request(egress, '/hello', { headers: { 'x-node-id': node } });
    }
  });

  after(async () => {
    for (const initiator of initiators) await initiator.close({ graceMs: 0 });
    await responder?.close({ graceMs: 0 });
    await service?.close();
  });

  it("agrees on every counter, gauge and histogram bucket on the responder's admin", async () => {
    const scraped = await scrape(admin());
    const stats = assertAgree(scraped);
    assert.ok(stats > 10, `${stats} stats`);
    const prometheus = readPrometheus(scraped.families).values;
    // Node and cluster ids are labels: one family each, dots and all.
    assert.equal(prometheus.get(`envoy_${sp}_nodes{node="n.1"}`), 1);
    assert.equal(prometheus.get(`envoy_${sp}_nodes{node="n2"}`), 1);
    assert.equal(prometheus.get(`envoy_${sp}_clusters{cluster="c1"}`), 2);
    assert.equal(prometheus.get('envoy_reverse_tunnel_acceptor_total_nodes'), 2);
    assert.equal(prometheus.get('envoy_reverse_tunnel_acceptor_total_clusters'), 1);
    assert.equal(prometheus.get('envoy_reverse_tunnel_handshake_accepted'), 3);
    assert.equal(prometheus.get(`envoy_${sp}_nodes{node="gone.1"}`), 0);
    // One close, under its reason (a reset or a FIN, as the initiator's close goes).
    const closed = [...prometheus].filter(([series]) => series.includes('_tunnel_closed{'));
    assert.equal(closed.length, 1, String(closed));
    assert.match(
      closed[0]![0],
      /^envoy_reverse_tunnel_acceptor_tunnel_closed\{reason="idle_\w+"\}$/,
    );
    assert.equal(closed[0]![1], 1);
    const nodeFamilies = scraped.families.filter((family) => family.name === `envoy_${sp}_nodes`);
    assert.equal(nodeFamilies.length, 1);
    assert.equal(nodeFamilies[0]?.type, 'GAUGE');
    const histograms = readPrometheus(scraped.families).histograms;
    assert.equal(histograms.get('envoy_reverse_tunnel_handshake_time')?.count, 3);
    assert.match(scraped.prometheus, /^# TYPE envoy_reverse_tunnel_handshake_time histogram$/m);
  });

  it("agrees on the initiator's admin, with clusters and hosts as labels", async () => {
    const initiator = initiators[0]!;
    const scraped = await scrape(initiator.addresses.admin!);
    assertAgree(scraped);
    const prometheus = readPrometheus(scraped.families);
    assert.equal(
      prometheus.values.get(`envoy_${ip}_cluster_connected{cluster="upstream-cluster"}`),
      1,
    );
    const host = `127.0.0.1:${responder.addresses.tunnel.port}`;
    assert.equal(prometheus.values.get(`envoy_${ip}_host_connected{host="${host}"}`), 1);
    assert.equal(
      prometheus.histograms.get('envoy_reverse_tunnel_initiator_tunnel_setup_time')?.count,
      1,
    );
  });

  it('shows histograms as Envoy quantile lines in text and quantiles in JSON', async () => {
    const text = await get(admin(), '/stats?filter=handshake_time');
    assert.match(
      text,
      /^reverse_tunnel\.handshake_time: P0\(nan,[\d.e+-]+\) P25\(nan,[\d.e+-]+\) .* P100\(nan,[\d.e+-]+\)$/m,
    );
    const json = JSON.parse(await get(admin(), '/stats?format=json&filter=handshake_time')) as {
      stats: Array<{
        histograms?: { supported_quantiles: number[]; computed_quantiles: unknown[] };
      }>;
    };
    const histograms = json.stats.at(-1)?.histograms;
    assert.deepEqual(histograms?.supported_quantiles, [0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100]);
    assert.equal(histograms?.computed_quantiles.length, 1);
  });

  it('applies filter= to every format', async () => {
    const filter = 'filter=handshake\\.accepted$';
    assert.equal(await get(admin(), `/stats?${filter}`), 'reverse_tunnel.handshake.accepted: 3\n');
    assert.deepEqual(JSON.parse(await get(admin(), `/stats?format=json&${filter}`)), {
      stats: [{ name: 'reverse_tunnel.handshake.accepted', value: 3 }],
    });
    const prometheus = await request(admin(), `/stats/prometheus?${filter}`);
    assert.equal(prometheus.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
    assert.deepEqual(
      parsePrometheusTextFormat(prometheus.text).map((family) => family.name),
      ['envoy_reverse_tunnel_handshake_accepted'],
    );
  });
});

describe('enable_detailed_stats: false', () => {
  let responder: Responder;
  let service: TestService;
  let initiator: Initiator;

  before(async () => {
    responder = await responderOnFreePorts({ enable_detailed_stats: false });
    service = await startNamedService('plain');
    initiator = await connectedInitiator(responder, {
      node: 'n3',
      routes: [{ prefix: '/', target: service.target }],
    });
  });

  after(async () => {
    await initiator?.close({ graceMs: 0 });
    await responder?.close({ graceMs: 0 });
    await service?.close();
  });

  it('lists no per-node or per-cluster stats, and keeps the aggregates', async () => {
    const scraped = await scrape(responder.addresses.admin!);
    assertAgree(scraped);
    assert.doesNotMatch(scraped.text, /n3|\.nodes\.|\.clusters\.|worker_0\.(node|cluster)\./);
    assert.doesNotMatch(scraped.prometheus, /node=|cluster=/);
    const values = readPrometheus(scraped.families).values;
    assert.equal(values.get('envoy_reverse_tunnel_acceptor_total_nodes'), 1);
    assert.equal(values.get('envoy_reverse_tunnel_acceptor_total_clusters'), 1);
    assert.equal(values.get('envoy_reverse_tunnel_handshake_accepted'), 1);
  });
});
