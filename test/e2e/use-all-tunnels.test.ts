/**
 * `use_all_tunnels` (issue 6): a node's streams spread over all its tunnels, the least loaded
 * first, instead of one HTTP/2 connection until its stream limit (the default, which
 * test/conformance/end-to-end.test.ts checks).
 */
import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import type { Initiator } from '../../src/initiator/initiator.ts';
import type { Responder } from '../../src/responder/responder.ts';
import { request, startService, type TestService } from '../helpers/http.ts';
import { connectedInitiator, responderOnFreePorts, waitForEvent } from '../helpers/tunnels.ts';

const node = 'spread-node';
const headers = { 'x-node-id': node };

describe('use_all_tunnels', () => {
  let responder: Responder;
  let initiator: Initiator;
  let service: TestService;
  /** 'held' when a /hold request reaches the service; release() answers every held one. */
  const holds = new EventEmitter();
  const held: Array<() => void> = [];

  before(async () => {
    service = await startService((req, res) => {
      if (req.url?.startsWith('/hold') === true) {
        held.push(() => res.end('released'));
        holds.emit('held');
        return;
      }
      res.end('ok');
    });
    responder = await responderOnFreePorts({ use_all_tunnels: true });
    initiator = await connectedInitiator(responder, {
      node,
      tunnels: 3,
      routes: [{ prefix: '/', target: service.target }],
    });
  });

  after(async () => {
    for (const release of held) release();
    await initiator.close();
    await responder.close();
    await service.close();
  });

  const shape = () => responder.tunnels().map(({ idle, sessions }) => ({ idle, sessions }));

  it('checks out another tunnel when the least-loaded one is busy, until all are in use', async () => {
    assert.equal((await request(responder.addresses.egress[0]!, '/a', { headers })).status, 200);
    assert.deepEqual(shape(), [{ idle: 2, sessions: 1 }]);

    const replies: Array<Promise<{ status: number }>> = [];
    for (const expected of [2, 3]) {
      // A request held at the service keeps a stream busy on the least-loaded tunnel …
      const reached = once(holds, 'held');
      replies.push(request(responder.addresses.egress[0]!, `/hold/${expected}`, { headers }));
      await reached;
      // … so the next request, served at once, has another tunnel checked out for those after it.
      const handoff = waitForEvent(responder, 'socket_handoff');
      assert.equal((await request(responder.addresses.egress[0]!, '/b', { headers })).status, 200);
      await handoff;
      assert.deepEqual(shape(), [{ idle: 3 - expected, sessions: expected }]);
    }
    for (const release of held.splice(0)) release();
    assert.deepEqual(
      (await Promise.all(replies)).map((reply) => reply.status),
      [200, 200],
    );
  });
});
