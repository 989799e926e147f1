import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
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

describe('a local route with a timeout', () => {
  let responder: Responder;
  let closeInitiator: () => Promise<void>;
  let stalling: TestService;
  let stallingH2: http2.Http2Server;
  /** 'gone' once each held request is closed at the service (the initiator gave it up). */
  const held = new EventEmitter();

  before(async () => {
    responder = await responderOnFreePorts();
    // Never answers; reports when the initiator closes the request.
    stalling = await startService((req, res) => {
      res.on('close', () => held.emit('gone', 'http1'));
    });
    stallingH2 = http2.createServer();
    stallingH2.on('stream', (stream) => {
      stream.on('error', () => {});
      stream.on('close', () => held.emit('gone', 'http2'));
    });
    stallingH2.listen(0, '127.0.0.1');
    await once(stallingH2, 'listening');
    const { port } = stallingH2.address() as AddressInfo;
    const initiator = await connectedInitiator(responder, {
      node: 'n1',
      routes: [
        { path: '/h2', target: `http://127.0.0.1:${port}`, protocol: 'http2', timeout: '200ms' },
        { prefix: '/', target: stalling.target, timeout: '200ms' },
      ],
    });
    closeInitiator = () => initiator.close();
  });

  after(async () => {
    await closeInitiator();
    await responder.close();
    await stalling.close();
    stallingH2.close();
  });

  for (const [path, kind] of [
    ['/slow', 'http1'],
    ['/h2', 'http2'],
  ] as const) {
    it(`answers 504 when the ${kind} service is late, and gives up the request there`, async () => {
      const gone = once(held, 'gone');
      const startedAt = Date.now();
      const reply = await request(egressOf(responder), path, {
        headers: { 'x-node-id': 'n1' },
        timeoutMs: 10_000,
      });
      const tookMs = Date.now() - startedAt;
      assert.equal(reply.status, 504);
      assert.match(reply.text, /did not answer within 200 ms \(the route's timeout\)/);
      assert.ok(tookMs >= 190 && tookMs < 5_000, `answered after ${tookMs} ms`);
      assert.deepEqual(await gone, [kind]);
    });
  }
});
