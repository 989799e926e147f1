import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Script } from 'node:vm';
import type { TunnelRow, TunnelsResponse } from '../../src/admin/tunnels.ts';
import type { Initiator } from '../../src/initiator/initiator.ts';
import { Responder } from '../../src/responder/responder.ts';
import { validateResponderConfig } from '../../src/config/load.ts';
import type { HostPort } from '../../src/shared/address.ts';
import { request, startService, type TestService } from '../helpers/http.ts';
import { connectedInitiator, responderOnFreePorts } from '../helpers/tunnels.ts';

async function tunnelsOf(admin: HostPort, query = ''): Promise<TunnelsResponse> {
  const reply = await request(admin, `/tunnels${query}`);
  assert.equal(reply.status, 200, reply.text);
  assert.match(reply.headers['content-type'] ?? '', /^application\/json/);
  return JSON.parse(reply.text) as TunnelsResponse;
}

/** Polls `/tunnels` until `accept` takes the rows, or fails after `timeoutMs` with the last rows. */
async function tunnelsUntil(
  admin: HostPort,
  accept: (rows: readonly TunnelRow[]) => boolean,
  timeoutMs = 10_000,
): Promise<readonly TunnelRow[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { tunnels } = await tunnelsOf(admin);
    if (accept(tunnels)) return tunnels;
    if (Date.now() > deadline) assert.fail(`/tunnels never matched: ${JSON.stringify(tunnels)}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

const isoTime = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

describe('GET /tunnels', () => {
  let responder: Responder;
  let initiator: Initiator;
  let service: TestService;
  /** Resolves when the service holds a /hold request; calling the value answers it. */
  let held: Promise<() => void>;
  let holding: (release: () => void) => void = () => {};

  before(async () => {
    service = await startService((req, res) => {
      if (req.url === '/hold') {
        holding(() => res.end('released'));
        return;
      }
      res.end('x'.repeat(10_000));
    });
    responder = await responderOnFreePorts({ http2: { ping_interval: '100ms' } });
    initiator = await connectedInitiator(responder, {
      node: 'n1',
      cluster: 'c1',
      routes: [{ prefix: '/', target: service.target }],
      config: { http2: { ping_interval: '100ms' } },
    });
  });

  after(async () => {
    await initiator.close();
    await responder.close();
    await service.close();
  });

  it('lists the idle tunnel on both roles with its identity, addresses and time', async () => {
    const atResponder = await tunnelsOf(responder.addresses.admin!);
    assert.equal(atResponder.role, 'responder');
    assert.match(atResponder.now, isoTime);
    assert.equal(atResponder.tunnels.length, 1);
    const row = atResponder.tunnels[0]!;
    const tunnelAddress = `127.0.0.1:${responder.addresses.tunnel.port}`;
    assert.deepEqual(
      [row.node, row.cluster, row.tenant, row.state, row.streams_in_flight, row.responder],
      ['n1', 'c1', 't1', 'idle', 0, tunnelAddress],
    );
    assert.match(row.remote_address, /^127\.0\.0\.1:\d+$/);
    assert.match(row.established_at ?? '', isoTime);
    assert.ok(row.bytes_received > 0, 'the handshake request was read from the socket');

    const atInitiator = await tunnelsOf(initiator.addresses.admin!);
    assert.equal(atInitiator.role, 'initiator');
    assert.equal(atInitiator.tunnels.length, 1);
    const own = atInitiator.tunnels[0]!;
    assert.deepEqual(
      [own.node, own.cluster, own.tenant, own.state, own.responder, own.remote_address],
      ['n1', 'c1', 't1', 'idle', tunnelAddress, tunnelAddress],
    );
    assert.ok(own.bytes_sent > 0, 'the handshake request was written');
  });

  it('counts bytes each way that grow with a request, and the ping round trip', async () => {
    const before = (await tunnelsOf(responder.addresses.admin!)).tunnels[0]!;
    const beforeInitiator = (await tunnelsOf(initiator.addresses.admin!)).tunnels[0]!;
    const reply = await request(responder.addresses.egress[0]!, '/big', {
      headers: { 'x-node-id': 'n1' },
    });
    assert.equal(reply.status, 200);
    const after = (await tunnelsOf(responder.addresses.admin!)).tunnels[0]!;
    assert.ok(after.bytes_received >= before.bytes_received + 10_000, JSON.stringify(after));
    assert.ok(after.bytes_sent > before.bytes_sent);
    const afterInitiator = (await tunnelsOf(initiator.addresses.admin!)).tunnels[0]!;
    assert.ok(afterInitiator.bytes_sent >= beforeInitiator.bytes_sent + 10_000);
    assert.ok(afterInitiator.bytes_received > beforeInitiator.bytes_received);

    // With a 100 ms keepalive, both ends of the session have a round trip soon.
    for (const admin of [responder.addresses.admin!, initiator.addresses.admin!]) {
      const [row] = await tunnelsUntil(admin, (rows) => rows[0]?.last_ping_rtt_ms != null);
      assert.ok(row!.last_ping_rtt_ms! >= 0);
    }
  });

  it('shows in_use with one stream in flight while a response is held, idle after', async () => {
    held = new Promise((resolve) => (holding = resolve));
    const pending = request(responder.addresses.egress[0]!, '/hold', {
      headers: { 'x-node-id': 'n1' },
    });
    const release = await held;
    try {
      for (const admin of [responder.addresses.admin!, initiator.addresses.admin!]) {
        const [row] = (await tunnelsOf(admin)).tunnels;
        assert.deepEqual(
          [row!.state, row!.streams_in_flight],
          ['in_use', 1],
          admin.port.toString(),
        );
      }
    } finally {
      release();
    }
    assert.equal((await pending).text, 'released');
    const rows = await tunnelsUntil(
      responder.addresses.admin!,
      (list) => list[0]?.streams_in_flight === 0,
    );
    assert.equal(rows[0]!.state, 'idle');
  });

  it('filters by ?node= and refuses unknown parameters', async () => {
    assert.equal((await tunnelsOf(responder.addresses.admin!, '?node=n1')).tunnels.length, 1);
    assert.equal((await tunnelsOf(responder.addresses.admin!, '?node=n2')).tunnels.length, 0);
    const bad = await request(responder.addresses.admin!, '/tunnels?state=idle');
    assert.equal(bad.status, 400);
    assert.match(bad.text, /unknown \/tunnels parameter "state"/);
  });
});

describe('the admin token, /config_dump, /drain and the dashboard', () => {
  const token = 'admin-token-0123456789';
  const headerSecret = 'inline-handshake-secret-42';
  const nodeTokenSha = 'ab'.repeat(32);
  let directory: string;
  let tokenFile: string;
  let responder: Responder;
  let initiator: Initiator;
  const auth = { authorization: `Bearer ${token}` };

  before(async () => {
    directory = await mkdtemp(path.join(os.tmpdir(), 'revtun-admin-api-'));
    tokenFile = path.join(directory, 'admin.token');
    await writeFile(tokenFile, `${token}\n`);
    responder = await responderOnFreePorts({
      admin: { address: '127.0.0.1:0', token_file: tokenFile },
    });
    initiator = await connectedInitiator(responder, {
      node: 'n1',
      routes: [{ prefix: '/', target: 'http://127.0.0.1:1' }],
      config: {
        admin: { address: '127.0.0.1:0', token_file: tokenFile },
        handshake: { headers: [{ name: 'x-extra-credential', value: headerSecret }] },
      },
    });
  });

  after(async () => {
    await initiator.close();
    await responder.close();
    await rm(directory, { recursive: true, force: true });
  });

  it('asks for the token on /tunnels, /config_dump, /drain and /stats, not on the probes and the page', async () => {
    const admin = responder.addresses.admin!;
    for (const [method, endpoint] of [
      ['GET', '/tunnels'],
      ['GET', '/config_dump'],
      ['POST', '/drain'],
      ['GET', '/stats'],
      ['GET', '/'],
    ] as const) {
      const reply = await request(admin, endpoint, { method });
      assert.equal(reply.status, 401, `${method} ${endpoint}`);
      assert.equal(reply.headers['www-authenticate'], 'Bearer realm="revtun admin"');
    }
    assert.equal((await request(admin, '/tunnels', { headers: auth })).status, 200);
    for (const open of ['/ready', '/healthz', '/dashboard']) {
      assert.equal((await request(admin, open)).status, 200, open);
    }
  });

  it('dumps the effective config with inline secrets masked and file paths kept', async () => {
    const initiatorDump = await request(initiator.addresses.admin!, '/config_dump', {
      headers: auth,
    });
    assert.equal(initiatorDump.status, 200);
    assert.match(initiatorDump.headers['content-type'] ?? '', /^application\/json/);
    assert.ok(!initiatorDump.text.includes(headerSecret), initiatorDump.text);
    assert.ok(!initiatorDump.text.includes(token));
    const config = JSON.parse(initiatorDump.text) as {
      node_id: string;
      handshake: { headers: Array<{ name: string; value: string }> };
      admin: { token_file: string };
    };
    assert.equal(config.node_id, 'n1');
    assert.deepEqual(config.handshake.headers[0], {
      name: 'x-extra-credential',
      value: '[redacted]',
    });
    assert.equal(config.admin.token_file, tokenFile);

    const responderDump = await request(responder.addresses.admin!, '/config_dump', {
      headers: auth,
    });
    const dumped = JSON.parse(responderDump.text) as { stat_prefix: string };
    assert.equal(dumped.stat_prefix, 'reverse_connections');
    assert.ok(!responderDump.text.includes(token));
  });

  it('masks token digests in a responder config', async () => {
    const { maskSecrets } = await import('../../src/admin/config-dump.ts');
    const masked = JSON.stringify(
      maskSecrets({
        tunnel_listener: {
          auth: { tokens: [{ node_id: 'n1', sha256: nodeTokenSha }], jwt: { jwks_file: '/k' } },
        },
        egress_listeners: [{ callers: [{ token_sha256: nodeTokenSha }] }],
        handshake: { bearer_token_file: '/t', headers: [{ name: 'a', value_file: '/v' }] },
      }),
    );
    assert.ok(!masked.includes(nodeTokenSha), masked);
    for (const kept of ['"n1"', '"/k"', '"/t"', '"/v"']) assert.ok(masked.includes(kept), kept);
  });

  it('serves the dashboard as HTML under a strict CSP whose nonce the script carries', async () => {
    const reply = await request(responder.addresses.admin!, '/dashboard');
    assert.equal(reply.status, 200);
    assert.match(reply.headers['content-type'] ?? '', /^text\/html; charset=utf-8/);
    const csp = String(reply.headers['content-security-policy'] ?? '');
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /frame-ancestors 'none'/);
    const nonce = /script-src 'nonce-([A-Za-z0-9+/=]+)'/.exec(csp)?.[1];
    assert.ok(nonce !== undefined, csp);
    assert.ok(reply.text.includes(`<script nonce="${nonce}">`));
    assert.ok(!reply.text.includes('innerHTML'));
    // The inline script at least compiles, without running (the browser test runs it).
    const script = /<script nonce="[^"]+">([\s\S]*)<\/script>/.exec(reply.text)?.[1] ?? '';
    assert.doesNotThrow(() => new Script(script), 'the dashboard script parses');
    const again = await request(responder.addresses.admin!, '/dashboard');
    assert.notEqual(again.headers['content-security-policy'], csp, 'a fresh nonce per answer');
    const index = await request(responder.addresses.admin!, '/', { headers: auth });
    assert.match(index.text, /\/dashboard/);
    assert.match(index.text, /\/tunnels/);
  });

  it('refuses requests a browser sends for another site, even with the token, but not the probes and the page', async () => {
    const admin = responder.addresses.admin!;
    const host = `${admin.host}:${admin.port}`;
    for (const headers of [
      { 'sec-fetch-site': 'cross-site' },
      { 'sec-fetch-site': 'same-site' },
      { origin: 'http://evil.example' },
      { origin: 'not a url' },
    ]) {
      const reply = await request(admin, '/drain', {
        method: 'POST',
        headers: { ...auth, ...headers },
      });
      assert.equal(reply.status, 403, JSON.stringify(headers));
      assert.equal(
        (await request(admin, '/tunnels', { headers: { ...auth, ...headers } })).status,
        403,
      );
      assert.equal((await request(admin, '/dashboard', { headers })).status, 200);
      assert.equal((await request(admin, '/ready', { headers })).status, 200);
    }
    const sameOrigin = { ...auth, origin: `http://${host}`, 'sec-fetch-site': 'same-origin' };
    assert.equal((await request(admin, '/tunnels', { headers: sameOrigin })).status, 200);
    assert.equal((await request(responder.addresses.admin!, '/ready')).text, 'LIVE\n');
  });

  it('answers 400 to a request target that is not a path, and keeps serving', async () => {
    const admin = responder.addresses.admin!;
    for (const target of ['http://[/', '//[', '*']) {
      const answer = await new Promise<string>((resolve, reject) => {
        const socket = net.connect(admin.port, admin.host);
        let received = '';
        socket.on('error', reject);
        socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
        socket.on('end', () => resolve(received));
        socket.end(`GET ${target} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n`);
      });
      assert.match(answer, /^HTTP\/1\.1 400 /, target);
    }
    assert.equal((await request(admin, '/healthz')).status, 200);
  });

  it('answers GET /drain with 405 and allow: POST', async () => {
    const reply = await request(responder.addresses.admin!, '/drain', { headers: auth });
    assert.equal(reply.status, 405);
    assert.equal(reply.headers['allow'], 'POST');
  });

  it('drains on POST /drain: 202, then /ready answers 503 DRAINING and /healthz stays OK', async () => {
    for (const admin of [initiator.addresses.admin!, responder.addresses.admin!]) {
      assert.equal((await request(admin, '/ready')).status, 200);
      const reply = await request(admin, '/drain', { method: 'POST', headers: auth });
      assert.equal(reply.status, 202, reply.text);
      assert.match(reply.text, /^draining/);
      const ready = await request(admin, '/ready');
      assert.deepEqual([ready.status, ready.text], [503, 'DRAINING\n']);
      const health = await request(admin, '/healthz');
      assert.deepEqual([health.status, health.text], [200, 'OK\n']);
      const twice = await request(admin, '/drain', { method: 'POST', headers: auth });
      assert.equal(twice.status, 202);
    }
    // The responder closed its idle tunnel and the initiator dials no more: the lists empty.
    await tunnelsUntilEmpty(responder.addresses.admin!);
    await tunnelsUntilEmpty(initiator.addresses.admin!);
  });

  async function tunnelsUntilEmpty(admin: HostPort): Promise<void> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const reply = await request(admin, '/tunnels', { headers: auth });
      const { tunnels } = JSON.parse(reply.text) as TunnelsResponse;
      if (tunnels.length === 0) return;
      if (Date.now() > deadline) assert.fail(`tunnels left: ${reply.text}`);
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
});

describe('POST /drain while the role starts', () => {
  it('is carried out once start() has bound everything: /ready answers DRAINING, no tunnel is accepted', async () => {
    const responder = new Responder(
      validateResponderConfig({
        tunnel_listener: { address: '127.0.0.1:0' },
        egress_listeners: [{ address: '127.0.0.1:0' }],
        admin: { address: '127.0.0.1:0' },
      }),
    );
    try {
      responder.drain();
      await responder.start();
      const ready = await request(responder.addresses.admin!, '/ready');
      assert.deepEqual([ready.status, ready.text], [503, 'DRAINING\n']);
      const tunnel = responder.addresses.tunnel;
      const refused = await new Promise<string>((resolve) => {
        const socket = net.connect(tunnel.port, tunnel.host);
        socket.on('connect', () => {
          socket.destroy();
          resolve('connected');
        });
        socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
      });
      assert.equal(refused, 'ECONNREFUSED');
    } finally {
      await responder.close({ graceMs: 0 });
    }
  });
});
