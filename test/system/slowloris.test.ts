/**
 * Slowloris against an egress listener, with Debian's slowhttptest in slow-headers mode (-H): a
 * bounded number of connections that each send a request head and then one more header line every
 * second, never the blank line that ends it. The responder runs in this process on 127.0.0.1 with
 * a short headers_timeout and an initiator in front of a local service, so an honest request during
 * the attack is answered 200 through the tunnel. slowhttptest reaches the listener through a TCP
 * relay of this test that passes every byte and notes, per connection, when it was accepted, what
 * the listener first answered and when the listener closed it.
 *
 * Needs `slowhttptest` on PATH (Debian package slowhttptest); not root.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import net, { type Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Initiator } from '../../src/initiator/initiator.ts';
import { startResponder, type Responder } from '../../src/responder/responder.ts';
import type { HostPort } from '../../src/shared/address.ts';
import { request, startService, type TestService } from '../helpers/http.ts';
import { TestProcess } from '../helpers/process.ts';
import { connectedInitiator } from '../helpers/tunnels.ts';

const headersTimeoutMs = 2_000;
/** How often Node checks headers_timeout (connectionsCheckingInterval in egress-listener.ts). */
const checkIntervalMs = 1_000;
/** For a loaded machine: scheduling, and slowhttptest's own pace. */
const marginMs = 1_000;
/** slowhttptest -c: the slow connections, all opened within the first second (-r). */
const slowConnections = 200;
/** slowhttptest -l: the longest the attack may last; it ends sooner once no connection is left. */
const attackSeconds = 20;
/** Bounds the wait for slowhttptest to end by itself. */
const exitDeadlineMs = (attackSeconds + 10) * 1_000;

/** Fails (never skips) when slowhttptest is missing, saying how to install it. */
function requireSlowhttptest(): void {
  // `slowhttptest -h` prints its usage and exits 1; only a failure to run it means it is missing.
  const probe = spawnSync('slowhttptest', ['-h'], { timeout: 10_000 });
  if (probe.error !== undefined) {
    assert.fail(
      `test/system/slowloris.test.ts needs \`slowhttptest\` on PATH (Debian package slowhttptest: apt-get install slowhttptest): ${probe.error.message}`,
    );
  }
}

interface RelayedConnection {
  readonly acceptedAt: number;
  /** The first line the listener sent, '' if none. */
  answer: string;
  /** When the listener's side closed, or undefined while it is open. */
  listenerClosedAt: number | undefined;
  /** When the caller's side closed first (slowhttptest's probe after its answer). */
  callerClosedAt: number | undefined;
}

/** A TCP relay that passes every byte both ways and keeps a record of each connection. */
class MeasuringRelay {
  readonly #server: net.Server;
  readonly #sockets = new Set<Socket>();
  readonly connections: RelayedConnection[] = [];
  address: HostPort = { host: '127.0.0.1', port: 0 };
  #onAccepted = () => {};

  constructor(target: HostPort) {
    this.#server = net.createServer((inbound) => {
      const record: RelayedConnection = {
        acceptedAt: Date.now(),
        answer: '',
        listenerClosedAt: undefined,
        callerClosedAt: undefined,
      };
      this.connections.push(record);
      const outbound = net.connect(target.port, target.host);
      for (const socket of [inbound, outbound]) {
        this.#sockets.add(socket);
        socket.on('error', () => {});
      }
      // Whichever side ends first (its FIN, or a reset) closed the connection.
      const callerClosed = () => {
        if (record.listenerClosedAt === undefined) record.callerClosedAt ??= Date.now();
      };
      const listenerClosed = () => {
        if (record.callerClosedAt === undefined) record.listenerClosedAt ??= Date.now();
      };
      inbound.on('end', callerClosed);
      inbound.on('close', () => {
        callerClosed();
        this.#sockets.delete(inbound);
        outbound.destroy();
      });
      outbound.on('end', listenerClosed);
      outbound.on('close', () => {
        listenerClosed();
        this.#sockets.delete(outbound);
        inbound.end();
      });
      let head = '';
      outbound.on('data', (chunk: Buffer) => {
        if (head.length < 64) {
          head += chunk.toString('latin1');
          record.answer = head.split('\r\n')[0] ?? '';
        }
      });
      inbound.pipe(outbound);
      outbound.pipe(inbound);
      this.#onAccepted();
    });
  }

  async listen(): Promise<this> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    this.address = { host: '127.0.0.1', port: (this.#server.address() as net.AddressInfo).port };
    return this;
  }

  /** Connections the listener answered 408 (slowhttptest's slow ones). */
  timedOut(): RelayedConnection[] {
    return this.connections.filter((connection) => connection.answer.startsWith('HTTP/1.1 408'));
  }

  /** Open connections the listener has not answered yet: slow ones (a probe is answered at once). */
  waiting(): number {
    return this.connections.filter(
      (connection) =>
        connection.answer === '' &&
        connection.listenerClosedAt === undefined &&
        connection.callerClosedAt === undefined,
    ).length;
  }

  /** Resolves once `count` connections wait at the same time; rejects after `timeoutMs`. */
  whenWaiting(count: number, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#onAccepted = () => {};
        reject(
          new Error(`${this.waiting()} connections waiting after ${timeoutMs} ms, not ${count}`),
        );
      }, timeoutMs);
      this.#onAccepted = () => {
        if (this.waiting() < count) return;
        clearTimeout(timer);
        this.#onAccepted = () => {};
        resolve();
      };
      this.#onAccepted();
    });
  }

  async close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

/** slowhttptest's CSV (-g -o): one row a second. */
interface StatsRow {
  readonly second: number;
  readonly closed: number;
  readonly pending: number;
  readonly connected: number;
  /** The number of connections while the probe was answered, 0 while it was not. */
  readonly serviceAvailable: number;
}

function parseCsv(text: string): StatsRow[] {
  const [header, ...lines] = text.trim().split('\n');
  assert.equal(header, 'Seconds,Closed,Pending,Connected,Service Available');
  return lines.map((line) => {
    const [second, closed, pending, connected, serviceAvailable] = line.split(',').map(Number);
    return {
      second: second ?? NaN,
      closed: closed ?? NaN,
      pending: pending ?? NaN,
      connected: connected ?? NaN,
      serviceAvailable: serviceAvailable ?? NaN,
    };
  });
}

/** slowhttptest's stdout without its terminal colours (ANSI escape sequences: ESC [ … letter). */
// eslint-disable-next-line no-control-regex -- ESC is exactly what is being removed.
const plain = (text: string): string => text.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '');

function spread(values: readonly number[]): string {
  const sorted = [...values].sort((a, b) => a - b);
  return `${sorted[0]} / ${sorted[Math.floor(sorted.length / 2)]} / ${sorted.at(-1)} ms (min / median / max)`;
}

describe(`slowloris (slowhttptest -H, ${slowConnections} connections) against an egress listener with headers_timeout ${headersTimeoutMs} ms`, () => {
  let directory: string;
  let service: TestService;
  let responder: Responder;
  let initiator: Initiator;
  let relay: MeasuringRelay;

  before(async () => {
    requireSlowhttptest();
    directory = await mkdtemp(path.join(os.tmpdir(), 'revtun-slowloris-'));
    service = await startService((_request, response) => response.end('honest'));
    responder = await startResponder({
      tunnel_listener: { address: '127.0.0.1:0' },
      egress_listeners: [{ address: '127.0.0.1:0', headers_timeout: `${headersTimeoutMs}ms` }],
    });
    initiator = await connectedInitiator(responder, {
      node: 'honest',
      routes: [{ prefix: '/', target: service.target }],
    });
    relay = await new MeasuringRelay(responder.addresses.egress[0]!).listen();
  });

  after(async () => {
    await relay?.close();
    await initiator?.close({ graceMs: 0 });
    await responder?.close({ graceMs: 0 });
    await service?.close();
    if (directory !== undefined) await rm(directory, { recursive: true, force: true });
  });

  it('closes every slow connection within headers_timeout and serves an honest request meanwhile', async (t) => {
    const report = path.join(directory, 'slowloris');
    const attack = new TestProcess([
      'slowhttptest',
      '-H',
      ...['-c', `${slowConnections}`],
      ...['-r', `${slowConnections}`],
      // A header line every second: always well inside the timeout, so only headers_timeout
      // (which counts from the first byte, whatever trickles in) can end these connections.
      ...['-i', '1'],
      ...['-l', `${attackSeconds}`],
      // The probe is slowhttptest's own legitimate request each second, with its deadline.
      ...['-p', '2'],
      ...['-g', '-o', report],
      ...['-u', `http://${relay.address.host}:${relay.address.port}/`],
    ]);
    let honest: { status: number; text: string; ms: number; openDuring: number };
    try {
      // Every slow connection is open at once: the attack is in full swing.
      await relay.whenWaiting(slowConnections, 10_000);
      const started = Date.now();
      const reply = await request(responder.addresses.egress[0]!, '/', {
        headers: { 'x-node-id': 'honest' },
        timeoutMs: 5_000,
      });
      honest = {
        status: reply.status,
        text: reply.text,
        ms: Date.now() - started,
        openDuring: relay.waiting(),
      };
      const exit = await attack.waitForExit(exitDeadlineMs);
      assert.deepEqual(exit, { code: 0, signal: null }, attack.describe());
    } finally {
      await attack.stop();
    }

    const out = plain(attack.stdout);
    const rows = parseCsv(await readFile(`${report}.csv`, 'utf8'));
    const slow = relay.timedOut();
    const closedAfter = slow.map(
      (connection) => (connection.listenerClosedAt ?? NaN) - connection.acceptedAt,
    );
    const probes = relay.connections.length - slow.length;
    t.diagnostic(
      `${relay.connections.length} connections relayed: ${slow.length} slow ones answered 408 and closed by the listener after ${spread(closedAfter)}; ${probes} others (slowhttptest's probes)`,
    );
    t.diagnostic(
      `honest request during the attack (${honest.openDuring} slow connections open): ${honest.status} in ${honest.ms} ms`,
    );
    t.diagnostic(
      `slowhttptest: ${/Test ended on \d+\w* second/.exec(out)?.[0] ?? 'no end line'}, ${/Exit status: *(.*)/.exec(out)?.[1]?.trim() ?? 'no exit status'}; CSV second:closed/pending/connected/available ${rows.map((row) => `${row.second}:${row.closed}/${row.pending}/${row.connected}/${row.serviceAvailable}`).join(' ')}`,
    );

    // slowhttptest's view: it held every connection at once, the probe was answered every second,
    // and it stopped because the listener closed them all, long before its time limit.
    assert.equal(Math.max(...rows.map((row) => row.connected)), slowConnections, out);
    for (const row of rows) {
      assert.equal(
        row.serviceAvailable,
        slowConnections,
        `service unavailable at second ${row.second}`,
      );
    }
    assert.match(out, /Exit status: *No open connections left/, out);

    // The listener's view, per connection: each slow one got 408 and was closed by the listener
    // once headers_timeout had passed (not before), within one check interval and a margin.
    assert.equal(
      slow.length,
      slowConnections,
      `408 answers: ${relay.connections.map((c) => c.answer).join(', ')}`,
    );
    const bound = headersTimeoutMs + checkIntervalMs + marginMs;
    for (const ms of closedAfter) {
      assert.ok(
        Number.isFinite(ms),
        'a slow connection answered 408 was not closed by the listener',
      );
      assert.ok(
        ms >= headersTimeoutMs - 50,
        `a slow connection was closed after ${ms} ms, before headers_timeout`,
      );
      assert.ok(ms <= bound, `a slow connection was closed after ${ms} ms, not within ${bound} ms`);
    }

    // The honest caller was served through the tunnel while the attack held its connections.
    assert.equal(honest.status, 200, honest.text);
    assert.equal(honest.text, 'honest');
    assert.ok(
      honest.openDuring > 0,
      'the honest request was answered while slow connections were open',
    );
    assert.ok(honest.ms < 1_000, `the honest request took ${honest.ms} ms`);
  });
});
