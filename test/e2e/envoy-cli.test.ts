/**
 * `revtun envoy -c FILE` as a user runs it: Envoy's sandbox bootstrap files (host names and ports
 * rewritten, in a temporary directory), one process per role, on port 0. Every child is stopped
 * by its PID in `after`, even when a test fails.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { envoyHelp } from '../../src/cli/help.ts';
import { startDemoService, type DemoService } from '../../src/sandbox/demo-service.ts';
import { rewriteSandboxInitiator, rewriteSandboxResponder } from '../helpers/envoy-sandbox.ts';
import { request } from '../helpers/http.ts';
import {
  assertStopsCleanly,
  pollUntil,
  revtun,
  runToEnd,
  startDeadlineMs,
  TestProcess,
} from '../helpers/process.ts';

const port = (match: RegExpMatchArray): number => Number(match[1]);

const get = (listenPort: number, requestPath: string, headers: Record<string, string> = {}) =>
  request({ host: '127.0.0.1', port: listenPort }, requestPath, { headers, timeoutMs: 5_000 });

describe('revtun envoy runs the sandbox bootstrap files, one process per role', () => {
  let directory: string;
  let service: DemoService;
  const started: TestProcess[] = [];
  let egressPort: number;
  let responderAdmin: number;
  let initiatorAdmin: number;

  before(async () => {
    directory = await mkdtemp(path.join(os.tmpdir(), 'revtun-envoy-cli-'));
    service = await startDemoService({ host: '127.0.0.1', port: 0 });
  });

  after(async () => {
    for (const child of started) await child.stop();
    await service?.close();
    await rm(directory, { recursive: true, force: true });
  });

  it('starts responder-envoy.yaml and prints its listeners', async () => {
    const file = path.join(directory, 'responder-envoy.yaml');
    await writeFile(file, rewriteSandboxResponder());
    const responder = new TestProcess(revtun('envoy', '-c', file));
    started.push(responder);
    responderAdmin = port(
      await responder.waitForStdout(/^ {2}admin http:\/\/127\.0\.0\.1:(\d+)\/stats$/m),
    );
    assert.match(responder.stdout, /^revtun responder started$/m);
    assert.match(responder.stdout, /^ {2}tunnel listener 127\.0\.0\.1:\d+$/m);
    egressPort = port(
      await responder.waitForStdout(/^ {2}egress listener http:\/\/127\.0\.0\.1:(\d+)$/m),
    );
  });

  it('starts initiator-envoy.yaml, dialling the responder, and prints its routes', async () => {
    const responder = started[0];
    assert.ok(responder);
    const tunnelPort = port(
      await responder.waitForStdout(/^ {2}tunnel listener 127\.0\.0\.1:(\d+)$/m),
    );
    const file = path.join(directory, 'initiator-envoy.yaml');
    await writeFile(
      file,
      rewriteSandboxInitiator({ tunnelPort, servicePort: service.address.port }),
    );
    const initiator = new TestProcess(revtun('envoy', '--config', file));
    started.push(initiator);
    initiatorAdmin = port(
      await initiator.waitForStdout(/^ {2}admin http:\/\/127\.0\.0\.1:(\d+)\/stats$/m),
    );
    const out = initiator.stdout;
    assert.match(
      out,
      /^revtun initiator downstream-node \(cluster downstream-cluster, tenant downstream-tenant\) started$/m,
    );
    assert.ok(
      out.includes(`  dialling upstream-cluster: 127.0.0.1:${tunnelPort} × 1 tunnel(s) each\n`),
      out,
    );
    assert.ok(
      out.includes(
        `  local route /downstream_service → http://127.0.0.1:${service.address.port}\n`,
      ),
      out,
    );
  });

  it('routes GET /downstream_service with x-node-id (and with x-cluster-id) through the Lua script', async () => {
    await pollUntil('upstream_reverse_connection.nodes.downstream-node: 1', async () => {
      const reply = await get(responderAdmin, '/stats?hidden=include');
      return reply.text
        .split('\n')
        .includes('upstream_reverse_connection.nodes.downstream-node: 1');
    });
    for (const headers of [
      { 'x-node-id': 'downstream-node' },
      { 'x-cluster-id': 'downstream-cluster' },
    ]) {
      const reply = await get(egressPort, '/downstream_service', headers);
      assert.equal(reply.status, 200, reply.text);
      assert.match(reply.text, /^URI: \/downstream_service$/m);
    }
    const stats = await get(initiatorAdmin, '/stats?hidden=include');
    assert.ok(
      stats.text
        .split('\n')
        .includes('downstream_reverse_connection.cluster.upstream-cluster.connected: 1'),
      stats.text,
    );
    const responder = started[0];
    assert.ok(responder);
    // The script's log line, on the responder's stderr (JSON lines).
    assert.match(
      responder.stderr,
      /"lua":true.*"msg":"Using x-node-id as host_id: downstream-node"/,
    );
  });

  it('stops both processes with exit code 0 within 5 s of SIGTERM', async () => {
    assert.equal(started.length, 2);
    await assertStopsCleanly(started, 'SIGTERM');
  });
});

describe('revtun envoy with a bad file or no file', () => {
  let directory: string;

  before(async () => {
    directory = await mkdtemp(path.join(os.tmpdir(), 'revtun-envoy-cli-'));
  });

  after(async () => {
    await rm(directory, { recursive: true, force: true });
  });

  it('exits 1 and names file:line:col, the Envoy field path and the problem', async () => {
    const file = path.join(directory, 'responder-envoy.yaml');
    await writeFile(
      file,
      rewriteSandboxResponder().replace(
        '          ping_interval: 2s\n',
        '          ping_interval: 2s\n          jwt_validator:\n            issuer: https://issuer.example\n',
      ),
    );
    const result = await runToEnd(revtun('envoy', '-c', file), startDeadlineMs);
    assert.equal(result.code, 1, result.stderr);
    assert.equal(
      result.stderr,
      [
        'revtun envoy: invalid configuration (1 problem):',
        `  ${file}:30:11: static_resources.listeners[0].filter_chains[0].filters[0].typed_config.jwt_validator: is not supported: JWT validation of handshakes comes with the security work`,
        '',
      ].join('\n'),
    );
    assert.equal(result.stdout, '');
  });

  it('exits 2 with a usage line without --config', async () => {
    const result = await runToEnd(revtun('envoy'), startDeadlineMs);
    assert.equal(result.code, 2, result.stderr);
    assert.equal(
      result.stderr,
      'revtun envoy: --config FILE (an Envoy bootstrap) is required; see revtun envoy --help\n',
    );
  });

  it('prints its help with --help', async () => {
    const result = await runToEnd(revtun('envoy', '--help'), startDeadlineMs);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, envoyHelp);
  });
});
