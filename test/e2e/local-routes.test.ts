import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Responder } from '../../src/responder/responder.ts';
import { request, startNamedService, startService, type TestService } from '../helpers/http.ts';
import { connectedInitiator, responderOnFreePorts } from '../helpers/tunnels.ts';

const egressOf = (responder: Responder) => responder.addresses.egress[0]!;

describe('local routes through a tunnel', () => {
  let responder: Responder;
  let a: TestService;
  let b: TestService;
  let broken: TestService;
  let closeInitiator: () => Promise<void>;

  /** One request through the tunnel: its status and, for a named service, who served which url. */
  async function send(path: string, host?: string) {
    const reply = await request(egressOf(responder), path, {
      headers: { 'x-node-id': 'n1', ...(host === undefined ? {} : { host }) },
      timeoutMs: 10_000,
    });
    if (reply.status !== 200) return { status: reply.status, name: '', url: '' };
    const seen = JSON.parse(reply.text) as { name: string; url: string };
    return { status: reply.status, name: seen.name, url: seen.url };
  }

  before(async () => {
    responder = await responderOnFreePorts();
    a = await startNamedService('a');
    b = await startNamedService('b');
    broken = await startService((req, res) => {
      req.resume();
      res.writeHead(500).end('broken\n');
    });
    const initiator = await connectedInitiator(responder, {
      node: 'n1',
      routes: [
        {
          path: '/flaky',
          targets: [broken.target, a.target],
          outlier_detection: { consecutive_failures: 2, ejection_time: '1m' },
        },
        { regex: '/v[0-9]+/items', target: b.target },
        { prefix: '/api/', prefix_rewrite: '/', targets: [a.target, b.target] },
        { prefix: '/', host: '*.example.com', target: b.target },
        { prefix: '/', target: a.target },
      ],
    });
    closeInitiator = () => initiator.close();
  });

  after(async () => {
    await closeInitiator();
    await responder.close();
    for (const service of [a, b, broken]) await service.close();
  });

  it('takes turns over the targets and sends the rewritten path with its query', async () => {
    const replies = [];
    for (let i = 0; i < 4; i += 1) replies.push(await send(`/api/v1/x?i=${i}`));
    assert.deepEqual(
      replies.map((reply) => `${reply.name} ${reply.url}`),
      ['a /v1/x?i=0', 'b /v1/x?i=1', 'a /v1/x?i=2', 'b /v1/x?i=3'],
    );
  });

  it('routes by host, wildcard and port included, before the catch-all', async () => {
    assert.equal((await send('/x', 'shop.example.com:8080')).name, 'b');
    assert.equal((await send('/x', 'SHOP.EXAMPLE.COM')).name, 'b');
    assert.equal((await send('/x', 'example.com')).name, 'a');
    assert.equal((await send('/x')).name, 'a');
  });

  it('matches a regex route on the whole path only', async () => {
    assert.equal((await send('/v2/items?page=1')).name, 'b');
    assert.equal((await send('/v2/items/1')).name, 'a');
  });

  it('ejects a target after consecutive 5xx answers and sends the rest elsewhere', async () => {
    const statuses = [];
    for (let i = 0; i < 7; i += 1) statuses.push((await send('/flaky')).status);
    // broken, a, broken (second failure in a row: ejected), then a only.
    assert.deepEqual(statuses, [500, 200, 500, 200, 200, 200, 200]);
  });
});
