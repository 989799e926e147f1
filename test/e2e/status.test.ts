/**
 * `revtun status --admin URL` against a small fake admin server on port 0 that answers
 * `GET /tunnels` with a fixed TunnelsResponse (the shape of src/admin/tunnels.ts), or with the
 * failures an operator meets: a refused token, a non-JSON answer, nobody listening.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { TunnelsResponse } from '../../src/admin/tunnels.ts';
import { age, bytes, status, tunnelsUrl } from '../../src/cli/status.ts';
import { revtun, runToEnd, startDeadlineMs } from '../helpers/process.ts';

const now = '2026-12-02T06:00:00.000Z';

const fixed: TunnelsResponse = {
  role: 'responder',
  now,
  tunnels: [
    {
      node: 'edge-1',
      cluster: 'edge',
      tenant: 'acme',
      remote_address: '127.0.0.1:51234',
      responder: '127.0.0.1:9000',
      state: 'in_use',
      established_at: '2026-12-02T04:39:30.000Z',
      streams_in_flight: 3,
      bytes_sent: 1_572_864,
      bytes_received: 2_048,
      last_ping_rtt_ms: 0.42,
    },
    {
      node: 'edge-22',
      cluster: 'edge',
      tenant: 'acme',
      remote_address: '[::1]:40000',
      responder: '127.0.0.1:9000',
      state: 'idle',
      established_at: '2026-12-02T05:59:15.000Z',
      streams_in_flight: 0,
      bytes_sent: 100,
      bytes_received: 900,
      last_ping_rtt_ms: null,
    },
  ],
};

/** What the fake admin server answers, by path. */
const answers: Record<string, { status: number; type: string; body: string }> = {
  '/ok/tunnels': { status: 200, type: 'application/json', body: JSON.stringify(fixed) },
  '/empty/tunnels': {
    status: 200,
    type: 'application/json',
    body: JSON.stringify({ role: 'initiator', now, tunnels: [] }),
  },
  '/html/tunnels': { status: 200, type: 'text/html', body: '<html>not revtun</html>' },
  '/broken/tunnels': { status: 500, type: 'text/plain', body: 'oops' },
};

const token = 'secret-admin-token';

describe('revtun status', () => {
  let server: http.Server;
  let base: string;
  let directory: string;
  let tokenFile: string;
  const authorizations: Array<string | undefined> = [];

  before(async () => {
    directory = await mkdtemp(path.join(os.tmpdir(), 'revtun-status-'));
    tokenFile = path.join(directory, 'admin.token');
    await writeFile(tokenFile, `${token}\n`);
    server = http.createServer((request, response) => {
      authorizations.push(request.headers.authorization);
      const url = request.url ?? '';
      if (url.startsWith('/locked/')) {
        if (request.headers.authorization !== `Bearer ${token}`) {
          response.writeHead(401).end('unauthorized');
          return;
        }
        response.writeHead(200, { 'content-type': 'application/json' });
        response.end(JSON.stringify(fixed));
        return;
      }
      const answer = answers[url];
      if (answer === undefined) {
        response.writeHead(404).end();
        return;
      }
      response.writeHead(answer.status, { 'content-type': answer.type }).end(answer.body);
    });
    server.on('clientError', (_error, socket) => socket.destroy());
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', resolve);
    });
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    await rm(directory, { recursive: true, force: true });
  });

  async function run(admin: string, options: { tokenFile?: string; json?: boolean } = {}) {
    const out: string[] = [];
    const err: string[] = [];
    const code = await status(
      { admin, ...options, timeoutMs: 5_000 },
      { out: (line) => out.push(line), err: (line) => err.push(line) },
    );
    return { code, out, err };
  }

  it('prints an aligned table of the tunnels and a total', async () => {
    const result = await run(`${base}/ok`);
    assert.equal(result.code, 0, result.err.join('\n'));
    assert.deepEqual(result.err, []);
    assert.deepEqual(result.out, [
      'NODE     CLUSTER  TENANT  STATE   REMOTE           RESPONDER       ESTABLISHED  STREAMS  BYTES ↑/↓      RTT',
      'edge-1   edge     acme    in_use  127.0.0.1:51234  127.0.0.1:9000  1h20m        3        1.5MiB/2.0KiB  0.4ms',
      'edge-22  edge     acme    idle    [::1]:40000      127.0.0.1:9000  45s          0        100B/900B      -',
      'responder: 2 tunnels to 2 nodes (1 idle, 1 in use), 3 streams in flight, ↑ 1.5MiB ↓ 2.9KiB',
    ]);
  });

  it('prints the total alone when there are no tunnels', async () => {
    const result = await run(`${base}/empty`);
    assert.equal(result.code, 0);
    assert.deepEqual(result.out, [
      'initiator: 0 tunnels to 0 nodes, 0 streams in flight, ↑ 0B ↓ 0B',
    ]);
  });

  it('prints the JSON as the admin server sent it with --json', async () => {
    const result = await run(`${base}/ok`, { json: true });
    assert.equal(result.code, 0);
    assert.deepEqual(JSON.parse(result.out.join('\n')), fixed);
  });

  it('sends the token from --token-file, and says so when it is refused', async () => {
    const refused = await run(`${base}/locked`);
    assert.equal(refused.code, 1);
    assert.deepEqual(refused.out, []);
    assert.equal(refused.err.length, 1);
    assert.match(refused.err[0] ?? '', /refused the request \(401\); pass --token-file FILE$/);
    const accepted = await run(`${base}/locked`, { tokenFile });
    assert.equal(accepted.code, 0, accepted.err.join('\n'));
    assert.equal(authorizations.at(-1), `Bearer ${token}`);
    assert.match(accepted.out.at(-1) ?? '', /^responder: 2 tunnels/);
  });

  it('fails in one line for an answer that is not a tunnel list, or not a 200', async () => {
    const html = await run(`${base}/html`);
    assert.equal(html.code, 1);
    assert.deepEqual(html.err, [
      `revtun status: ${base}/html/tunnels did not answer with revtun's tunnel list (JSON); is it a revtun admin server?`,
    ]);
    const broken = await run(`${base}/broken`);
    assert.equal(broken.code, 1);
    assert.deepEqual(broken.err, [`revtun status: ${base}/broken/tunnels answered 500, not 200`]);
  });

  it('fails in one line, exit 1, when nobody listens at --admin (as a command)', async () => {
    // A port that was just free: bound and closed again.
    const probe = http.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const port = (probe.address() as AddressInfo).port;
    await new Promise((resolve) => probe.close(resolve));
    const result = await runToEnd(
      revtun('status', '--admin', `127.0.0.1:${port}`),
      startDeadlineMs,
    );
    assert.equal(result.code, 1, result.stdout);
    assert.equal(
      result.stderr,
      `revtun status: cannot reach http://127.0.0.1:${port}/tunnels: ECONNREFUSED\n`,
    );
  });

  it('is a usage error (exit 2) without --admin', async () => {
    const result = await runToEnd(revtun('status'), startDeadlineMs);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /^revtun status: --admin URL is required, e\.g\. /);
  });

  it('reads --admin with or without http:// and a trailing slash', () => {
    assert.equal(tunnelsUrl('127.0.0.1:8889'), 'http://127.0.0.1:8889/tunnels');
    assert.equal(tunnelsUrl('http://127.0.0.1:8889/'), 'http://127.0.0.1:8889/tunnels');
    assert.equal(tunnelsUrl('http://admin.local/revtun'), 'http://admin.local/revtun/tunnels');
  });

  it('writes bytes and ages for a human', () => {
    assert.deepEqual([0, 1023, 1024, 1536, 10 * 1024 * 1024, 5 * 1024 ** 4].map(bytes), [
      '0B',
      '1023B',
      '1.0KiB',
      '1.5KiB',
      '10MiB',
      '5.0TiB',
    ]);
    const at = Date.parse(now);
    assert.equal(age(null, at), '-');
    assert.equal(age('2026-12-02T05:59:59.000Z', at), '1s');
    assert.equal(age('2026-12-02T05:48:00.000Z', at), '12m');
    assert.equal(age('2026-11-30T02:00:00.000Z', at), '2d4h');
  });
});
