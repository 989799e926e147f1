/**
 * Soak: steady load through a responder's egress listener and an initiator's tunnels, for minutes,
 * printing every interval the requests, errors by kind, p50/p99 latency of that interval, and RSS,
 * heapUsed and open fds of each role; at the end the least-squares RSS and heap slope (MiB per
 * minute) and the fd growth. Exit code 0 unless a request failed (issue 5, item 8).
 *
 *   npm run soak -- --minutes 10
 *   npm run soak -- --seconds 30 --interval 5 --concurrency 16 --tunnels 4 --min-body-bytes 0
 *   SOAK_LOG=debug npm run soak -- --seconds 5      (the roles log to stderr)
 *
 * Each role runs in its own process, so that its memory and fds are its own: the responder and the
 * initiator are children of this script (test/helpers/role-process.ts, which the backpressure test
 * shares), and this process is the driver, holding the load generator (undici, one keep-alive
 * connection per worker) and the local service the initiator forwards to (it stands in for the
 * private service, which is never part of revtun's figures). The driver talks to its children
 * over the IPC channel of `fork`: start, sample, stop, each answered within a deadline. A child
 * that loses its parent closes its role and exits; Ctrl-C stops the load, prints the summary and
 * stops the children by PID.
 *
 * Every body is checksummed: a GET names one of a fixed set of bodies and the driver hashes what
 * comes back; a POST sends one and the service answers with the SHA-256 of what it received and
 * the body echoed. Each request carries a sequence number the service echoes, so a response that
 * reached the wrong caller counts as an error too.
 */
import { setMaxListeners } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';
import type { HostPort } from '../src/shared/address.ts';
import {
  clusterId,
  nodeId,
  processFigures,
  RoleProcess,
  type ProcessFigures,
  type RoleSample,
} from '../test/helpers/role-process.ts';

/** One request's deadline, headers and body each (undici's headersTimeout and bodyTimeout). */
const requestTimeoutMs = 10_000;
/** After a failed request a worker pauses this long, so that a dead tunnel is not a hot loop. */
const errorPauseMs = 10;

// ---------------------------------------------------------------------------------------------
// The local service and the bodies

interface Body {
  readonly bytes: Buffer;
  readonly sha256: string;
}

const sha256 = (bytes: Buffer | Uint8Array) => createHash('sha256').update(bytes).digest('hex');

/**
 * 32 bodies from `minBytes` (0 by default: an empty body is a case of its own) to 16 KiB, random
 * contents: what GETs ask for and POSTs send.
 */
function makeBodies(minBytes: number): Body[] {
  const sizes = [0, 1, 2, 100, 1023, 1024, 1025, 4096, 16_384].map((size) =>
    Math.max(size, minBytes),
  );
  while (sizes.length < 32) sizes.push(minBytes + Math.floor(Math.random() * (16_384 - minBytes)));
  return sizes.map((size) => {
    const bytes = randomBytes(size);
    return { bytes, sha256: sha256(bytes) };
  });
}

/** `GET /soak/get?body=k` answers body k; `POST /soak/post` echoes what it got, with its hash. */
async function startService(bodies: readonly Body[]): Promise<http.Server> {
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    let length = 0;
    request.on('data', (chunk: Buffer) => {
      length += chunk.length;
      if (length > 64 * 1024) request.destroy();
      else chunks.push(chunk);
    });
    request.on('end', () => {
      const received = Buffer.concat(chunks);
      const url = new URL(request.url ?? '/', 'http://service');
      const body =
        request.method === 'POST' ? received : bodies[Number(url.searchParams.get('body'))]?.bytes;
      if (body === undefined) {
        response.writeHead(400).end();
        return;
      }
      response.writeHead(200, {
        'content-type': 'application/octet-stream',
        'content-length': body.length,
        'x-request-sha256': sha256(received),
        'x-soak-seq': request.headers['x-soak-seq'] ?? '',
      });
      response.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

// ---------------------------------------------------------------------------------------------
// Latency histogram: buckets 1 % wide, so memory stays bounded however long the soak runs

class Histogram {
  static readonly #base = Math.log(1.01);
  readonly #buckets = new Map<number, number>();
  count = 0;

  record(ms: number): void {
    const bucket = Math.ceil(Math.log(Math.max(ms, 0.001) * 1000) / Histogram.#base);
    this.#buckets.set(bucket, (this.#buckets.get(bucket) ?? 0) + 1);
    this.count += 1;
  }

  /** The upper edge (ms) of the bucket holding the q-quantile, NaN when empty. */
  quantile(q: number): number {
    if (this.count === 0) return Number.NaN;
    const rank = Math.ceil(q * this.count);
    let seen = 0;
    for (const bucket of [...this.#buckets.keys()].sort((a, b) => a - b)) {
      seen += this.#buckets.get(bucket) as number;
      if (seen >= rank) return Math.exp(bucket * Histogram.#base) / 1000;
    }
    return Number.NaN;
  }

  reset(): void {
    this.#buckets.clear();
    this.count = 0;
  }
}

// ---------------------------------------------------------------------------------------------
// The load

interface Load {
  requests: number;
  errors: Map<string, number>;
  readonly interval: Histogram;
  readonly total: Histogram;
  /** A few error details, for the summary. */
  readonly examples: string[];
}

function countError(load: Load, kind: string, detail: string): void {
  load.errors.set(kind, (load.errors.get(kind) ?? 0) + 1);
  if (load.examples.length < 8) load.examples.push(`${kind}: ${detail}`);
}

/** One worker: requests one after another until `signal` aborts, each checked and timed. */
async function worker(
  pool: Pool,
  bodies: readonly Body[],
  load: Load,
  signal: AbortSignal,
  seqs: { next: number },
): Promise<void> {
  while (!signal.aborted) {
    const seq = (seqs.next += 1);
    // Every other request a POST; both kinds go through every body, and a third name the cluster.
    const index = Math.floor(seq / 2) % bodies.length;
    const body = bodies[index] as Body;
    const post = seq % 2 === 0;
    const route: Record<string, string> =
      seq % 3 === 0 ? { 'x-cluster-id': clusterId } : { 'x-node-id': nodeId };
    const started = performance.now();
    let failed = false;
    // Errors are counted by kind and by the shape of the request, e.g. "status_502 (GET, empty)".
    const shape = `${post ? 'POST' : 'GET'}, ${body.bytes.length === 0 ? 'empty' : 'with body'}`;
    const fail = (kind: string, detail: string) => {
      failed = true;
      countError(load, `${kind} (${shape})`, detail);
    };
    try {
      const response = await pool.request({
        method: post ? 'POST' : 'GET',
        path: post ? '/soak/post' : `/soak/get?body=${index}`,
        headers: { ...route, 'x-soak-seq': String(seq) },
        body: post ? body.bytes : null,
        signal,
      });
      const received = Buffer.from(await response.body.arrayBuffer());
      const elapsed = performance.now() - started;
      if (response.statusCode !== 200) {
        fail(`status_${response.statusCode}`, received.toString('utf8').slice(0, 200));
      } else if (response.headers['x-soak-seq'] !== String(seq)) {
        fail('wrong_response', `seq ${seq} got ${String(response.headers['x-soak-seq'])}`);
      } else if (sha256(received) !== body.sha256) {
        fail('response_body_mismatch', `seq ${seq}: ${received.length} bytes`);
      } else if (
        response.headers['x-request-sha256'] !== (post ? body.sha256 : sha256(Buffer.alloc(0)))
      ) {
        fail('request_body_mismatch', `seq ${seq}`);
      }
      load.requests += 1;
      load.interval.record(elapsed);
      load.total.record(elapsed);
    } catch (error) {
      // A request cut off by the end of the soak is not an error of the proxy.
      if (signal.aborted) return;
      load.requests += 1;
      const code = (error as { code?: unknown }).code;
      fail(
        typeof code === 'string' ? code : (error as Error).name,
        `${post ? 'POST' : 'GET'} seq ${seq}, ${body.bytes.length}-byte body, ` +
          `${Object.keys(route)[0]}, after ${fixed(performance.now() - started, 1)} ms: ${String(error)}`,
      );
    }
    if (failed) await sleep(errorPauseMs).catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------
// Reporting

interface Sample {
  /** Minutes since the measured phase began. */
  readonly minutes: number;
  readonly roles: { responder: RoleSample; initiator: RoleSample; driver: ProcessFigures };
}

const mib = (bytes: number) => bytes / (1024 * 1024);
const fixed = (value: number, digits = 1) => (Number.isNaN(value) ? '-' : value.toFixed(digits));

/** Least-squares slope of y over x; NaN with fewer than two points. */
function slope(points: ReadonlyArray<readonly [number, number]>): number {
  if (points.length < 2) return Number.NaN;
  const n = points.length;
  const mx = points.reduce((sum, [x]) => sum + x, 0) / n;
  const my = points.reduce((sum, [, y]) => sum + y, 0) / n;
  let num = 0;
  let den = 0;
  for (const [x, y] of points) {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  return den === 0 ? Number.NaN : num / den;
}

const figuresText = (figures: ProcessFigures) =>
  `rss ${fixed(mib(figures.rss))} heap ${fixed(mib(figures.heapUsed))} fd ${figures.fds}`;

const errorsText = (errors: ReadonlyMap<string, number>) => {
  const total = [...errors.values()].reduce((sum, count) => sum + count, 0);
  if (total === 0) return 'err 0';
  return `err ${total} (${[...errors].map(([kind, count]) => `${kind} ${count}`).join(', ')})`;
};

// ---------------------------------------------------------------------------------------------
// The driver

interface Options {
  readonly durationMs: number;
  readonly intervalMs: number;
  readonly concurrency: number;
  readonly tunnels: number;
  readonly warmUpMs: number;
  readonly minBodyBytes: number;
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      minutes: { type: 'string' },
      seconds: { type: 'string' },
      interval: { type: 'string', default: '10' },
      concurrency: { type: 'string', default: '16' },
      tunnels: { type: 'string', default: '4' },
      'min-body-bytes': { type: 'string', default: '0' },
      'warm-up': { type: 'string' },
    },
  });
  const number = (name: string, text: string | undefined, min: number, max: number) => {
    const value = Number(text);
    if (!Number.isFinite(value) || value < min || value > max) {
      throw new Error(`--${name} must be a number from ${min} to ${max}, not "${text}"`);
    }
    return value;
  };
  const durationMs =
    values.seconds !== undefined
      ? number('seconds', values.seconds, 1, 86_400) * 1000
      : number('minutes', values.minutes ?? '1', 0.05, 1440) * 60_000;
  return {
    durationMs,
    intervalMs: number('interval', values.interval, 1, 3600) * 1000,
    concurrency: number('concurrency', values.concurrency, 1, 1024),
    tunnels: number('tunnels', values.tunnels, 1, 64),
    minBodyBytes: number('min-body-bytes', values['min-body-bytes'], 0, 16_384),
    warmUpMs:
      values['warm-up'] !== undefined
        ? number('warm-up', values['warm-up'], 0, 600) * 1000
        : Math.min(5_000, durationMs / 10),
  };
}

const interrupted = new Error('interrupted');

async function drive(options: Options): Promise<number> {
  const stop = new AbortController();
  // Every request in flight listens on it (undici: the request and its body), and the pauses.
  setMaxListeners(options.concurrency * 4 + 16, stop.signal);
  let interrupts = 0;
  const roles: RoleProcess[] = [];
  const onSigint = () => {
    interrupts += 1;
    if (interrupts === 1) {
      console.log('\ninterrupted: stopping the load, then the roles (Ctrl-C again to kill them)');
      stop.abort(interrupted);
      return;
    }
    for (const role of roles) if (role.child.exitCode === null) process.kill(role.pid, 'SIGKILL');
    process.exit(130);
  };
  process.on('SIGINT', onSigint);

  const bodies = makeBodies(options.minBodyBytes);
  const service = await startService(bodies);
  const target = `http://127.0.0.1:${(service.address() as AddressInfo).port}`;
  let pool: Pool | undefined;
  try {
    const responder = new RoleProcess('responder');
    roles.push(responder);
    const { tunnel, egress } = await responder.call({ type: 'start' });
    const initiator = new RoleProcess('initiator');
    roles.push(initiator);
    await initiator.call({
      type: 'start',
      initiator: { tunnel: tunnel as HostPort, target, tunnels: options.tunnels },
    });
    await responder.call({ type: 'tunnels', atLeast: options.tunnels });
    const egressAddress = egress as HostPort;
    console.log(
      `soak: ${fixed(options.durationMs / 60_000, 2)} min, ${options.concurrency} in flight, ` +
        `${options.tunnels} tunnels, samples every ${options.intervalMs / 1000} s; ` +
        `responder pid ${responder.pid} (egress ${egressAddress.host}:${egressAddress.port}), ` +
        `initiator pid ${initiator.pid}, driver pid ${process.pid} (load + local service ${target})`,
    );

    pool = new Pool(`http://${egressAddress.host}:${egressAddress.port}`, {
      connections: options.concurrency,
      headersTimeout: requestTimeoutMs,
      bodyTimeout: requestTimeoutMs,
    });
    const load: Load = {
      requests: 0,
      errors: new Map(),
      interval: new Histogram(),
      total: new Histogram(),
      examples: [],
    };
    const seqs = { next: 0 };
    const workers = Array.from({ length: options.concurrency }, () =>
      worker(pool as Pool, bodies, load, stop.signal, seqs),
    );

    const sampleAll = async (collect: boolean): Promise<Sample['roles']> => {
      const [r, i, d] = await Promise.all([
        responder.sample(collect),
        initiator.sample(collect),
        processFigures(collect),
      ]);
      return { responder: r, initiator: i, driver: d };
    };
    /** Waits `ms` or until the soak is stopped. */
    const pause = (ms: number) => sleep(ms, undefined, { signal: stop.signal }).catch(() => {});

    // Warm-up: JIT, pools and lazily created buffers exist before the baseline is taken.
    await pause(options.warmUpMs);
    const warmUpRequests = load.requests;
    const warmUpErrors = new Map(load.errors);
    const baseline = await sampleAll(true);
    load.requests = 0;
    load.errors = new Map();
    load.interval.reset();
    load.total.reset();
    console.log(
      `warm-up ${options.warmUpMs / 1000} s: ${warmUpRequests} requests, ${errorsText(warmUpErrors)}; ` +
        `baseline after GC: responder ${figuresText(baseline.responder)}, ` +
        `initiator ${figuresText(baseline.initiator)}, driver ${figuresText(baseline.driver)} (MiB)`,
    );
    console.log(
      'elapsed  requests   req/s  errors  p50 ms  p99 ms | responder rss/heap MiB, fds, tunnels | initiator … | driver …',
    );

    const samples: Sample[] = [];
    const startedAt = performance.now();
    const endAt = startedAt + options.durationMs;
    let lastRequests = 0;
    let lastAt = startedAt;
    let sampleErrors = 0;
    // Bounded: one pass per interval until the end (or Ctrl-C).
    while (!stop.signal.aborted && performance.now() < endAt) {
      const next = Math.min(endAt, lastAt + options.intervalMs);
      await pause(next - performance.now());
      const now = performance.now();
      let figures: Sample['roles'];
      try {
        figures = await sampleAll(false);
      } catch (error) {
        sampleErrors += 1;
        console.log(`sample failed: ${String(error)}`);
        if (sampleErrors >= 3) break;
        lastAt = now;
        continue;
      }
      const intervalRequests = load.requests - lastRequests;
      const seconds = (now - lastAt) / 1000;
      samples.push({ minutes: (now - startedAt) / 60_000, roles: figures });
      const { responder: r, initiator: i, driver: d } = figures;
      console.log(
        [
          `${fixed((now - startedAt) / 1000, 0).padStart(6)}s`,
          String(load.requests).padStart(9),
          fixed(intervalRequests / seconds, 0).padStart(7),
          errorsText(load.errors).padStart(7),
          fixed(load.interval.quantile(0.5), 2).padStart(7),
          fixed(load.interval.quantile(0.99), 2).padStart(7),
          `| responder ${figuresText(r)} tunnels ${r.tunnels}`,
          `| initiator ${figuresText(i)} tunnels ${i.tunnels}`,
          `| driver ${figuresText(d)}`,
        ].join(' '),
      );
      load.interval.reset();
      lastRequests = load.requests;
      lastAt = now;
    }
    const measuredMs = performance.now() - startedAt;
    stop.abort();
    await Promise.all(workers);
    const settled = await sampleAll(true);

    // Summary.
    const total = (errors: ReadonlyMap<string, number>) =>
      [...errors.values()].reduce((sum, count) => sum + count, 0);
    const errorTotal = total(load.errors) + total(warmUpErrors);
    console.log('');
    console.log(
      `summary: ${fixed(measuredMs / 60_000, 2)} min${stop.signal.reason === interrupted ? ' (interrupted)' : ''}, ` +
        `${load.requests} requests (${fixed(load.requests / (measuredMs / 1000), 0)}/s), ` +
        `${errorsText(load.errors)} (warm-up: ${warmUpRequests} requests, ${errorsText(warmUpErrors)}), ` +
        `latency p50 ${fixed(load.total.quantile(0.5), 2)} ms p99 ${fixed(load.total.quantile(0.99), 2)} ms ` +
        `p99.9 ${fixed(load.total.quantile(0.999), 2)} ms`,
    );
    for (const example of load.examples) console.log(`  error: ${example}`);
    const roleNames = ['responder', 'initiator', 'driver'] as const;
    for (const name of roleNames) {
      const points = (key: keyof ProcessFigures) =>
        samples.map((sample) => [sample.minutes, mib(sample.roles[name][key])] as const);
      const fds = samples.map((sample) => sample.roles[name].fds);
      const first = fds[0];
      const last = fds.at(-1);
      const before = baseline[name];
      const after = settled[name];
      const overSamples =
        first === undefined || last === undefined
          ? 'no samples'
          : `${first} → ${last} over the samples (${last - first >= 0 ? '+' : ''}${last - first}, ` +
            `max ${Math.max(...fds)})`;
      console.log(
        `  ${name.padEnd(9)} slope rss ${fixed(slope(points('rss')), 3)} MiB/min, ` +
          `heap ${fixed(slope(points('heapUsed')), 3)} MiB/min over ${samples.length} samples; ` +
          `after GC heap ${fixed(mib(before.heapUsed))} → ${fixed(mib(after.heapUsed))} MiB, ` +
          `rss ${fixed(mib(before.rss))} → ${fixed(mib(after.rss))} MiB; ` +
          `fds ${before.fds} at the baseline, ${overSamples}, ${after.fds} at the end (load stopped)`,
      );
    }
    console.log(
      `  tunnels: responder holds ${settled.responder.tunnels}, ` +
        `${settled.responder.tunnelsClosed} closed during the soak; ` +
        `initiator ${settled.initiator.tunnels} connected`,
    );
    return errorTotal === 0 && sampleErrors === 0 ? 0 : 1;
  } finally {
    stop.abort();
    await pool?.close().catch(() => {});
    for (const role of roles.reverse()) {
      const ended = await role.stop();
      if (ended === 'killed') {
        console.log(`  ${role.name} (pid ${role.pid}) did not exit after close: killed`);
        process.exitCode = 1;
      }
    }
    await new Promise<void>((resolve) => {
      service.close(() => resolve());
      service.closeAllConnections();
    });
    process.removeListener('SIGINT', onSigint);
  }
}

const code = await drive(parseOptions());
process.exitCode = process.exitCode === 1 ? 1 : code;
