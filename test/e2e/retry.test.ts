/**
 * One retry on another tunnel, only where nothing can be repeated (issue 5 §2): an idempotent
 * request without a body whose stream the initiator refused (REFUSED_STREAM: not processed, RFC
 * 9113 §8.7). Two fake initiators hold node n1's two tunnels and decide, per stream, to refuse or
 * to answer.
 */
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { after, before, beforeEach, describe, it } from 'node:test';
import { startResponder, type Responder } from '../../src/responder/responder.ts';
import { FakeInitiator } from '../helpers/fake-initiator.ts';
import { request } from '../helpers/http.ts';
import { tunnelsRegistered } from '../helpers/tunnels.ts';

describe('retrying a request the initiator did not process', () => {
  let responder: Responder;
  const fakes: FakeInitiator[] = [];
  /** How each fake treats the streams it gets: refuse them, or answer with its name. */
  const refuses = [false, false];
  /** Refuse the next stream, whichever tunnel it comes to, then answer again. */
  let refuseNext = false;
  let refusedBy: number | undefined;
  const seen = [0, 0];

  before(async () => {
    responder = await startResponder({
      stat_prefix: 'reverse_connections',
      // No RPING while the test runs: a tunnel is checked out at once.
      tunnel_listener: { address: '127.0.0.1:0', ping_interval: '300s' },
      egress_listeners: [{ address: '127.0.0.1:0' }],
    });
    const registered = tunnelsRegistered(responder, 'n1', 2);
    for (let index = 0; index < 2; index += 1) {
      const fake = await FakeInitiator.connect(responder.addresses.tunnel);
      await fake.expectAccepted();
      fakes.push(fake);
      void fake.serveHttp2((stream) => {
        seen[index] = (seen[index] ?? 0) + 1;
        if (refuses[index] === true || refuseNext) {
          refuseNext = false;
          refusedBy = index;
          stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
          return;
        }
        stream.respond({ ':status': 200, 'x-served-by': `fake${index}` });
        stream.end('ok');
      });
    }
    await registered;
  });

  beforeEach(() => {
    seen.fill(0);
  });

  after(async () => {
    for (const fake of fakes) fake.destroy();
    await responder.close({ graceMs: 0 });
  });

  const retries = () =>
    responder.stats.value('cluster.reverse_connection_cluster.upstream_rq_retry') ?? 0;

  /** Makes both tunnels carry HTTP/2, so that a retry has another live session to go to. */
  async function checkOutBoth(): Promise<void> {
    refuses.fill(false);
    const replies = await Promise.all(
      [0, 1, 2, 3].map(() =>
        request(responder.addresses.egress[0]!, '/', { headers: { 'x-node-id': 'n1' } }),
      ),
    );
    for (const reply of replies) assert.equal(reply.status, 200);
  }

  it('sends a refused GET again on the other tunnel, once, and the caller never knows', async () => {
    await checkOutBoth();
    seen.fill(0);
    const before = retries();
    refuseNext = true;
    refusedBy = undefined;
    const reply = await request(responder.addresses.egress[0]!, '/x', {
      headers: { 'x-node-id': 'n1' },
    });
    assert.equal(reply.status, 200);
    assert.notEqual(refusedBy, undefined, 'no stream was refused');
    assert.equal(reply.headers['x-served-by'], `fake${1 - (refusedBy ?? 0)}`);
    assert.equal(retries() - before, 1);
    assert.deepEqual(seen, [1, 1]);
  });

  it('does not retry a POST with a body: the caller gets 502', async () => {
    await checkOutBoth();
    seen.fill(0);
    const before = retries();
    refuses.fill(true);
    const reply = await request(responder.addresses.egress[0]!, '/x', {
      method: 'POST',
      headers: { 'x-node-id': 'n1' },
      body: 'data',
    });
    assert.equal(reply.status, 502);
    assert.equal(retries(), before);
    assert.equal((seen[0] ?? 0) + (seen[1] ?? 0), 1);
  });

  it('retries a GET once only: refused on both tunnels, the caller gets 502', async () => {
    await checkOutBoth();
    seen.fill(0);
    const before = retries();
    refuses.fill(true);
    const reply = await request(responder.addresses.egress[0]!, '/x', {
      headers: { 'x-node-id': 'n1' },
    });
    assert.equal(reply.status, 502);
    assert.equal(retries() - before, 1);
    assert.deepEqual(seen, [1, 1]);
  });
});
