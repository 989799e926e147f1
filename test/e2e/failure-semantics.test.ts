/**
 * Failing loudly and in bounded time (issue 5 §2, §3): a response that does not begin within
 * `response_timeout` gets 504 and the local call is cancelled; a request for a node whose tunnels
 * are all at their stream limit waits in a bounded queue, is served when a stream frees, and gets
 * 503 with Retry-After when the queue is full or its wait runs out.
 */
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { startInitiator, type Initiator } from '../../src/initiator/initiator.ts';
import { startResponder, type Responder } from '../../src/responder/responder.ts';
import { request, startService, type TestService } from '../helpers/http.ts';
import { pollUntil } from '../helpers/process.ts';
import { tunnelsRegistered } from '../helpers/tunnels.ts';

describe('failure semantics at the egress listener', () => {
  let service: TestService;
  let responder: Responder;
  let initiator: Initiator;
  /** Requests the local service holds (/hang), with a way to see them end. */
  const held: Array<{ res: ServerResponse; closed: Promise<void> }> = [];
  let onHeld: () => void = () => {};

  const responseTimeoutMs = 300;
  const pendingTimeoutMs = 400;

  before(async () => {
    service = await startService((req: IncomingMessage, res: ServerResponse) => {
      if (req.url !== '/hang') {
        res.end('ok');
        return;
      }
      held.push({ res, closed: new Promise((resolve) => res.once('close', () => resolve())) });
      onHeld();
    });
    responder = await startResponder({
      tunnel_listener: { address: '127.0.0.1:0' },
      egress_listeners: [
        { address: '127.0.0.1:0', response_timeout: `${responseTimeoutMs}ms` },
        { address: '127.0.0.1:0' },
      ],
      pending_requests: { max_per_node: 1, timeout: `${pendingTimeoutMs}ms` },
    });
    const registered = tunnelsRegistered(responder, 'n1');
    initiator = await startInitiator({
      node_id: 'n1',
      cluster_id: 'c1',
      tenant_id: 't1',
      // One tunnel that carries one stream at a time: the second request has to wait.
      max_concurrent_streams: 1,
      remote_clusters: [
        { name: 'r', hosts: [`127.0.0.1:${responder.addresses.tunnel.port}`], tunnels_per_host: 1 },
      ],
      local_routes: [{ prefix: '/', target: service.target }],
    });
    await registered;
    // The tunnel is checked out and the initiator's SETTINGS (one stream) are known.
    assert.equal((await send(1, '/')).status, 200);
  });

  after(async () => {
    for (const { res } of held) res.destroy();
    await initiator.close();
    await responder.close();
    await service.close();
  });

  const send = (listener: number, path: string) =>
    request(responder.addresses.egress[listener]!, path, { headers: { 'x-node-id': 'n1' } });

  /** Resolves once `count` requests wait in the queue (the responder's gauge). */
  const pendingReaches = (count: number) =>
    pollUntil(
      `${count} waiting requests`,
      () =>
        Promise.resolve(
          (responder.stats.value('reverse_tunnel_acceptor.pending_requests') ?? 0) >= count,
        ),
      { timeoutMs: 5_000, intervalMs: 5 },
    );

  /** Sends /hang on listener 1 and resolves once the local service holds it. */
  async function hang(): Promise<{
    reply: ReturnType<typeof send>;
    release: () => Promise<void>;
  }> {
    const reached = new Promise<void>((resolve) => (onHeld = resolve));
    const reply = send(1, '/hang');
    await reached;
    const entry = held.at(-1)!;
    return {
      reply,
      release: async () => {
        entry.res.end('released');
        await reply;
      },
    };
  }

  it('answers 504 when the response does not begin within response_timeout, and cancels the local call', async (t) => {
    const startedAt = Date.now();
    const reached = new Promise<void>((resolve) => (onHeld = resolve));
    const reply = send(0, '/hang');
    await reached;
    const local = held.at(-1)!;
    const answer = await reply;
    const tookMs = Date.now() - startedAt;
    assert.equal(answer.status, 504);
    assert.match(answer.text, /did not answer within 300 ms \(response_timeout\)/);
    await local.closed; // the initiator cancelled the call to the local service
    t.diagnostic(`504 after ${tookMs} ms (response_timeout ${responseTimeoutMs} ms)`);
    assert.ok(tookMs >= responseTimeoutMs);
  });

  it('queues a request while every stream is taken and serves it when one frees', async () => {
    const first = await hang();
    const queued = send(1, '/');
    await pendingReaches(1);
    // The queue holds one: the next gets 503 with Retry-After at once.
    const full = await send(1, '/');
    assert.equal(full.status, 503);
    assert.equal(full.headers['retry-after'], '1');
    assert.match(full.text, /at its stream limit/);
    await first.release();
    assert.equal((await queued).status, 200);
  });

  it('answers 503 with Retry-After when the wait runs out', async (t) => {
    const first = await hang();
    const startedAt = Date.now();
    const late = await send(1, '/');
    const waitedMs = Date.now() - startedAt;
    assert.equal(late.status, 503);
    assert.equal(late.headers['retry-after'], '1');
    assert.match(late.text, /stayed at its stream limit for 400 ms/);
    t.diagnostic(
      `503 after waiting ${waitedMs} ms (pending_requests.timeout ${pendingTimeoutMs} ms)`,
    );
    assert.ok(waitedMs >= pendingTimeoutMs);
    await first.release();
  });
});
