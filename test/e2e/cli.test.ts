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
import * as helpTexts from '../../src/cli/help.ts';
import {
  checkConfigHelp,
  demoServiceHelp,
  envoyHelp,
  initiatorHelp,
  mainHelp,
  responderHelp,
  sandboxHelp,
  statusHelp,
} from '../../src/cli/help.ts';
import { readSandboxFile } from '../helpers/envoy-sandbox.ts';
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
      'a --log-format that does not exist lists the ones that do',
      [
        'responder',
        '--tunnel-listen',
        '127.0.0.1:0',
        '--egress-listen',
        '0',
        '--log-format',
        'xml',
      ],
      'revtun responder: --log-format must be one of auto, json, pretty, not "xml"; see revtun responder --help',
    ],
    [
      'demo-service checks --log-format too, though it logs nothing',
      ['demo-service', '--listen', '127.0.0.1:0', '--log-format', 'xml'],
      'revtun demo-service: --log-format must be one of auto, json, pretty, not "xml"; see revtun demo-service --help',
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
    [['envoy', '--help'], envoyHelp],
    [['check-config', '--help'], checkConfigHelp],
    [['status', '--help'], statusHelp],
  ] as const) {
    it(`revtun ${args.join(' ')} exits 0 and prints the usage`, async () => {
      const result = await runCli(args);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stdout, help);
      assert.equal(result.stderr, '');
    });
  }

  it('every help text has examples, and the usage names every command', () => {
    for (const [name, text] of Object.entries(helpTexts)) {
      assert.match(text, /^Examples/m, `${name} has no Examples section`);
    }
    for (const command of ['sandbox', 'initiator', 'responder', 'envoy', 'demo-service']) {
      assert.match(mainHelp, new RegExp(`^ {2}revtun ${command} `, 'm'));
    }
    assert.match(mainHelp, /^ {2}revtun check-config FILE /m);
    assert.match(mainHelp, /^ {2}revtun status --admin URL /m);
    assert.match(mainHelp, /^Exit codes:\n {2}0 .*\n {2}1 .*\n {2}2 .*\n {2}130 /m);
  });

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
    // Then one line per tunnel as it comes up, on both ends, on stdout.
    await initiator.waitForStdout(`tunnel up: upstream-cluster 127.0.0.1:${tunnelPort} #1\n`);
    await responder.waitForStdout(/^tunnel up: node n1 \(cluster c1, tenant t1\) #\d+$/m);
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

describe(
  'revtun refuses an insecure configuration, exiting 1 and saying what to change',
  {
    concurrency,
  },
  () => {
    const allowHint =
      'To accept the risk (a trusted network, a test), set allow_insecure: true (on the command line: --allow-insecure).';
    const flagsHint =
      'The quick-start flags cannot set tls, auth, callers or admin.token_file; put them in a --config FILE (see docs/security.md).';
    let directory: string;

    before(async () => {
      directory = await mkdtemp(path.join(os.tmpdir(), 'revtun-cli-insecure-'));
    });

    after(async () => {
      await rm(directory, { recursive: true, force: true });
    });

    const refusal = (role: string, problems: readonly string[], fromFlags = true) =>
      [
        `revtun ${role}: refusing to start an insecure ${role} (${problems.length} problem${problems.length === 1 ? '' : 's'}):`,
        ...problems.map((problem) => `  ${problem}`),
        allowHint,
        ...(fromFlags ? [flagsHint] : []),
        '',
      ].join('\n');

    const cases: Array<[string, string[], string, string[]]> = [
      [
        'a tunnel listener on 0.0.0.0 with neither tls nor auth',
        ['responder', '--tunnel-listen', '0', '--egress-listen', '127.0.0.1:0'],
        'responder',
        [
          'tunnel_listener.address 0.0.0.0:0 is reachable from other hosts and the listener has neither tls nor auth: any initiator could claim any node id and receive its traffic. Set tunnel_listener.auth (and tunnel_listener.tls), or bind it to loopback.',
        ],
      ],
      [
        'an egress listener on [::] without callers',
        ['responder', '--tunnel-listen', '127.0.0.1:0', '--egress-listen', '[::]:0'],
        'responder',
        [
          'egress_listeners[0].address [::]:0 is reachable from other hosts and the listener has no callers: anyone who reaches it could send requests to every node. Set egress_listeners[0].callers, or bind it to loopback.',
        ],
      ],
      [
        'an admin server on 0.0.0.0 without token_file',
        [
          'responder',
          '--tunnel-listen',
          '127.0.0.1:0',
          '--egress-listen',
          '127.0.0.1:0',
          '--admin-listen',
          '0.0.0.0:0',
        ],
        'responder',
        [
          'admin.address 0.0.0.0:0 is reachable from other hosts and admin.token_file is not set: anyone who reaches it can read the stats. Set admin.token_file, or bind the admin server to loopback (e.g. 127.0.0.1:8889).',
        ],
      ],
      [
        'an initiator dialling a responder beyond loopback without tls',
        [
          'initiator',
          '--node-id',
          'n1',
          '--cluster-id',
          'c1',
          '--tenant-id',
          't1',
          '--responder',
          '192.0.2.10:9000',
          '--route',
          '/=http://127.0.0.1:8080',
        ],
        'initiator',
        [
          "remote_clusters[0].hosts[0] 192.0.2.10:9000 is beyond loopback and remote_clusters[0] (upstream-cluster) has no tls: the tunnel would carry the private service's traffic in cleartext. Set remote_clusters[0].tls.",
        ],
      ],
    ];
    for (const [name, args, role, problems] of cases) {
      it(`refuses ${name}`, async () => {
        const result = await runCli(args);
        assert.equal(result.code, 1, result.stderr);
        assert.equal(result.stderr, refusal(role, problems));
        assert.equal(result.stdout, '');
      });
    }

    it('refuses an insecure config file, listing every problem, without the flags hint', async () => {
      const file = path.join(directory, 'responder.yaml');
      await writeFile(
        file,
        [
          'admin:',
          '  address: 0.0.0.0:0',
          'tunnel_listener:',
          '  address: 0.0.0.0:0',
          'egress_listeners:',
          '  - address: 127.0.0.1:0',
          '',
        ].join('\n'),
      );
      const result = await runCli(['responder', '--config', file]);
      assert.equal(result.code, 1, result.stderr);
      assert.equal(
        result.stderr,
        refusal(
          'responder',
          [
            'admin.address 0.0.0.0:0 is reachable from other hosts and admin.token_file is not set: anyone who reaches it can read the stats. Set admin.token_file, or bind the admin server to loopback (e.g. 127.0.0.1:8889).',
            'tunnel_listener.address 0.0.0.0:0 is reachable from other hosts and the listener has neither tls nor auth: any initiator could claim any node id and receive its traffic. Set tunnel_listener.auth (and tunnel_listener.tls), or bind it to loopback.',
          ],
          false,
        ),
      );
    });

    it('starts with --allow-insecure, and logs no warning about it', async () => {
      const responder = new TestProcess(
        revtun(
          'responder',
          '--tunnel-listen',
          '0.0.0.0:0',
          '--egress-listen',
          '127.0.0.1:0',
          '--allow-insecure',
          '--log-level',
          'warn',
        ),
      );
      try {
        await responder.waitForStdout(/^ {2}tunnel listener 0\.0\.0\.0:\d+$/m);
        await responder.waitForStdout(/^ {2}egress listener http:\/\/127\.0\.0\.1:\d+$/m);
        await assertStopsCleanly([responder], 'SIGTERM');
        assert.equal(responder.stderr.replace(/^revtun: SIGTERM, stopping.*\n/m, ''), '');
      } finally {
        await responder.stop();
      }
    });

    const envoyHint =
      'An Envoy bootstrap cannot set those keys (revtun translates no TLS transport_socket, jwt_validator or admin token yet), nor allow_insecure: use loopback addresses in the bootstrap, or run revtun envoy --allow-insecure on a network you trust.';
    const envoyAdminProblem =
      'admin.address 0.0.0.0:8888 is reachable from other hosts and admin.token_file is not set: anyone who reaches it can read the stats. Set admin.token_file, or bind the admin server to loopback (e.g. 127.0.0.1:8889).';
    const sandboxBootstrap = (name: 'initiator-envoy.yaml' | 'responder-envoy.yaml') =>
      path.join(repoRoot, 'test', 'fixtures', 'envoy', 'sandbox', name);

    // Refused before anything binds or dials, so the bootstraps' fixed ports and host names do not
    // matter here.
    it("refuses Envoy's responder-envoy.yaml as it is (0.0.0.0), pointing at --allow-insecure", async () => {
      const result = await runCli(['envoy', '-c', sandboxBootstrap('responder-envoy.yaml')]);
      assert.equal(result.code, 1, result.stderr);
      assert.equal(
        result.stderr,
        [
          'revtun envoy: refusing to start an insecure responder (3 problems):',
          `  ${envoyAdminProblem}`,
          '  tunnel_listener.address 0.0.0.0:9000 is reachable from other hosts and the listener has neither tls nor auth: any initiator could claim any node id and receive its traffic. Set tunnel_listener.auth (and tunnel_listener.tls), or bind it to loopback.',
          '  egress_listeners[0].address 0.0.0.0:8085 is reachable from other hosts and the listener has no callers: anyone who reaches it could send requests to every node. Set egress_listeners[0].callers, or bind it to loopback.',
          allowHint,
          envoyHint,
          '',
        ].join('\n'),
      );
      assert.equal(result.stdout, '');
    });

    it("refuses Envoy's initiator-envoy.yaml as it is (cleartext to upstream-envoy), pointing at --allow-insecure", async () => {
      const result = await runCli(['envoy', '-c', sandboxBootstrap('initiator-envoy.yaml')]);
      assert.equal(result.code, 1, result.stderr);
      assert.equal(
        result.stderr,
        [
          'revtun envoy: refusing to start an insecure initiator (2 problems):',
          `  ${envoyAdminProblem}`,
          "  remote_clusters[0].hosts[0] upstream-envoy:9000 is beyond loopback and remote_clusters[0] (upstream-cluster) has no tls: the tunnel would carry the private service's traffic in cleartext. Set remote_clusters[0].tls.",
          allowHint,
          envoyHint,
          '',
        ].join('\n'),
      );
      assert.equal(result.stdout, '');
    });

    it("starts Envoy's responder-envoy.yaml on 0.0.0.0 with --allow-insecure", async () => {
      let bootstrap = readSandboxFile('responder-envoy.yaml');
      for (const fixed of [9000, 8085, 8888]) {
        assert.ok(bootstrap.includes(`port_value: ${fixed}\n`), `port ${fixed} in the bootstrap`);
        bootstrap = bootstrap.replace(`port_value: ${fixed}\n`, 'port_value: 0\n');
      }
      const file = path.join(directory, 'responder-envoy.yaml');
      await writeFile(file, bootstrap);
      const responder = new TestProcess(
        revtun('envoy', '-c', file, '--allow-insecure', '--log-level', 'warn'),
      );
      try {
        await responder.waitForStdout(/^ {2}admin http:\/\/0\.0\.0\.0:\d+\/stats$/m);
        assert.match(responder.stdout, /^ {2}tunnel listener 0\.0\.0\.0:\d+$/m);
        assert.match(responder.stdout, /^ {2}egress listener http:\/\/0\.0\.0\.0:\d+$/m);
        await assertStopsCleanly([responder], 'SIGTERM');
        assert.equal(responder.stderr.replace(/^revtun: SIGTERM, stopping.*\n/m, ''), '');
      } finally {
        await responder.stop();
      }
    });

    for (const command of [
      ['responder', '--tunnel-listen', '127.0.0.1:0', '--egress-listen', '127.0.0.1:0'],
      [
        'initiator',
        '--rc',
        'rc://n1:c1:t1@upstream-cluster:1',
        '--responder',
        '127.0.0.1:9',
        '--route',
        '/=http://127.0.0.1:8080',
      ],
      ['sandbox', '--tunnel-port', '0', '--egress-port', '0'],
    ]) {
      it(`refuses to run ${command[0]} with NODE_TLS_REJECT_UNAUTHORIZED=0 in the environment`, async () => {
        const result = await runToEnd(
          ['env', 'NODE_TLS_REJECT_UNAUTHORIZED=0', ...revtun(...command)],
          startDeadlineMs,
        );
        assert.equal(result.code, 1, result.stderr);
        assert.equal(
          result.stderr,
          `revtun ${command[0]}: refusing to start: NODE_TLS_REJECT_UNAUTHORIZED=0 is set in the environment, which turns off certificate checks for every TLS connection; unset it (for a private CA, set remote_clusters[].tls.ca_file instead)\n`,
        );
        assert.equal(result.stdout, '');
      });
    }
  },
);

describe(
  'revtun refuses to start when a secret or key file cannot be read, in one line naming it',
  {
    concurrency,
  },
  () => {
    let directory: string;

    before(async () => {
      directory = await mkdtemp(path.join(os.tmpdir(), 'revtun-cli-files-'));
    });

    after(async () => {
      await rm(directory, { recursive: true, force: true });
    });

    /** Writes a config whose `key` names a file that does not exist, and runs it. */
    async function runWithMissing(
      role: 'initiator' | 'responder',
      yaml: (missing: string) => string,
    ) {
      const missing = path.join(
        directory,
        `missing-${role}-${Math.random().toString(36).slice(2)}`,
      );
      const file = `${missing}.yaml`;
      await writeFile(file, yaml(missing));
      const result = await runCli([role, '--config', file]);
      assert.equal(result.code, 1, result.stderr);
      assert.equal(result.stdout, '');
      const lines = result.stderr.split('\n');
      assert.equal(lines.length, 2, `one line, then the end:\n${result.stderr}`);
      assert.ok(lines[0]?.startsWith(`revtun ${role}: `), result.stderr);
      assert.ok(lines[0]?.includes(missing), `the path is named:\n${result.stderr}`);
      return lines[0] ?? '';
    }

    const responderYaml = (tunnel: string[], admin: string[] = []) =>
      [
        ...admin,
        'tunnel_listener:',
        '  address: 127.0.0.1:0',
        ...tunnel.map((line) => `  ${line}`),
        'egress_listeners:',
        '  - address: 127.0.0.1:0',
        '',
      ].join('\n');

    it('admin.token_file', async () => {
      const line = await runWithMissing('responder', (missing) =>
        responderYaml([], ['admin:', '  address: 127.0.0.1:0', `  token_file: ${missing}`]),
      );
      assert.match(line, /^revtun responder: cannot read admin\.token_file \S+: ENOENT: /);
    });

    it('tunnel_listener.tls.cert_file and key_file', async () => {
      await runWithMissing('responder', (missing) =>
        responderYaml(['tls:', `  cert_file: ${missing}`, `  key_file: ${missing}`]),
      );
    });

    it('tunnel_listener.auth.jwt.jwks_file', async () => {
      await runWithMissing('responder', (missing) =>
        responderYaml([
          'auth:',
          '  jwt:',
          '    issuer: https://issuer.example',
          `    jwks_file: ${missing}`,
        ]),
      );
    });

    it('remote_clusters[].tls.ca_file', async () => {
      await runWithMissing('initiator', (missing) =>
        [
          'node_id: n1',
          'cluster_id: c1',
          'tenant_id: t1',
          'remote_clusters:',
          '  - name: upstream-cluster',
          '    hosts: [127.0.0.1:9]',
          '    tls:',
          `      ca_file: ${missing}`,
          'local_routes:',
          '  - prefix: /',
          '    target: http://127.0.0.1:8080',
          '',
        ].join('\n'),
      );
    });
  },
);

describe('revtun --log-format', () => {
  it('logs JSON lines with --log-format json and a pretty form with --log-format pretty', async () => {
    const stderrOf = async (format: string) => {
      const responder = new TestProcess(
        revtun(
          'responder',
          '--tunnel-listen',
          '127.0.0.1:0',
          '--egress-listen',
          '127.0.0.1:0',
          '--log-level',
          'debug',
          '--log-format',
          format,
        ),
      );
      try {
        await responder.waitForStdout(/^revtun responder started$/m);
        await assertStopsCleanly([responder], 'SIGTERM');
      } finally {
        await responder.stop();
      }
      // The stop notice is the CLI's own line; the rest are the logger's.
      return responder.stderr
        .split('\n')
        .filter((line) => line !== '' && !line.startsWith('revtun: '));
    };
    const json = await stderrOf('json');
    assert.ok(json.length > 0, 'some log lines');
    for (const line of json)
      assert.equal(typeof (JSON.parse(line) as { msg: unknown }).msg, 'string', line);
    const pretty = await stderrOf('pretty');
    assert.ok(
      pretty.some((line) => /^\[\d\d:\d\d:\d\d\.\d{3}\] DEBUG: responder closed$/.test(line)),
      pretty.join('\n'),
    );
  });
});
