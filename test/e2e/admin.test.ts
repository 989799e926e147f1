import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startResponder, type Responder } from '../../src/responder/responder.ts';
import { request } from '../helpers/http.ts';

describe('the admin server', () => {
  let responder: Responder;
  let directory: string;
  const admin = () => responder.addresses.admin!;

  before(async () => {
    directory = await mkdtemp(path.join(os.tmpdir(), 'revtun-admin-'));
    responder = await startResponder({
      stat_prefix: 'reverse_connections',
      admin: { address: '127.0.0.1:0', access_log: { path: path.join(directory, 'admin.log') } },
      tunnel_listener: { address: '127.0.0.1:0' },
      egress_listeners: [{ address: '127.0.0.1:0' }],
    });
  });

  after(async () => {
    await responder.close();
    await rm(directory, { recursive: true, force: true });
  });

  it("serves /stats as Envoy's sorted name: value lines", async () => {
    const reply = await request(admin(), '/stats');
    assert.equal(reply.status, 200);
    assert.match(reply.headers['content-type'] ?? '', /^text\/plain/);
    const lines = reply.text.trimEnd().split('\n');
    assert.deepEqual(lines, [...lines].sort());
    assert.ok(lines.includes('reverse_tunnel.handshake.accepted: 0'), reply.text);
  });

  it('filters by a regular expression and takes hidden=include|exclude|only', async () => {
    const filtered = await request(admin(), '/stats?filter=handshake\\.(accepted|timeout)$');
    assert.equal(
      filtered.text,
      'reverse_tunnel.handshake.accepted: 0\nreverse_tunnel.handshake.timeout: 0\n',
    );
    const included = await request(admin(), '/stats?hidden=include');
    const plain = await request(admin(), '/stats');
    assert.equal(included.text, plain.text);
    assert.equal((await request(admin(), '/stats?hidden=only')).text, '');
  });

  it('answers 400 with a reason to a bad filter, a bad hidden value or an unknown parameter', async () => {
    for (const [query, reason] of [
      ['filter=(', /^filter is not a valid regular expression: /],
      ['hidden=maybe', /^hidden must be include, exclude or only, not "maybe"/],
      ['format=xml', /^format must be json, prometheus or text, not "xml"/],
      ['usedonly=1', /^unknown \/stats parameter "usedonly"; known: filter, hidden/],
    ] as const) {
      const reply = await request(admin(), `/stats?${query}`);
      assert.equal(reply.status, 400, query);
      assert.match(reply.text, reason);
    }
  });

  it('answers /ready with LIVE, unknown paths with 404 and other methods with 405', async () => {
    const ready = await request(admin(), '/ready');
    assert.deepEqual([ready.status, ready.text], [200, 'LIVE\n']);
    assert.equal((await request(admin(), '/nope')).status, 404);
    const post = await request(admin(), '/stats', { method: 'POST' });
    assert.equal(post.status, 405);
    assert.equal(post.headers['allow'], 'GET, HEAD');
  });

  it("writes one access-log line per request in Envoy's default format", async () => {
    await request(admin(), '/stats?filter=accepted', { headers: { 'user-agent': 'test-agent/1' } });
    await responder.close();
    const log = await readFile(path.join(directory, 'admin.log'), 'utf8');
    const line = log.split('\n').find((entry) => entry.includes('filter=accepted'));
    assert.ok(line, log);
    assert.match(
      line,
      /^\[\d{4}-\d\d-\d\dT[\d:.]+Z\] "GET \/stats\?filter=accepted HTTP\/1\.1" 200 - 0 \d+ \d+ - "-" "test-agent\/1" "-" "127\.0\.0\.1:\d+" "-"$/,
    );
    assert.doesNotMatch(line, / 200 - 0 0 /, 'the bytes sent are counted');
  });
});
