/**
 * The command line as a user runs it: `revtun …` in a child process, on port 0, with the bound ports
 * read from what the CLI prints. Every child is stopped by its PID in `after`, even when a test
 * fails.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { OutgoingHttpHeaders } from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  demoServiceHelp,
  initiatorHelp,
  mainHelp,
  responderHelp,
  sandboxHelp,
} from '../../src/cli/help.ts';
import { request, type Reply } from '../helpers/http.ts';
import {
  assertStopsCleanly,
  pollUntil,
  repoRoot,
  revtun,
  runToEnd,
  startDeadlineMs,
  TestProcess,
} from '../helpers/process.ts';

const packageVersion = (
  JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { version: string }
).version;

/** Commands that only print and exit run side by side, one per CPU (tsx start-up is CPU-bound). */
const concurrency = os.availableParallelism();

/** Runs a `revtun` command that is expected to end by itself, and returns its exit and output. */
const runCli = (args: readonly string[]) => runToEnd(revtun(...args), startDeadlineMs);

/** GET on 127.0.0.1 with its own connection and a deadline. */
const get = (
  port: number,
  requestPath: string,
  headers: OutgoingHttpHeaders = {},
): Promise<Reply> =>
  request({ host: '127.0.0.1', port }, requestPath, { headers, timeoutMs: 5_000 });

/** The lines of an admin /stats answer that contain `word`, like `curl … | grep word`. */
async function statLines(port: number, word: string, query = ''): Promise<string[]> {
  const reply = await get(port, `/stats${query}`);
  assert.equal(reply.status, 200, reply.text);
  return reply.text.split('\n').filter((line) => line.includes(word));
}

const port = (match: RegExpMatchArray): number => Number(match[1]);

/** The demo service's body (nginxdemos/hello:plain-text), for a request to `uri`. */
function demoBody(uri: string, servicePort?: number): RegExp {
  const address = servicePort === undefined ? '\\S+' : `127\\.0\\.0\\.1:${servicePort}`;
  const escapedUri = uri.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  return new RegExp(
    `^Server address: ${address}\\n` +
      'Server name: \\S.*\\n' +
      'Date: \\d{2}/[A-Z][a-z]{2}/\\d{4}:\\d{2}:\\d{2}:\\d{2} \\+0000\\n' +
      `URI: ${escapedUri}\\n` +
      'Request ID: [0-9a-f]{32}\\n$',
  );
}

describe('revtun sandbox on port 0 reproduces the Envoy sandbox walkthrough', () => {
  let sandbox: TestProcess;
  let ports: { initiatorAdmin: number; responderAdmin: number; tunnel: number; egress: number };
  let servicePort: number;

  before(async () => {
    sandbox = new TestProcess(
      revtun(
        'sandbox',
        '--initiator-admin-port',
        '0',
        '--responder-admin-port',
        '0',
        '--tunnel-port',
        '0',
        '--egress-port',
        '0',
      ),
    );
    await sandbox.waitForStdout(/^Press Ctrl-C to stop\.$/m);
    assert.match(sandbox.stdout, /^ {2}tunnel {13}established$/m, sandbox.describe());
    const out = sandbox.stdout;
    const find = (pattern: RegExp) => {
      const match = out.match(pattern);
      assert.ok(match, `${String(pattern)} not in the sandbox's stdout:\n${out}`);
      return port(match);
    };
    ports = {
      initiatorAdmin: find(/^ {2}initiator admin {4}http:\/\/127\.0\.0\.1:(\d+)\/stats /m),
      responderAdmin: find(/^ {2}responder admin {4}http:\/\/127\.0\.0\.1:(\d+)\/stats$/m),
      tunnel: find(/^ {2}tunnel listener {4}127\.0\.0\.1:(\d+)$/m),
      egress: find(/^ {2}egress listener {4}http:\/\/127\.0\.0\.1:(\d+)$/m),
    };
    servicePort = find(/^ {2}demo service {7}http:\/\/127\.0\.0\.1:(\d+) /m);
  });

  after(async () => {
    await sandbox?.stop();
  });

  it('binds real ports for every port 0 and prints the commands to try with them', () => {
    for (const bound of [...Object.values(ports), servicePort]) assert.ok(bound > 0);
    assert.equal(new Set([...Object.values(ports), servicePort]).size, 5);
    assert.ok(
      sandbox.stdout.includes(
        `  curl -s localhost:${ports.initiatorAdmin}/stats | grep reverse_connection\n`,
      ),
      sandbox.stdout,
    );
    assert.ok(
      sandbox.stdout.includes(
        `  curl -s localhost:${ports.responderAdmin}/stats | grep reverse_connections\n`,
      ),
      sandbox.stdout,
    );
  });

  it("shows the initiator's connected tunnel in the seed page's 8 stat lines (step 5)", async () => {
    const host = `127.0.0.1:${ports.tunnel}`;
    const expected = [
      'downstream_reverse_connection.cluster.upstream-cluster.connected: 1',
      'downstream_reverse_connection.cluster.upstream-cluster.connecting: 0',
      `downstream_reverse_connection.host.${host}.connected: 1`,
      `downstream_reverse_connection.host.${host}.connecting: 0`,
      'downstream_reverse_connection.worker_0.cluster.upstream-cluster.connected: 1',
      'downstream_reverse_connection.worker_0.cluster.upstream-cluster.connecting: 0',
      `downstream_reverse_connection.worker_0.host.${host}.connected: 1`,
      `downstream_reverse_connection.worker_0.host.${host}.connecting: 0`,
    ];
    assert.deepEqual(await statLines(ports.initiatorAdmin, 'reverse_connection'), expected);
  });

  it("shows the responder's accepted tunnel in the seed page's 4 stat lines (step 5)", async () => {
    assert.deepEqual(await statLines(ports.responderAdmin, 'reverse_connections'), [
      'reverse_connections.clusters.downstream-cluster: 1',
      'reverse_connections.nodes.downstream-node: 1',
      'reverse_connections.worker_0.cluster.downstream-cluster: 1',
      'reverse_connections.worker_0.node.downstream-node: 1',
    ]);
  });

  it('lists the same tunnel stats with hidden=include, as verify.sh reads them', async () => {
    for (const [admin, word] of [
      [ports.initiatorAdmin, 'reverse_connection'],
      [ports.responderAdmin, 'reverse_connections'],
    ] as const) {
      const plain = await statLines(admin, word);
      assert.equal(plain.length > 0, true);
      assert.deepEqual(await statLines(admin, word, '?hidden=include'), plain);
    }
  });

  for (const [how, headers] of [
    [
      'x-remote-node-id and x-dst-cluster-uuid (step 6)',
      { 'x-remote-node-id': 'downstream-node', 'x-dst-cluster-uuid': 'downstream-cluster' },
    ],
    ['x-node-id (verify.sh)', { 'x-node-id': 'downstream-node' }],
    ['x-cluster-id (verify.sh)', { 'x-cluster-id': 'downstream-cluster' }],
  ] as const) {
    it(`answers /downstream_service through the tunnel when named by ${how}`, async () => {
      const reply = await get(ports.egress, '/downstream_service', headers);
      assert.equal(reply.status, 200, reply.text);
      assert.match(reply.text, demoBody('/downstream_service', servicePort));
    });
  }

  it('exits 0 within 5 s of SIGINT and leaves no process behind', async () => {
    await assertStopsCleanly([sandbox], 'SIGINT');
  });
});

describe('revtun sandbox on a port that is in use', () => {
  let blocker: net.Server;
  let busyPort: number;

  before(async () => {
    blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    busyPort = (blocker.address() as net.AddressInfo).port;
  });

  after(async () => {
    await new Promise<void>((resolve) => blocker.close(() => resolve()));
  });

  it('exits 1 naming the address, saying it is in use and suggesting other ports', async () => {
    const result = await runCli([
      'sandbox',
      '--tunnel-port',
      String(busyPort),
      '--initiator-admin-port',
      '0',
      '--responder-admin-port',
      '0',
      '--egress-port',
      '0',
    ]);
    assert.equal(result.code, 1, result.stderr);
    // Reported once, by the CLI: the listener does not also log the error as a JSON line.
    const lines = result.stderr.split('\n');
    assert.deepEqual(
      lines.filter((line) => line.startsWith('{')),
      [],
      result.stderr,
    );
    assert.equal(lines.length, 3, result.stderr);
    const [reason = '', hint, last] = lines;
    assert.ok(reason.startsWith('revtun sandbox: '), result.stderr);
    assert.ok(reason.includes(`127.0.0.1:${busyPort}`), result.stderr);
    assert.match(reason, /already in use/);
    assert.equal(
      hint,
      'Is another sandbox running? Pick other ports with --initiator-admin-port, --responder-admin-port, --tunnel-port and --egress-port (0 picks a free one); see revtun sandbox --help',
    );
    assert.equal(last, '');
    assert.doesNotMatch(result.stdout, /Press Ctrl-C to stop/);
  });
});

describe('revtun usage errors exit 2 with a one-line reason on stderr', { concurrency }, () => {
  // Every usage error is exactly this line: one `revtun <command>:` prefix, the reason with the flag
  // and value it is about (no internal error codes), and where to read more.
  const cases: Array<[string, string[], string]> = [
    [
      'initiator without flags asks for --node-id',
      ['initiator'],
      'revtun initiator: --node-id, --cluster-id, --tenant-id required (or --rc, or --config FILE); see revtun initiator --help',
    ],
    [
      'initiator with --config and a flag says they cannot be combined',
      ['initiator', '--config', 'x.yaml', '--node-id', 'n'],
      'revtun initiator: --config cannot be combined with --node-id; put those settings in the file; see revtun initiator --help',
    ],
    [
      'responder without --egress-listen asks for it',
      ['responder', '--tunnel-listen', '0'],
      'revtun responder: --egress-listen [HOST:]PORT is required (or --config FILE); see revtun responder --help',
    ],
    [
      'sandbox with port 99999 says it is not a port number',
      ['sandbox', '--tunnel-port', '99999'],
      'revtun sandbox: --tunnel-port: "99999" is not a port number (0-65535); see revtun sandbox --help',
    ],
    [
      // The reason is the one node:util parseArgs gives.
      'an unknown flag is named',
      ['sandbox', '--no-such-flag'],
      "revtun sandbox: Unknown option '--no-such-flag'; see revtun sandbox --help",
    ],
  ];
  for (const [name, args, line] of cases) {
    it(name, async () => {
      const result = await runCli(args);
      assert.equal(result.code, 2, result.stderr);
      assert.equal(result.stderr, `${line}\n`);
      assert.equal(result.stdout, '');
    });
  }

  it('an unknown command is named, followed by the usage', async () => {
    const result = await runCli(['no-such-command']);
    assert.equal(result.code, 2);
    assert.equal(result.stderr, `revtun: unknown command "no-such-command"\n\n${mainHelp}`);
    assert.equal(result.stdout, '');
  });

  it('no command at all prints the usage on stderr and nothing on stdout', async () => {
    const result = await runCli([]);
    assert.equal(result.code, 2, result.stderr);
    assert.equal(result.stderr, mainHelp);
    assert.equal(result.stdout, '');
  });
});

describe('revtun --help and --version', { concurrency }, () => {
  for (const [args, help] of [
    [['--help'], mainHelp],
    [['sandbox', '--help'], sandboxHelp],
    [['initiator', '--help'], initiatorHelp],
    [['responder', '--help'], responderHelp],
    [['demo-service', '--help'], demoServiceHelp],
  ] as const) {
    it(`revtun ${args.join(' ')} exits 0 and prints the usage`, async () => {
      const result = await runCli(args);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stdout, help);
      assert.equal(result.stderr, '');
    });
  }

  it("revtun --version prints package.json's version", async () => {
    const result = await runCli(['--version']);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, `${packageVersion}\n`);
  });
});

describe('revtun initiator --config with an invalid file', () => {
  let directory: string;

  before(async () => {
    directory = await mkdtemp(path.join(os.tmpdir(), 'revtun-cli-test-'));
  });

  after(async () => {
    await rm(directory, { recursive: true, force: true });
  });

  it('exits 1 and names file:line:col, the key path and the problem', async () => {
    const file = path.join(directory, 'initiator.yaml');
    await writeFile(
      file,
      [
        'node_id: n1',
        'cluster_id: c1',
        'tenant_id: t1',
        'remote_clusters:',
        '  - name: upstream-cluster',
        '    hosts: [127.0.0.1:9000]',
        '    tunnels_per_hosts: 1',
        'local_routes:',
        '  - prefix: /',
        '    target: http://127.0.0.1:8080',
        '',
      ].join('\n'),
    );
    const result = await runCli(['initiator', '--config', file]);
    assert.equal(result.code, 1, result.stderr);
    assert.ok(
      result.stderr.includes(
        `${file}:7:5: remote_clusters[0].tunnels_per_hosts: unknown key "tunnels_per_hosts"`,
      ),
      result.stderr,
    );
    assert.equal(result.stdout, '');
  });
});

describe('the quick start: demo service, responder and initiator as three processes', () => {
  const started: TestProcess[] = [];
  let egressPort: number;
  let responderAdmin: number;

  const start = (...args: string[]) => {
    const cli = new TestProcess(revtun(...args));
    started.push(cli);
    return cli;
  };

  after(async () => {
    for (const cli of started) await cli.stop();
  });

  it('starts each on port 0 and prints the addresses it bound', async () => {
    const demo = start('demo-service', '--listen', '127.0.0.1:0');
    const responder = start(
      'responder',
      '--tunnel-listen',
      '127.0.0.1:0',
      '--egress-listen',
      '127.0.0.1:0',
      '--admin-listen',
      '0',
    );
    const demoPort = port(
      await demo.waitForStdout(/^revtun demo service on http:\/\/127\.0\.0\.1:(\d+)$/m),
    );
    responderAdmin = port(
      await responder.waitForStdout(/^ {2}admin http:\/\/127\.0\.0\.1:(\d+)\/stats$/m),
    );
    const tunnelPort = port(
      await responder.waitForStdout(/^ {2}tunnel listener 127\.0\.0\.1:(\d+)$/m),
    );
    egressPort = port(
      await responder.waitForStdout(/^ {2}egress listener http:\/\/127\.0\.0\.1:(\d+)$/m),
    );
    const initiator = start(
      'initiator',
      '--node-id',
      'n1',
      '--cluster-id',
      'c1',
      '--tenant-id',
      't1',
      '--responder',
      `127.0.0.1:${tunnelPort}`,
      '--route',
      `/app=http://127.0.0.1:${demoPort}`,
      '--admin-listen',
      '0',
    );
    await initiator.waitForStdout(/^ {2}admin http:\/\/127\.0\.0\.1:(\d+)\/stats$/m);
    assert.match(initiator.stdout, /^revtun initiator n1 \(cluster c1, tenant t1\) started$/m);
    assert.ok(
      initiator.stdout.includes(`  dialling upstream-cluster: 127.0.0.1:${tunnelPort} × 1`),
      initiator.stdout,
    );
    assert.ok(
      initiator.stdout.includes(`  local route /app → http://127.0.0.1:${demoPort}\n`),
      initiator.stdout,
    );
  });

  it('serves /app/x from the demo service once the tunnel is registered', async () => {
    await pollUntil('reverse_tunnel_acceptor.nodes.n1: 1 in the responder stats', async () =>
      (await statLines(responderAdmin, 'nodes.n1')).includes('reverse_tunnel_acceptor.nodes.n1: 1'),
    );
    const reply = await get(egressPort, '/app/x', { 'x-node-id': 'n1' });
    assert.equal(reply.status, 200, reply.text);
    assert.match(reply.text, demoBody('/app/x'));
  });

  it('stops every process with exit code 0 within 5 s of SIGTERM', async () => {
    assert.equal(started.length, 3);
    await assertStopsCleanly(started, 'SIGTERM');
  });
});
