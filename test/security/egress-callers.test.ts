/**
 * Hostile callers against an egress listener: hundreds of connections that send their headers a
 * byte at a time (slowloris) or nothing at all, and requests with huge headers. The listener runs
 * in this process with a short headers_timeout. Slow connections must be closed by the timeout,
 * oversize heads refused at once with 431, honest callers served meanwhile, and memory bounded.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { Initiator } from '../../src/initiator/initiator.ts';
import { startResponder, type Responder } from '../../src/responder/responder.ts';
import type { HostPort } from '../../src/shared/address.ts';
import { request, startService, type TestService } from '../helpers/http.ts';
import { connectedInitiator } from '../helpers/tunnels.ts';
import { MemoryPeak } from './h2-attack.ts';
import { CrashWatch, describeGrowth, mib, settledMemory } from './memory.ts';

const headersTimeoutMs = 1_000;
/** Node checks the headers timeout of open connections every second (connectionsCheckingInterval). */
const checkIntervalMs = 1_000;
const slackMs = 1_000;
const slowConnections = 500;

interface SlowOutcome {
  readonly closedAfterMs: number;
  readonly answer: string;
}

/**
 * Opens a connection that sends `prefix`, then one more header byte every `dripMs` (never the end
 * of the head), and resolves when the listener closes it.
 */
function slowCaller(address: HostPort, prefix: string, dripMs: number): Promise<SlowOutcome> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    let answer = '';
    let drip: NodeJS.Timeout | undefined;
    const socket = net.connect(address.port, address.host);
    const guard = setTimeout(() => {
      socket.destroy();
      reject(new Error(`a slow caller was still connected after ${10 * headersTimeoutMs} ms`));
    }, 10 * headersTimeoutMs);
    socket.on('connect', () => {
      if (prefix !== '') socket.write(prefix);
      if (dripMs > 0) drip = setInterval(() => socket.write('a'), dripMs);
    });
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      if (answer.length < 64) answer += chunk;
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(guard);
      clearInterval(drip);
      resolve({ closedAfterMs: Date.now() - started, answer: answer.split('\r\n')[0] ?? '' });
    });
  });
}

/** Sends `head` in one write and resolves with the status line and when the listener closed. */
function rawRequest(address: HostPort, head: string): Promise<SlowOutcome> {
  return slowCaller(address, head, 0);
}

function summary(outcomes: readonly SlowOutcome[]): string {
  const times = outcomes.map((outcome) => outcome.closedAfterMs).sort((a, b) => a - b);
  const answers = new Map<string, number>();
  for (const { answer } of outcomes)
    answers.set(answer || '(none)', (answers.get(answer || '(none)') ?? 0) + 1);
  return (
    `closed after ${times[0]} / ${times[Math.floor(times.length / 2)]} / ${times.at(-1)} ms (min / median / max); ` +
    `answers ${[...answers].map(([line, n]) => `"${line}"×${n}`).join(', ')}`
  );
}

describe('hostile callers against an egress listener', () => {
  let service: TestService;
  let responder: Responder;
  let honest: Initiator;
  let crashes: CrashWatch;
  const egress = () => responder.addresses.egress[0]!;

  before(async () => {
    crashes = new CrashWatch();
    service = await startService((_request, response) => response.end('honest'));
    responder = await startResponder({
      tunnel_listener: { address: '127.0.0.1:0' },
      egress_listeners: [{ address: '127.0.0.1:0', headers_timeout: `${headersTimeoutMs}ms` }],
    });
    honest = await connectedInitiator(responder, {
      node: 'honest',
      routes: [{ prefix: '/', target: service.target }],
    });
  });

  after(async () => {
    crashes.stop();
    await honest?.close({ graceMs: 0 });
    await responder?.close({ graceMs: 0 });
    await service?.close();
  });

  /** An honest request during an attack: its status and how long it took. */
  async function honestCall(): Promise<{ status: number; ms: number }> {
    const started = Date.now();
    const reply = await request(egress(), '/', {
      headers: { 'x-node-id': 'honest' },
      timeoutMs: 5_000,
    });
    return { status: reply.status, ms: Date.now() - started };
  }

  it(`closes ${slowConnections} slowloris connections by headers_timeout and serves honest callers meanwhile`, async () => {
    const baseline = await settledMemory();
    const peak = new MemoryPeak();
    const slow = Array.from({ length: slowConnections }, (_, i) =>
      slowCaller(
        egress(),
        // Half have begun their headers, half have not even finished the request line.
        i % 2 === 0 ? 'GET / HTTP/1.1\r\nhost: egress\r\nx-slow: ' : 'GET /slow',
        200,
      ),
    );
    const honestCalls: Array<{ status: number; ms: number }> = [];
    for (let i = 0; i < 5; i += 1) {
      honestCalls.push(await honestCall());
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    const outcomes = await Promise.all(slow);
    peak.stop();
    const settled = await settledMemory();
    process.stdout.write(
      `# ${slowConnections} slowloris connections, headers_timeout ${headersTimeoutMs} ms: ${summary(outcomes)}; ` +
        `honest requests meanwhile ${honestCalls.map((call) => `${call.status} in ${call.ms} ms`).join(', ')}; ` +
        `${peak.describe()}; after GC ${describeGrowth(baseline, settled)}\n`,
    );
    assert.deepEqual(crashes.errors, []);
    const bound = headersTimeoutMs + checkIntervalMs + slackMs;
    const late = outcomes.filter((outcome) => outcome.closedAfterMs > bound);
    assert.equal(
      late.length,
      0,
      `every slow connection closed within ${bound} ms: ${summary(outcomes)}`,
    );
    const early = outcomes.filter((outcome) => outcome.closedAfterMs < headersTimeoutMs - 50);
    assert.equal(early.length, 0, `none closed before headers_timeout: ${summary(early)}`);
    for (const call of honestCalls) {
      assert.equal(call.status, 200);
      assert.ok(call.ms < 1_000, `an honest request took ${call.ms} ms during the attack`);
    }
    assert.ok(
      settled.heapUsed - baseline.heapUsed < 8 * 1024 * 1024,
      `heap after GC: ${describeGrowth(baseline, settled)}`,
    );
  });

  it(`closes ${slowConnections} connections that send nothing by headers_timeout`, async () => {
    const outcomes = await Promise.all(
      Array.from({ length: slowConnections }, () => slowCaller(egress(), '', 0)),
    );
    process.stdout.write(`# ${slowConnections} silent connections: ${summary(outcomes)}\n`);
    const bound = headersTimeoutMs + checkIntervalMs + slackMs;
    assert.equal(
      outcomes.filter((outcome) => outcome.closedAfterMs > bound).length,
      0,
      `every silent connection closed within ${bound} ms: ${summary(outcomes)}`,
    );
  });

  it('refuses 200 requests with a 64 KiB header with 431 at once', async () => {
    const baseline = await settledMemory();
    const peak = new MemoryPeak();
    const big = `GET / HTTP/1.1\r\nhost: egress\r\nx-node-id: honest\r\nx-big: ${'b'.repeat(64 * 1024)}\r\n\r\n`;
    const outcomes = await Promise.all(
      Array.from({ length: 200 }, () => rawRequest(egress(), big)),
    );
    peak.stop();
    const settled = await settledMemory();
    process.stdout.write(
      `# 200 requests with a 64 KiB header: ${summary(outcomes)}; ${peak.describe()}; after GC ${describeGrowth(baseline, settled)}\n`,
    );
    assert.deepEqual(crashes.errors, []);
    for (const outcome of outcomes) {
      assert.equal(outcome.answer, 'HTTP/1.1 431 Request Header Fields Too Large');
      assert.ok(outcome.closedAfterMs < 2_000, `closed after ${outcome.closedAfterMs} ms`);
    }
    assert.ok(
      peak.heapUsed + peak.arrayBuffers - baseline.heapUsed - baseline.arrayBuffers <
        64 * 1024 * 1024,
      `memory at the peak: ${peak.describe()} from ${mib(baseline.heapUsed)}`,
    );
    assert.equal((await honestCall()).status, 200);
  });

  it('refuses a request with 1000 header fields (within max_header_bytes) with 431', async () => {
    const fields = Array.from({ length: 1000 }, (_, i) => `x-f${i}: v`).join('\r\n');
    const outcome = await rawRequest(
      egress(),
      `GET / HTTP/1.1\r\nhost: egress\r\nx-node-id: honest\r\n${fields}\r\n\r\n`,
    );
    process.stdout.write(`# 1000 header fields: ${summary([outcome])}\n`);
    assert.match(outcome.answer, /^HTTP\/1\.1 431 /);
    // Bad input gets a clear error with the connection closed (not kept alive for the next request).
    assert.ok(
      outcome.closedAfterMs < 2_000,
      `the connection was closed after ${outcome.closedAfterMs} ms`,
    );
    assert.equal((await honestCall()).status, 200, 'the honest node is still served');
  });
});
