/**
 * A tunnel killed under a request in flight (issue 5, done-when): the tunnel's TCP connection is cut
 * at a relay between initiator and responder, both sides at once (RST or FIN, alternately), while
 * the local service holds the request, before or after its response headers. What must hold, every
 * time: before headers the caller gets 502 within 1 s of the kill; after headers the caller's
 * response is aborted (never a clean end of a truncated body), whether it declared a content-length
 * or is chunked; no request hangs; the local call is cancelled; the request is not sent again; and
 * the initiator has a tunnel registered at the responder again within 2 s.
 */
import assert from 'node:assert/strict';
import http, {
  type IncomingHttpHeaders,
  type IncomingMessage,
  type ServerResponse,
} from 'node:http';
import { after, before, describe, it, type TestContext } from 'node:test';
import { startInitiator, startResponder, type Initiator, type Responder } from '../../src/index.ts';
import { startService, type TestService } from '../helpers/http.ts';
import { Relay } from '../helpers/relay.ts';
import { tunnelsRegistered, waitForEvent } from '../helpers/tunnels.ts';

const node = 'n1';
/** Each iteration's deadline: past it the iteration counts as a hang. */
const iterationDeadlineMs = 5_000;
/** Before headers, the 502 is due this soon after the kill. */
const badGatewayBoundMs = 1_000;
/** The initiator has a tunnel registered at the responder again this soon after the kill. */
const reconnectBoundMs = 2_000;
/** After this many failed iterations a run stops early: the rest would only repeat them. */
const maxFailures = 5;

/** After headers the local service sends this much of the body, then holds the rest. */
const partBytes = 4096;
/** The body a content-length response declares: far more than is ever sent. */
const declaredBytes = 64 * 1024;

type Phase = 'before-headers' | 'after-headers-content-length' | 'after-headers-chunked';
type Cut = 'reset' | 'destroy';

/** A request the local service holds: it never ends it; the tunnel's death must. */
interface Arrival {
  readonly res: ServerResponse;
  /** Resolves with the time the local call closed (the initiator cancelling it). */
  readonly closed: Promise<number>;
}

/** How a caller's exchange ended. */
interface CallEnd {
  /** `complete`: a clean end of the whole message as framed; `aborted`: an error or a close first. */
  readonly how: 'complete' | 'aborted' | 'deadline';
  readonly at: number;
  readonly error?: string;
}

interface Call {
  readonly startedAt: number;
  headersAt: number | undefined;
  status: number | undefined;
  headers: IncomingHttpHeaders | undefined;
  bytes: number;
  readonly chunks: Buffer[];
  /** Resolves true once the headers and `untilBytes` body bytes are in, false if it ended first. */
  readonly reached: Promise<boolean>;
  readonly ended: Promise<CallEnd>;
}

/**
 * One HTTP/1.1 request to the egress listener on its own connection, watched as it goes: when its
 * headers come, how many body bytes, and how it ends. Destroyed at `deadlineAt` (a `deadline` end).
 */
function call(
  target: { host: string; port: number },
  path: string,
  untilBytes: number,
  deadlineAt: number,
): Call {
  let onReached: (value: boolean) => void = () => {};
  let onEnded: (end: CallEnd) => void = () => {};
  const state: Call = {
    startedAt: Date.now(),
    headersAt: undefined,
    status: undefined,
    headers: undefined,
    bytes: 0,
    chunks: [],
    reached: new Promise((resolve) => (onReached = resolve)),
    ended: new Promise((resolve) => (onEnded = resolve)),
  };
  let settled = false;
  const end = (how: CallEnd['how'], error?: unknown) => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    onReached(false);
    onEnded({
      how,
      at: Date.now(),
      ...(error === undefined ? {} : { error: String((error as Error).message ?? error) }),
    });
  };
  const outgoing = http.request(
    {
      host: target.host,
      port: target.port,
      path,
      headers: { 'x-node-id': node },
      agent: false,
    },
    (response: IncomingMessage) => {
      state.headersAt = Date.now();
      state.status = response.statusCode;
      state.headers = response.headers;
      if (untilBytes === 0) onReached(true);
      response.on('data', (chunk: Buffer) => {
        state.chunks.push(chunk);
        state.bytes += chunk.length;
        if (state.bytes >= untilBytes) onReached(true);
      });
      response.on('error', (error) => end('aborted', error));
      response.on('aborted', () => end('aborted', new Error('response aborted')));
      response.on('end', () => end(response.complete ? 'complete' : 'aborted'));
      response.on('close', () => end('aborted', new Error('closed before the end of the body')));
    },
  );
  outgoing.on('error', (error) => end('aborted', error));
  outgoing.on('close', () => end('aborted', new Error('connection closed')));
  const timer = setTimeout(
    () => {
      end('deadline');
      outgoing.destroy(new Error(`${path}: no end within ${iterationDeadlineMs} ms`));
    },
    Math.max(0, deadlineAt - Date.now()),
  );
  outgoing.end();
  return state;
}

/** `promise`'s value, or `undefined` once `deadlineAt` has passed; the timer is cleared either way. */
async function byDeadline<T>(promise: Promise<T>, deadlineAt: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), Math.max(0, deadlineAt - Date.now()));
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length - 1) * p))]!;
}

describe('a tunnel killed mid-request', () => {
  let service: TestService;
  let responder: Responder;
  let relay: Relay;
  let initiator: Initiator;
  const arrivals = new Map<string, Arrival>();
  /** How often each path reached the local service: more than once is a repeated request. */
  const arrivalCounts = new Map<string, number>();
  const arrivalWaiters = new Map<string, (arrival: Arrival) => void>();
  const closeReasons = new Map<string, number>();

  before(async () => {
    service = await startService((req: IncomingMessage, res: ServerResponse) => {
      const path = req.url ?? '';
      const arrival: Arrival = {
        res,
        closed: new Promise((resolve) => res.once('close', () => resolve(Date.now()))),
      };
      res.on('error', () => {});
      arrivals.set(path, arrival);
      arrivalCounts.set(path, (arrivalCounts.get(path) ?? 0) + 1);
      if (path.startsWith('/after-headers-content-length/')) {
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': declaredBytes });
        res.write(Buffer.alloc(partBytes, 'c'));
      } else if (path.startsWith('/after-headers-chunked/')) {
        // No content-length: HTTP/1.1 frames the body in chunks, and the last one never comes.
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write(Buffer.alloc(partBytes, 'k'));
      } else if (path === '/warm') {
        res.end('ok');
      }
      // /before-headers/…: held, no answer at all.
      arrivalWaiters.get(path)?.(arrival);
    });
    responder = await startResponder({
      tunnel_listener: { address: '127.0.0.1:0' },
      egress_listeners: [{ address: '127.0.0.1:0' }],
    });
    responder.on('tunnel_closed', (_identity, reason) =>
      closeReasons.set(reason, (closeReasons.get(reason) ?? 0) + 1),
    );
    relay = await new Relay(responder.addresses.tunnel).listen();
    const registered = tunnelsRegistered(responder, node);
    initiator = await startInitiator({
      node_id: node,
      cluster_id: 'c1',
      tenant_id: 't1',
      remote_clusters: [
        { name: 'r', hosts: [`127.0.0.1:${relay.address.port}`], tunnels_per_host: 1 },
      ],
      local_routes: [{ prefix: '/', target: service.target }],
    });
    await registered;
    const warm = call(responder.addresses.egress[0]!, '/warm', 0, Date.now() + 5_000);
    const warmEnd = await warm.ended;
    assert.equal(warm.status, 200);
    assert.equal(warmEnd.how, 'complete');
  });

  after(async () => {
    for (const { res } of arrivals.values()) res.destroy();
    await initiator.close({ graceMs: 1_000 });
    await responder.close({ graceMs: 1_000 });
    await relay.close();
    await service.close();
  });

  /** Resolves when `path` reaches the local service, or with undefined at `deadlineAt`. */
  function arrivalOf(path: string, deadlineAt: number): Promise<Arrival | undefined> {
    const arrived = new Promise<Arrival>((resolve) => arrivalWaiters.set(path, resolve));
    return byDeadline(arrived, deadlineAt).finally(() => arrivalWaiters.delete(path));
  }

  interface Iteration {
    /** Problems found; none means the iteration passed. */
    readonly failures: string[];
    /** Kill → 502 headers at the caller (before headers only). */
    badGatewayMs?: number;
    /** Kill → the caller's response aborted (after headers only). */
    abortedMs?: number;
    /** What the caller saw as its response was aborted (after headers only). */
    abortedWith?: string;
    /** Kill → a tunnel from the node registered again at the responder. */
    reconnectMs?: number;
    /** Kill → the local call closed. */
    localCancelMs?: number;
  }

  async function killOnce(phase: Phase, index: number, cut: Cut): Promise<Iteration> {
    const result: Iteration = { failures: [] };
    const deadlineAt = Date.now() + iterationDeadlineMs;
    const path = `/${phase}/${index}`;
    const arrived = arrivalOf(path, deadlineAt);
    const before = phase === 'before-headers';
    const caller = call(responder.addresses.egress[0]!, path, before ? 0 : partBytes, deadlineAt);
    // The kill point: the local service holds the request, or the caller has headers and body.
    const arrival = await arrived;
    if (arrival === undefined) {
      result.failures.push('the request never reached the local service');
      await caller.ended;
      return result;
    }
    if (!before && !(await caller.reached)) {
      result.failures.push(`the caller never got headers and ${partBytes} body bytes`);
      return result;
    }
    if (before && caller.headersAt !== undefined) {
      result.failures.push(`the caller got ${caller.status} before the kill`);
      return result;
    }
    const reconnected = waitForEvent<[{ nodeId: string }]>(
      responder,
      'tunnel_setup',
      (identity) => identity.nodeId === node,
      iterationDeadlineMs,
    ).then(
      () => Date.now(),
      () => undefined,
    );
    const killedAt = Date.now();
    const connections = relay.cut(cut);
    if (connections !== 1) result.failures.push(`cut ${connections} connections, not 1`);

    const end = await caller.ended;
    if (end.how === 'deadline') {
      result.failures.push(
        `hang: no end within ${iterationDeadlineMs} ms (status ${caller.status ?? 'none'}, ${caller.bytes} body bytes)`,
      );
    } else if (before) {
      if (caller.status === undefined || caller.headersAt === undefined) {
        result.failures.push(`no response, the connection ended: ${end.error ?? end.how}`);
      } else {
        result.badGatewayMs = caller.headersAt - killedAt;
        if (caller.status !== 502) result.failures.push(`status ${caller.status}, not 502`);
        if (result.badGatewayMs > badGatewayBoundMs) {
          result.failures.push(`502 after ${result.badGatewayMs} ms`);
        }
        if (end.how !== 'complete') result.failures.push(`the 502 itself was cut: ${end.error}`);
        const text = Buffer.concat(caller.chunks).toString('utf8');
        if (!/failed before the response/.test(text)) result.failures.push(`502 body: ${text}`);
      }
    } else {
      result.abortedMs = end.at - killedAt;
      result.abortedWith = end.error ?? end.how;
      const chunked = phase === 'after-headers-chunked';
      const framing = chunked
        ? caller.headers?.['transfer-encoding'] === 'chunked' &&
          caller.headers['content-length'] === undefined
        : caller.headers?.['content-length'] === String(declaredBytes);
      if (!framing) {
        result.failures.push(`not ${phase} framing: ${JSON.stringify(caller.headers)}`);
      }
      if (end.how === 'complete') {
        result.failures.push(
          `clean-looking truncated response: ${caller.bytes} bytes ended as complete`,
        );
      }
    }

    const reconnectAt = await reconnected;
    if (reconnectAt === undefined) {
      result.failures.push(`no tunnel registered again within ${iterationDeadlineMs} ms`);
    } else {
      result.reconnectMs = reconnectAt - killedAt;
      if (result.reconnectMs > reconnectBoundMs) {
        result.failures.push(`tunnel registered again after ${result.reconnectMs} ms`);
      }
    }
    const cancelledAt = await byDeadline(arrival.closed, deadlineAt);
    if (cancelledAt === undefined) result.failures.push('the local call was never cancelled');
    else result.localCancelMs = cancelledAt - killedAt;
    return result;
  }

  /** Runs `iterations` kills in `phase`, alternating RST and FIN, and reports what happened. */
  async function run(t: TestContext, phase: Phase, iterations: number): Promise<Iteration[]> {
    const startedAt = Date.now();
    const results: Iteration[] = [];
    const outcomes = new Map<string, number>();
    const failed: string[] = [];
    for (let index = 0; index < iterations && failed.length < maxFailures; index += 1) {
      const cut: Cut = index % 2 === 0 ? 'reset' : 'destroy';
      const result = await killOnce(phase, index, cut);
      results.push(result);
      const outcome =
        result.failures.length > 0 ? 'failed' : phase === 'before-headers' ? '502' : 'aborted';
      outcomes.set(`${outcome} (${cut})`, (outcomes.get(`${outcome} (${cut})`) ?? 0) + 1);
      if (result.failures.length > 0)
        failed.push(`#${index} (${cut}): ${result.failures.join('; ')}`);
    }
    const figures = (name: string, values: Array<number | undefined>) => {
      const known = values.filter((value): value is number => value !== undefined);
      if (known.length === 0) return `${name}: none measured`;
      return `${name} p50 ${percentile(known, 0.5)} ms, max ${Math.max(...known)} ms`;
    };
    t.diagnostic(
      `${phase}: ${results.length} iterations in ${Date.now() - startedAt} ms; ` +
        [...outcomes].map(([outcome, count]) => `${outcome}: ${count}`).join(', '),
    );
    if (phase === 'before-headers') {
      t.diagnostic(
        figures(
          '502 latency',
          results.map((r) => r.badGatewayMs),
        ),
      );
    } else {
      t.diagnostic(
        figures(
          'caller aborted after',
          results.map((r) => r.abortedMs),
        ),
      );
      const seen = new Map<string, number>();
      for (const { abortedWith } of results) {
        if (abortedWith !== undefined) seen.set(abortedWith, (seen.get(abortedWith) ?? 0) + 1);
      }
      t.diagnostic(
        `the caller saw: ${[...seen].map(([error, count]) => `"${error}" ${count}`).join(', ')}`,
      );
    }
    t.diagnostic(
      figures(
        'reconnect',
        results.map((r) => r.reconnectMs),
      ),
    );
    t.diagnostic(
      figures(
        'local call cancelled after',
        results.map((r) => r.localCancelMs),
      ),
    );
    const repeated = [...arrivalCounts].filter(
      ([path, count]) => path.startsWith(`/${phase}/`) && count > 1,
    );
    assert.deepEqual(repeated, [], 'a request reached the local service more than once');
    assert.deepEqual(failed, []);
    assert.equal(results.length, iterations);
    return results;
  }

  it('answers 502 within 1 s when the tunnel dies before the response headers, 100 times', async (t) => {
    await run(t, 'before-headers', 100);
  });

  it('aborts a content-length response when the tunnel dies after its headers, 100 times', async (t) => {
    await run(t, 'after-headers-content-length', 100);
  });

  it('aborts a chunked response when the tunnel dies after its headers, 100 times', async (t) => {
    await run(t, 'after-headers-chunked', 100);
    t.diagnostic(
      `tunnel close reasons at the responder over the file: ${[...closeReasons].map(([reason, count]) => `${reason} ${count}`).join(', ')}`,
    );
  });
});
