/**
 * 1000 generated malformed handshakes against one responder's tunnel listener, many at once, with a
 * short handshake_timeout: random bytes, oversize request lines and headers, one byte at a time,
 * empty ids, ':' in ids, NUL bytes, bare LFs, bodies, huge header counts, an HTTP/2 preface and a
 * TLS ClientHello where HTTP/1.1 is expected, and valid requests followed by garbage. The responder
 * must survive all of them (no uncaught exception), close every connection at once or by the
 * deadline, count every rejection, and give the memory back.
 *
 * Every case here must be counted by a `reverse_tunnel.handshake.*` counter: a wrong method or path
 * is left out, because it deliberately counts nowhere (as in Envoy, a 404 "not a reverse tunnel
 * request" increments no handshake counter).
 */
import assert from 'node:assert/strict';
import net, { type AddressInfo } from 'node:net';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { handshakeCounters } from '../../src/protocol/handshake.ts';
import { startResponder, type Responder } from '../../src/responder/responder.ts';
import type { HostPort } from '../../src/shared/address.ts';
import { envoyHandshakeRequest } from '../helpers/fake-initiator.ts';
import { CrashWatch, describeGrowth, settledMemory, type MemoryFigures } from './memory.ts';

const handshakeTimeoutMs = 500;
/** Beyond the deadline: timers and 1000 sockets in one event loop, under a loaded CI machine. */
const slackMs = 1_500;
const caseCount = 1000;
/** Connections in flight at once (the listener's pending caps are raised above it). */
const parallel = 250;
const seed = 0x5eed_2024;

/** mulberry32: a small seeded PRNG, so that a failing case can be replayed. */
function prng(start: number): () => number {
  let state = start >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Expectation =
  /** Answered with a 4xx and closed at once. */
  | 'rejected'
  /** Never completes; closed by the handshake deadline. */
  | 'timeout'
  /** Either of the two (random bytes: a stray LF is a parse error, else the deadline). */
  | 'rejected_or_timeout'
  /** A valid handshake: accepted, then closed as idle_protocol_error for the garbage after it. */
  | 'accepted_then_garbage';

interface Case {
  readonly kind: string;
  readonly expect: Expectation;
  /** Sent in one write… */
  readonly bytes: Buffer;
  /** …or, when set, one byte every this many ms (never completing before the deadline). */
  readonly dripMs?: number;
}

interface Outcome {
  readonly kind: string;
  readonly expect: Expectation;
  readonly closedAfterMs: number;
  /** The answer's first 200 bytes, line breaks shown as spaces, e.g. "HTTP/1.1 400 Bad Request …". */
  readonly answer: string;
}

const head = (lines: readonly string[]) => Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1');
const requestLine = 'GET /reverse_connections/request HTTP/1.1';
const ids = (node: string, cluster = 'c1', tenant = 't1') => [
  `x-envoy-reverse-tunnel-node-id: ${node}`,
  `x-envoy-reverse-tunnel-cluster-id: ${cluster}`,
  `x-envoy-reverse-tunnel-tenant-id: ${tenant}`,
];

/** The case generators, each picked in turn; `random` varies sizes and contents. */
function generators(random: () => number, clientHello: Buffer): Array<(i: number) => Case> {
  const int = (min: number, max: number) => min + Math.floor(random() * (max - min + 1));
  const bytes = (length: number) => Buffer.from(Array.from({ length }, () => int(0, 255)));
  const letters = (length: number) => 'a'.repeat(length);
  return [
    () => ({ kind: 'random bytes', expect: 'rejected_or_timeout', bytes: bytes(int(1, 12_000)) }),
    () => ({
      kind: 'oversize request line',
      expect: 'rejected',
      bytes: head([`GET /${letters(int(8_200, 20_000))} HTTP/1.1`, 'host: x']),
    }),
    () => ({
      kind: 'oversize header',
      expect: 'rejected',
      bytes: head([requestLine, ...ids('n1'), `x-big: ${letters(int(8_200, 30_000))}`]),
    }),
    (i) => ({
      kind: 'drip, 1 byte per N ms',
      expect: 'timeout',
      bytes: Buffer.from(envoyHandshakeRequest({ node: `drip${i}`, cluster: 'c1', tenant: 't1' })),
      dripMs: int(10, 100),
    }),
    () => ({ kind: 'nothing at all', expect: 'timeout', bytes: Buffer.alloc(0) }),
    () => {
      const empty = int(0, 2);
      return {
        kind: 'empty id',
        expect: 'rejected',
        bytes: head([
          requestLine,
          ...ids(empty === 0 ? '' : 'n', empty === 1 ? '' : 'c', empty === 2 ? '' : 't'),
        ]),
      };
    },
    () => ({
      kind: "':' in an id",
      expect: 'rejected',
      bytes: head([
        requestLine,
        ...ids(int(0, 1) === 0 ? 'a:b' : 'n', int(0, 1) === 0 ? 'c:1' : 'c', 't:'),
      ]),
    }),
    (i) => ({
      kind: 'valid request, then garbage',
      expect: 'accepted_then_garbage',
      bytes: Buffer.concat([
        Buffer.from(envoyHandshakeRequest({ node: `garbage${i}`, cluster: 'c1', tenant: 't1' })),
        Buffer.from('GARBAGE'),
        bytes(int(1, 200)),
      ]),
    }),
    () => ({
      kind: 'HTTP/2 preface',
      expect: 'rejected',
      bytes: Buffer.concat([
        Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
        // An empty SETTINGS frame, as an h2c client sends after the preface.
        Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]),
      ]),
    }),
    () => ({ kind: 'TLS ClientHello', expect: 'rejected_or_timeout', bytes: clientHello }),
    () => {
      const where = int(0, 2);
      const nul = '\0';
      return {
        kind: 'NUL bytes',
        expect: 'rejected',
        bytes: head(
          where === 0
            ? [`GET /reverse_connections/request${nul} HTTP/1.1`, ...ids('n1')]
            : where === 1
              ? [requestLine, ...ids(`n${nul}1`)]
              : [requestLine, `x-envoy${nul}-reverse-tunnel-node-id: n1`, ...ids('n1').slice(1)],
        ),
      };
    },
    () => {
      const count = int(101, 3000);
      const lines = Array.from({ length: count }, (_, n) => `x-h${n}: v`);
      return {
        kind: 'huge header count',
        expect: 'rejected',
        bytes: head([requestLine, ...ids('n1'), ...lines]),
      };
    },
    () => ({
      kind: 'bare LF line endings',
      expect: 'rejected',
      bytes: Buffer.from(`${requestLine}\n${ids('n1').join('\n')}\n\n`, 'latin1'),
    }),
    () => ({
      kind: 'a body',
      expect: 'rejected',
      bytes: head([
        requestLine,
        ...ids('n1'),
        int(0, 1) === 0 ? 'content-length: 5' : 'transfer-encoding: chunked',
      ]),
    }),
    () => {
      const all = ids('n1');
      const drop = int(0, 2);
      return {
        kind: 'missing or repeated ids',
        expect: 'rejected',
        bytes: head(
          int(0, 1) === 0
            ? [requestLine, ...all.filter((_, n) => n !== drop)]
            : [requestLine, ...all, all[drop] as string],
        ),
      };
    },
    () => ({
      kind: 'obsolete line folding',
      expect: 'rejected',
      bytes: head([requestLine, ...ids('n1'), 'x-folded: a', ' b']),
    }),
  ];
}

/** Connects, sends the case, and resolves when the responder has closed the connection. */
function run(address: HostPort, testCase: Case): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    let answer = Buffer.alloc(0);
    let drip: NodeJS.Timeout | undefined;
    const socket = net.connect(address.port, address.host);
    // Never closed from this side before the responder closes (the test would measure itself).
    const guard = setTimeout(
      () => {
        socket.destroy();
        reject(
          new Error(`${testCase.kind}: still open after ${handshakeTimeoutMs + 10 * slackMs} ms`),
        );
      },
      handshakeTimeoutMs + 10 * slackMs,
    );
    socket.on('connect', () => {
      if (testCase.dripMs === undefined) {
        if (testCase.bytes.length > 0) socket.write(testCase.bytes);
        return;
      }
      let next = 0;
      drip = setInterval(() => {
        if (next < testCase.bytes.length) socket.write(testCase.bytes.subarray(next, ++next));
      }, testCase.dripMs);
    });
    socket.on('data', (chunk: Buffer) => {
      if (answer.length < 200) answer = Buffer.concat([answer, chunk]).subarray(0, 200);
    });
    // The responder may reset a connection whose bytes it did not read; that is a close too.
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(guard);
      clearInterval(drip);
      resolve({
        kind: testCase.kind,
        expect: testCase.expect,
        closedAfterMs: Date.now() - started,
        answer: answer.toString('latin1').replace(/\r\n/g, ' '),
      });
    });
  });
}

/** Runs `cases` with at most `limit` in flight. */
async function runAll(
  address: HostPort,
  cases: readonly Case[],
  limit: number,
): Promise<Outcome[]> {
  const outcomes: Outcome[] = new Array<Outcome>(cases.length);
  let next = 0;
  const worker = async () => {
    for (let index = next++; index < cases.length; index = next++) {
      outcomes[index] = await run(address, cases[index] as Case);
    }
  };
  await Promise.all(Array.from({ length: limit }, worker));
  return outcomes;
}

/** The first bytes a TLS client sends: a real ClientHello from node:tls. */
async function captureClientHello(): Promise<Buffer> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  try {
    const first = new Promise<Buffer>((resolve) =>
      server.once('connection', (socket) => {
        socket.once('data', (chunk: Buffer) => {
          resolve(chunk);
          socket.destroy();
        });
      }),
    );
    const client = tls.connect({ host: '127.0.0.1', port, servername: 'responder.example' });
    client.on('error', () => {});
    const hello = await first;
    client.destroy();
    return hello;
  } finally {
    server.close();
  }
}

/** Every `reverse_tunnel.handshake.*` counter: a rejection may count in any of them. */
const counterNames = handshakeCounters;

describe('1000 malformed handshakes against a responder', () => {
  let responder: Responder;
  let crashes: CrashWatch;
  const closeReasons = new Map<string, number>();

  before(async () => {
    crashes = new CrashWatch();
    responder = await startResponder({
      tunnel_listener: {
        address: '127.0.0.1:0',
        handshake_timeout: `${handshakeTimeoutMs}ms`,
        max_pending_handshakes: parallel * 2,
        max_pending_handshakes_per_source: parallel * 2,
        // No RPING during the test: an accepted tunnel is closed for its garbage, not a missed echo.
        ping_interval: '300s',
      },
      egress_listeners: [{ address: '127.0.0.1:0' }],
    });
    responder.on('tunnel_closed', (_identity, reason) =>
      closeReasons.set(reason, (closeReasons.get(reason) ?? 0) + 1),
    );
  });

  after(async () => {
    crashes.stop();
    await responder?.close({ graceMs: 0 });
  });

  it('survives them all, closes each by the deadline, counts each, and gives the memory back', async () => {
    const address = responder.addresses.tunnel;
    const random = prng(seed);
    const makers = generators(random, await captureClientHello());
    const cases = Array.from({ length: caseCount }, (_, i) =>
      (makers[i % makers.length] as (i: number) => Case)(i),
    );

    // Warm-up: the same kinds once each, so that code paths, JIT and lazily created buffers exist
    // before the baseline is taken.
    const warmUp = makers.map((make, i) => make(caseCount + i));
    await runAll(address, warmUp, warmUp.length);
    const countsBefore = new Map(counterNames.map((name) => [name, counter(name)]));
    const reasonsBefore = new Map(closeReasons);
    const baseline: MemoryFigures = await settledMemory();

    const startedAt = Date.now();
    const outcomes = await runAll(address, cases, parallel);
    const elapsedMs = Date.now() - startedAt;
    // The last idle_protocol_error closes may be reported a turn after the client saw the close.
    await new Promise((resolve) => setTimeout(resolve, 50));
    const settled = await settledMemory();

    const counted = new Map(
      counterNames.map((name) => [name, counter(name) - (countsBefore.get(name) ?? 0)]),
    );
    const protocolErrors =
      (closeReasons.get('idle_protocol_error') ?? 0) -
      (reasonsBefore.get('idle_protocol_error') ?? 0);
    report(outcomes, counted, protocolErrors, elapsedMs, baseline, settled);

    // Every check is made and every failure listed, so that one weakness does not hide another.
    const failures: string[] = [];
    const check = (ok: boolean, what: string) => {
      if (!ok) failures.push(what);
    };
    check(
      crashes.errors.length === 0,
      `uncaught exceptions: ${crashes.errors.map(String).join('; ')}`,
    );
    for (const outcome of outcomes) {
      check(
        outcome.closedAfterMs <= handshakeTimeoutMs + slackMs,
        `${outcome.kind}: closed after ${outcome.closedAfterMs} ms, beyond ${handshakeTimeoutMs} + ${slackMs} ms`,
      );
      if (outcome.expect === 'timeout') {
        check(
          outcome.closedAfterMs >= handshakeTimeoutMs - 50,
          `${outcome.kind}: closed after ${outcome.closedAfterMs} ms, before the deadline`,
        );
        check(
          outcome.answer === '',
          `${outcome.kind}: answered "${outcome.answer}" before the deadline`,
        );
      }
      if (outcome.expect === 'rejected') {
        check(
          /^HTTP\/1\.1 4\d\d/.test(outcome.answer),
          `${outcome.kind}: answered "${outcome.answer}"`,
        );
      }
      if (outcome.expect === 'accepted_then_garbage') {
        check(
          outcome.answer.startsWith('HTTP/1.1 200'),
          `${outcome.kind}: answered "${outcome.answer}", not 200`,
        );
      }
    }
    const garbage = outcomes.filter((outcome) => outcome.expect === 'accepted_then_garbage').length;
    const mustReject = outcomes.length - garbage;
    const rejections = counterNames
      .filter((name) => name !== 'accepted')
      .reduce((sum, name) => sum + (counted.get(name) ?? 0), 0);
    check(
      rejections === mustReject,
      `the rejection and timeout counters add up to ${rejections}, not to the ${mustReject} cases that must be rejected`,
    );
    check(
      counted.get('accepted') === garbage,
      `accepted is ${counted.get('accepted')}, not the ${garbage} valid prefixes`,
    );
    check(
      protocolErrors === garbage,
      `${protocolErrors} idle_protocol_error closes, not ${garbage}`,
    );
    const timeouts = outcomes.filter((outcome) => outcome.expect === 'timeout').length;
    check(
      (counted.get('timeout') ?? 0) >= timeouts,
      `timeout is ${counted.get('timeout')}, below the ${timeouts} incomplete handshakes`,
    );
    check(
      settled.heapUsed - baseline.heapUsed < 5 * 1024 * 1024,
      `heap after GC beyond +5 MiB of the baseline: ${describeGrowth(baseline, settled)}`,
    );
    check(responder.tunnels().length === 0, 'a tunnel is left registered');
    // One line per distinct failure, with how often it happened.
    const distinct = new Map<string, number>();
    for (const failure of failures) {
      const key = failure.replace(/\d+ ms/g, 'N ms');
      distinct.set(key, (distinct.get(key) ?? 0) + 1);
    }
    assert.deepEqual(
      [...distinct].map(([failure, times]) => `${failure} (×${times})`),
      [],
    );
  });

  function counter(name: string): number {
    const stat = responder.stats
      .snapshot()
      .find((s) => s.name === `reverse_tunnel.handshake.${name}`);
    return stat?.value ?? 0;
  }
});

function report(
  outcomes: readonly Outcome[],
  counted: ReadonlyMap<string, number>,
  protocolErrors: number,
  elapsedMs: number,
  baseline: MemoryFigures,
  settled: MemoryFigures,
): void {
  const byKind = new Map<string, number[]>();
  const answers = new Map<string, Map<string, number>>();
  for (const outcome of outcomes) {
    const times = byKind.get(outcome.kind) ?? [];
    times.push(outcome.closedAfterMs);
    byKind.set(outcome.kind, times);
    const seen = answers.get(outcome.kind) ?? new Map<string, number>();
    const status = /^HTTP\/1\.1 (\d{3})/.exec(outcome.answer)?.[1] ?? 'none';
    seen.set(status, (seen.get(status) ?? 0) + 1);
    answers.set(outcome.kind, seen);
  }
  const lines = [
    `${outcomes.length} malformed handshakes (seed ${seed}), ${parallel} in flight, handshake_timeout ${handshakeTimeoutMs} ms: ${elapsedMs} ms in all`,
    'close time after connect, ms (min / median / max), by kind:',
  ];
  for (const [kind, times] of byKind) {
    times.sort((a, b) => a - b);
    const median = times[Math.floor(times.length / 2)] ?? 0;
    const statuses = [...(answers.get(kind) ?? [])].map(([status, n]) => `${status}×${n}`);
    lines.push(
      `  ${kind.padEnd(28)} ${String(times.length).padStart(4)} cases  ${times[0]} / ${median} / ${times.at(-1)}  answers ${statuses.join(' ')}`,
    );
  }
  lines.push(
    `counters: ${[...counted].map(([name, value]) => `${name} ${value}`).join(', ')}; idle_protocol_error closes ${protocolErrors}`,
    `memory: ${describeGrowth(baseline, settled)}`,
  );
  process.stdout.write(`# ${lines.join('\n# ')}\n`);
}
