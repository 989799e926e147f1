import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  ConfigError,
  loadConfigFile,
  parseConfigText,
  validateInitiatorConfig,
  validateResponderConfig,
  type ConfigProblem,
  type Role,
} from './load.ts';
import type { InitiatorConfigInput, ResponderConfigInput } from './schema.ts';
import { isRevtunError } from '../shared/errors.ts';

const repoRoot = path.join(import.meta.dirname, '..', '..');
const fixtureRoot = path.join(repoRoot, 'test', 'fixtures', 'config');

/**
 * A problem a fixture expects, from a header line `# expect: <line>:<col> <text>`, or
 * `# expect: - <text>` for a problem with no place in the file (e.g. in an empty document).
 * `text` must occur in the formatted `path: message` after the position.
 */
interface Expectation {
  readonly line: number | undefined;
  readonly column: number | undefined;
  readonly text: string;
}

interface Fixture {
  readonly file: string;
  readonly role: Role;
  readonly expectations: readonly Expectation[];
}

function readFixture(file: string): Fixture {
  const header = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line.startsWith('#')) break;
    header.push(line);
  }
  let role: Role | undefined;
  const expectations: Expectation[] = [];
  for (const line of header) {
    const roleMatch = /^# role: (initiator|responder)$/.exec(line);
    if (roleMatch !== null) role = roleMatch[1] as Role;
    const expectMatch = /^# expect: (?:(\d+):(\d+)|-) (.+)$/.exec(line);
    if (expectMatch !== null) {
      expectations.push({
        line: expectMatch[1] === undefined ? undefined : Number(expectMatch[1]),
        column: expectMatch[2] === undefined ? undefined : Number(expectMatch[2]),
        text: expectMatch[3] as string,
      });
    }
  }
  if (role === undefined) throw new Error(`${file} has no "# role: initiator|responder" line`);
  return { file, role, expectations };
}

function fixturesIn(kind: 'valid' | 'invalid'): Fixture[] {
  const directory = path.join(fixtureRoot, kind);
  return readdirSync(directory)
    .filter((name) => name.endsWith('.yaml'))
    .sort()
    .map((name) => readFixture(path.join(directory, name)));
}

function describeProblem(problem: ConfigProblem): string {
  return problem.path === '' ? problem.message : `${problem.path}: ${problem.message}`;
}

function configErrorOf(run: () => unknown): ConfigError {
  try {
    run();
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
    return error;
  }
  assert.fail('expected a ConfigError, but the config was accepted');
}

async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail('expected a rejection, but the promise resolved');
}

/** The `file:line:col: path: message` lines of a ConfigError message. */
function problemLines(error: ConfigError): string[] {
  return error.message
    .split('\n')
    .slice(1)
    .map((line) => line.trim());
}

const initiatorYaml = `node_id: n
cluster_id: c
tenant_id: t
remote_clusters:
  - name: r
    hosts: [127.0.0.1:9000]
local_routes:
  - prefix: /
    target: http://127.0.0.1:8080
`;

const initiatorObject = {
  node_id: 'n',
  cluster_id: 'c',
  tenant_id: 't',
  remote_clusters: [{ name: 'r', hosts: ['127.0.0.1:9000'] }],
  local_routes: [{ prefix: '/', target: 'http://127.0.0.1:8080' }],
} satisfies InitiatorConfigInput;

const responderObject = {
  tunnel_listener: { address: '127.0.0.1:9000' },
  egress_listeners: [{ address: '127.0.0.1:8085' }],
} satisfies ResponderConfigInput;

describe('config fixtures', () => {
  for (const fixture of fixturesIn('valid')) {
    const name = path.basename(fixture.file);

    it(`loads valid/${name} as a ${fixture.role} config`, async () => {
      const config = await loadConfigFile(fixture.file, fixture.role);
      assert.ok(Object.isFrozen(config));
    });

    it(`rejects valid/${name} when it is read for the other role`, async () => {
      const other = fixture.role === 'initiator' ? 'responder' : 'initiator';
      const error = await rejectionOf(loadConfigFile(fixture.file, other));
      assert.ok(error instanceof ConfigError);
    });
  }

  for (const fixture of fixturesIn('invalid')) {
    const name = path.basename(fixture.file);

    it(`rejects invalid/${name} with exactly the problems its header lists`, async () => {
      assert.ok(fixture.expectations.length > 0, `${name} has no "# expect:" line`);
      const error = await rejectionOf(loadConfigFile(fixture.file, fixture.role));
      assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
      assert.equal(error.code, 'ERR_CONFIG_INVALID');
      const lines = problemLines(error);
      assert.equal(lines.length, fixture.expectations.length, error.message);
      assert.equal(error.problems.length, fixture.expectations.length, error.message);
      for (const expected of fixture.expectations) {
        const where =
          expected.line === undefined
            ? `${fixture.file}: `
            : `${fixture.file}:${expected.line}:${expected.column}: `;
        assert.ok(
          lines.some(
            (line) => line.startsWith(where) && line.includes(expected.text, where.length),
          ),
          `expected "${where}…${expected.text}…" in\n${error.message}`,
        );
        assert.ok(
          error.problems.some(
            (problem) =>
              problem.line === expected.line &&
              problem.column === expected.column &&
              describeProblem(problem).includes(expected.text),
          ),
          `expected a problem at ${expected.line}:${expected.column} with "${expected.text}"`,
        );
      }
    });
  }
});

describe('example configs', () => {
  const examples = readdirSync(path.join(repoRoot, 'examples'), {
    recursive: true,
    encoding: 'utf8',
  })
    .filter((name) => name.endsWith('.yaml'))
    .sort();

  it('include the sandbox initiator and responder', () => {
    assert.ok(examples.includes(path.join('sandbox', 'initiator.yaml')), examples.join(', '));
    assert.ok(examples.includes(path.join('sandbox', 'responder.yaml')), examples.join(', '));
  });

  for (const example of examples) {
    it(`parses examples/${example} for the role in its name`, async () => {
      const name = path.basename(example);
      const role: Role | undefined = name.includes('initiator')
        ? 'initiator'
        : name.includes('responder')
          ? 'responder'
          : undefined;
      assert.ok(role !== undefined, `cannot tell the role of examples/${example} from its name`);
      const config = await loadConfigFile(path.join(repoRoot, 'examples', example), role);
      assert.ok(Object.isFrozen(config));
    });
  }
});

describe('parseConfigText', () => {
  it('applies every initiator default', () => {
    assert.deepEqual(parseConfigText(initiatorYaml, 'initiator'), {
      node_id: 'n',
      cluster_id: 'c',
      tenant_id: 't',
      stat_prefix: 'reverse_tunnel_initiator',
      enable_detailed_stats: false,
      handshake: {
        request_path: '/reverse_connections/request',
        header_prefix: 'x-envoy',
        timeout: 10_000,
        use_http_upgrade: false,
        headers: [],
      },
      max_reconnect_backoff: 30_000,
      max_concurrent_streams: 256,
      http2: {
        max_header_list_size: 65_536,
        max_session_memory: 10,
        max_invalid_frames: 1000,
        max_rejected_streams: 100,
        stream_window: 1_048_576,
        connection_window: 4_194_304,
        max_frame_size: 16_384,
        ping_interval: 5000,
        ping_timeout: 3000,
      },
      allow_insecure: false,
      remote_clusters: [
        {
          name: 'r',
          hosts: [{ host: '127.0.0.1', port: 9000 }],
          tunnels_per_host: 1,
          resolve_interval: 30_000,
        },
      ],
      local_routes: [
        {
          prefix: '/',
          target: 'http://127.0.0.1:8080',
          max_connections: 128,
          connect_timeout: 10_000,
          protocol: 'http1',
          outlier_detection: {
            consecutive_failures: 5,
            ejection_time: 30_000,
            max_ejection_time: 300_000,
            max_ejection_percent: 100,
          },
        },
      ],
      tcp_targets: [],
    });
  });

  it('applies every responder default', () => {
    const text =
      'tunnel_listener:\n  address: 0.0.0.0:9000\negress_listeners:\n  - address: 127.0.0.1:8085\n';
    assert.deepEqual(parseConfigText(text, 'responder'), {
      stat_prefix: 'reverse_tunnel_acceptor',
      enable_tenant_isolation: false,
      enable_detailed_stats: true,
      allow_insecure: false,
      pending_requests: { max_per_node: 1024, timeout: 5000 },
      max_departed_stats: 10_000,
      use_all_tunnels: false,
      http2: {
        max_header_list_size: 65_536,
        max_session_memory: 10,
        max_invalid_frames: 1000,
        max_rejected_streams: 100,
        stream_window: 1_048_576,
        connection_window: 4_194_304,
        max_frame_size: 16_384,
        ping_interval: 5000,
        ping_timeout: 3000,
      },
      tunnel_listener: {
        address: { host: '0.0.0.0', port: 9000 },
        request_path: '/reverse_connections/request',
        request_method: 'GET',
        header_prefix: 'x-envoy',
        handshake_timeout: 10_000,
        max_handshake_bytes: 8192,
        max_pending_handshakes: 1024,
        max_pending_handshakes_per_source: 64,
        ping_interval: 2000,
        ping_failure_threshold: 3,
        use_http_upgrade: false,
        connection_limit_retry_after: 10_000,
        max_tunnels: 100_000,
      },
      tcp_listeners: [],
      egress_listeners: [
        {
          address: { host: '127.0.0.1', port: 8085 },
          stat_prefix: 'egress',
          no_host_id_status: 400,
          headers_timeout: 60_000,
          response_timeout: 60_000,
          websocket_idle_timeout: 300_000,
          max_header_bytes: 16_384,
          refused_status: 403,
          host_id_headers: ['x-node-id', 'x-remote-node-id', 'x-cluster-id', 'x-dst-cluster-uuid'],
          routes: [{ prefix: '/', cluster: 'reverse_connection_cluster' }],
          request_timeout: 300_000,
          http2: {
            enabled: true,
            max_concurrent_streams: 100,
            max_session_memory: 10,
            max_invalid_frames: 100,
            max_rejected_streams: 100,
            stream_window: 1_048_576,
            connection_window: 4_194_304,
            idle_timeout: 300_000,
          },
          forwarded_headers: { mode: 'x-forwarded', via: true, incoming: 'append' },
        },
      ],
    });
  });

  it('turns every set initiator value into its typed form', async () => {
    const config = await loadConfigFile(
      path.join(fixtureRoot, 'valid', 'initiator-full.yaml'),
      'initiator',
    );
    assert.deepEqual(config, {
      node_id: 'edge.node_01',
      cluster_id: 'edge-cluster',
      tenant_id: 'Tenant.A',
      stat_prefix: 'edge_reverse_connection',
      enable_detailed_stats: true,
      admin: { address: { host: '127.0.0.1', port: 0 }, token_file: '/run/secrets/admin-token' },
      lifecycle_log: { path: '/var/log/revtun/initiator.jsonl' },
      handshake: {
        request_path: '/custom/handshake',
        header_prefix: 'x-acme',
        timeout: 1500,
        use_http_upgrade: true,
        headers: [
          { name: 'x-site-token', value_file: '/run/secrets/site-token' },
          { name: 'x-site', value: 'berlin-3' },
        ],
        bearer_token_file: '/run/secrets/tunnel-jwt',
      },
      max_reconnect_backoff: 120_000,
      max_concurrent_streams: 10_000,
      http2: {
        max_header_list_size: 1024,
        max_session_memory: 64,
        max_invalid_frames: 0,
        max_rejected_streams: 5,
        stream_window: 262_144,
        connection_window: 8_388_608,
        max_frame_size: 32_768,
        ping_interval: 750,
        ping_timeout: 250,
      },
      allow_insecure: true,
      remote_clusters: [
        {
          name: 'upstream-a',
          hosts: [
            { host: 'upstream-a.example.com', port: 9000 },
            { host: '10.0.0.2', port: 9000 },
          ],
          tunnels_per_host: 4,
          resolve_interval: 10_000,
          tls: {
            ca_file: '/etc/revtun/ca.pem',
            server_name: 'gateway.example.com',
            cert_file: '/etc/revtun/edge.pem',
            key_file: '/etc/revtun/edge.key',
            spki_pins: ['47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='],
            min_version: 'TLSv1.3',
          },
        },
      ],
      local_routes: [
        {
          path: '/healthz',
          target: 'http://localhost:3001',
          max_connections: 2,
          connect_timeout: 250,
          protocol: 'http1',
          outlier_detection: {
            consecutive_failures: 5,
            ejection_time: 30_000,
            max_ejection_time: 300_000,
            max_ejection_percent: 100,
          },
        },
        {
          prefix: '/api',
          target: 'http://localhost:3000',
          max_connections: 1,
          connect_timeout: 2000,
          protocol: 'http1',
          outlier_detection: {
            consecutive_failures: 5,
            ejection_time: 30_000,
            max_ejection_time: 300_000,
            max_ejection_percent: 100,
          },
        },
      ],
      tcp_targets: [],
    });
  });

  it('turns every set responder value into its typed form', async () => {
    const config = await loadConfigFile(
      path.join(fixtureRoot, 'valid', 'responder-full.yaml'),
      'responder',
    );
    assert.deepEqual(config, {
      stat_prefix: 'edge_acceptor',
      enable_tenant_isolation: true,
      enable_detailed_stats: false,
      allow_insecure: true,
      pending_requests: { max_per_node: 7, timeout: 250 },
      max_departed_stats: 500,
      use_all_tunnels: false,
      http2: {
        max_header_list_size: 2048,
        max_session_memory: 32,
        max_invalid_frames: 10,
        max_rejected_streams: 0,
        stream_window: 65_535,
        connection_window: 65_535,
        max_frame_size: 16_384,
        ping_interval: 9000,
        ping_timeout: 4000,
      },
      admin: {
        address: { host: '::1', port: 8889 },
        access_log: { path: '/var/log/revtun/admin.log' },
        token_file: '/run/secrets/admin-token',
      },
      lifecycle_log: { path: '/var/log/revtun/responder.jsonl' },
      tunnel_listener: {
        address: { host: '::', port: 9000 },
        request_path: '/tunnels',
        request_method: 'POST',
        header_prefix: 'x-acme',
        handshake_timeout: 100,
        max_handshake_bytes: 65_536,
        max_pending_handshakes: 100_000,
        max_pending_handshakes_per_source: 1,
        ping_interval: 300_000,
        ping_failure_threshold: 100,
        use_http_upgrade: true,
        required_cluster_name: 'edge-gateways',
        validation: {
          node_id: { header: 'x-expected-node' },
          cluster_id: { literal: 'edge-cluster' },
          tenant_id: { header: 'x-expected-tenant' },
        },
        max_tunnels_per_node: 8,
        connection_limit_retry_after: 30_000,
        max_tunnels: 500,
        tls: {
          cert_file: '/etc/revtun/gateway.pem',
          key_file: '/etc/revtun/gateway.key',
          min_version: 'TLSv1.3',
          client_ca_file: '/etc/revtun/edge-ca.pem',
        },
        auth: {
          jwt: {
            issuer: 'https://issuer.example.com',
            audiences: ['revtun'],
            jwks_file: '/etc/revtun/jwks.json',
            token_header: 'x-tunnel-token',
            clock_skew: 5000,
            claims: { node_id: 'sub', tenant_id: 'tenant' },
          },
          tokens: [
            {
              node_id: 'edge-1',
              sha256: '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08',
            },
          ],
          client_certificate: { uri_san: 'spiffe://{tenant_id}/{cluster_id}/{node_id}' },
        },
      },
      tcp_listeners: [],
      egress_listeners: [
        {
          address: { host: '127.0.0.1', port: 8085 },
          stat_prefix: 'edge_egress',
          no_host_id_status: 503,
          host_id_headers: ['x-tenant-node'],
          tenant_id_headers: ['x-tenant'],
          lua: {
            inline_code: 'function envoy_on_request(request_handle) end\n',
            max_instructions: 5000,
          },
          routes: [
            {
              path: '/special/exact',
              host_id_headers: ['x-special-node', 'x-node-id'],
              tenant_id_headers: ['x-special-tenant'],
              cluster: 'special_cluster',
            },
            { prefix: '/', cluster: 'reverse_connection_cluster' },
          ],
          request_timeout: 3_600_000,
          headers_timeout: 5000,
          response_timeout: 90_000,
          websocket_idle_timeout: 120_000,
          max_header_bytes: 4096,
          max_body_bytes: 1_048_576,
          tls: {
            cert_file: '/etc/revtun/egress.pem',
            key_file: '/etc/revtun/egress.key',
            min_version: 'TLSv1.2',
            client_ca_file: '/etc/revtun/callers-ca.pem',
          },
          callers: [
            {
              name: 'billing',
              token_sha256: '60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752',
              allow: { tenants: ['acme'], clusters: ['edge-cluster'] },
            },
            { name: 'ops', client_certificate_san: 'spiffe://corp/ops', allow: {} },
          ],
          refused_status: 404,
          http2: {
            enabled: false,
            max_concurrent_streams: 10,
            max_session_memory: 4,
            max_invalid_frames: 10,
            max_rejected_streams: 20,
            stream_window: 131_072,
            connection_window: 262_144,
            idle_timeout: 30_000,
          },
          forwarded_headers: { mode: 'forwarded', via: false, incoming: 'trust' },
        },
      ],
    });
  });

  it('keeps IPv6 hosts without brackets and local targets as bare origins', async () => {
    const config = await loadConfigFile(
      path.join(fixtureRoot, 'valid', 'initiator-ipv6-many-clusters.yaml'),
      'initiator',
    );
    assert.deepEqual(config.remote_clusters[0]?.hosts, [
      { host: '::1', port: 9000 },
      { host: '2001:db8::10', port: 65_535 },
    ]);
    assert.equal(config.remote_clusters[1]?.tunnels_per_host, 0);
    assert.deepEqual(
      config.local_routes.map((route) => route.target),
      ['http://[::1]:8081', 'http://127.0.0.1:8080', 'http://127.0.0.1:8079'],
    );
  });

  it('returns a config frozen all the way down', () => {
    const config = parseConfigText(initiatorYaml, 'initiator');
    assert.ok(Object.isFrozen(config));
    assert.ok(Object.isFrozen(config.handshake));
    assert.ok(Object.isFrozen(config.remote_clusters));
    assert.ok(Object.isFrozen(config.remote_clusters[0]?.hosts[0]));
    assert.throws(() => {
      (config as { node_id: string }).node_id = 'other';
    }, TypeError);
    assert.throws(() => {
      (config.local_routes as unknown[]).push({});
    }, TypeError);
  });

  it('reports every problem at once, sorted by place in the file', () => {
    const text = `local_routes:
  - prefix: /
    target: ftp://127.0.0.1:21
node_id: "bad id"
cluster_id: c
tenant_id: t
remote_clusters:
  - name: r
    hosts: [127.0.0.1:9000]
`;
    const error = configErrorOf(() => parseConfigText(text, 'initiator', 'mixed.yaml'));
    assert.equal(
      error.message,
      'invalid configuration (2 problems):\n' +
        '  mixed.yaml:3:13: local_routes[0].target: "ftp://127.0.0.1:21": only http:// targets are supported\n' +
        '  mixed.yaml:4:10: node_id: must be 1-128 characters of [A-Za-z0-9._-]',
    );
  });

  it('says "1 problem" in the singular', () => {
    const error = configErrorOf(() =>
      parseConfigText(initiatorYaml.replace('node_id: n', 'node_id: a@b'), 'initiator', 'one.yaml'),
    );
    assert.equal(
      error.message,
      'invalid configuration (1 problem):\n' +
        '  one.yaml:1:10: node_id: must be 1-128 characters of [A-Za-z0-9._-]',
    );
  });

  it('names the source <config> when none is given', () => {
    const error = configErrorOf(() => parseConfigText('node_id: [', 'initiator'));
    assert.match(problemLines(error)[0] ?? '', /^<config>:1:\d+: /);
  });

  it('is a RevtunError with the config code and status 500', () => {
    const error = configErrorOf(() => parseConfigText('', 'responder'));
    assert.ok(isRevtunError(error, 'ERR_CONFIG_INVALID'));
    assert.equal(error.status, 500);
  });

  it('reads an initiator config for the responder role as unknown keys', () => {
    const error = configErrorOf(() => parseConfigText(initiatorYaml, 'responder', 'i.yaml'));
    assert.deepEqual(error.problems.map(describeProblem).sort(), [
      'cluster_id: unknown key "cluster_id"',
      'egress_listeners: is required',
      'local_routes: unknown key "local_routes"',
      'node_id: unknown key "node_id"',
      'remote_clusters: unknown key "remote_clusters"',
      'tenant_id: unknown key "tenant_id"',
      'tunnel_listener: is required',
    ]);
  });

  it('reports a document that is not a map at its first line', () => {
    const error = configErrorOf(() => parseConfigText('- a\n', 'responder', 'list.yaml'));
    assert.equal(error.problems.length, 1);
    assert.equal(error.problems[0]?.path, '');
    assert.equal(error.problems[0]?.line, 1);
    assert.match(error.message, /list\.yaml:1:1: .*expected object/);
  });

  it('refuses a second YAML document in the same file', () => {
    const error = configErrorOf(() => parseConfigText(`${initiatorYaml}---\na: 1\n`, 'initiator'));
    assert.match(error.message, /multiple documents/);
  });

  it('refuses YAML merge keys as unknown keys', () => {
    const error = configErrorOf(() =>
      parseConfigText(`${initiatorYaml}<<: {stat_prefix: s}\n`, 'initiator'),
    );
    assert.deepEqual(error.problems.map(describeProblem), ['<<: unknown key "<<"']);
  });

  const durations: Array<[string, number]> = [
    ['100ms', 100],
    ['250ms', 250],
    ['1.5s', 1500],
    ['2s', 2000],
    ['5m', 300_000],
  ];
  for (const [text, ms] of durations) {
    it(`reads a handshake timeout of ${text} as ${ms} ms`, () => {
      const config = parseConfigText(
        `${initiatorYaml}handshake:\n  timeout: ${text}\n`,
        'initiator',
      );
      assert.equal(config.handshake.timeout, ms);
    });
  }

  const outOfRange: Array<[string, string, string]> = [
    ['handshake:\n  timeout: 99ms', 'handshake.timeout', 'must be between 100 ms and 300000 ms'],
    [
      'handshake:\n  timeout: 300001ms',
      'handshake.timeout',
      'must be between 100 ms and 300000 ms',
    ],
    ['max_reconnect_backoff: 999ms', 'max_reconnect_backoff', 'must be between 1000 ms'],
    ['max_reconnect_backoff: 61m', 'max_reconnect_backoff', 'and 3600000 ms'],
  ];
  for (const [yaml, key, message] of outOfRange) {
    it(`refuses ${yaml.replace('\n ', '')} as out of range`, () => {
      const error = configErrorOf(() => parseConfigText(`${initiatorYaml}${yaml}\n`, 'initiator'));
      assert.equal(error.problems.length, 1);
      assert.equal(error.problems[0]?.path, key);
      assert.ok(error.problems[0]?.message.includes(message), error.message);
    });
  }

  const integers: Array<[string, string]> = [
    ['max_concurrent_streams: 0', 'max_concurrent_streams'],
    ['max_concurrent_streams: 10001', 'max_concurrent_streams'],
    ['max_concurrent_streams: 1.5', 'max_concurrent_streams'],
    ['max_concurrent_streams: "256"', 'max_concurrent_streams'],
  ];
  for (const [yaml, key] of integers) {
    it(`refuses ${yaml}`, () => {
      const error = configErrorOf(() => parseConfigText(`${initiatorYaml}${yaml}\n`, 'initiator'));
      assert.deepEqual(
        error.problems.map((problem) => problem.path),
        [key],
      );
    });
  }

  const targets: Array<[string, RegExp]> = [
    ['http://127.0.0.1:8080?x=1', /must be an origin/],
    ['http://user@127.0.0.1:8080', /must be an origin/],
    ['http://127.0.0.1:8080#top', /must be an origin/],
    ['ws://127.0.0.1:8080', /only http:\/\/ targets/],
    ['not a url', /is not a URL/],
  ];
  for (const [target, message] of targets) {
    it(`refuses the local target ${target}`, () => {
      const text = initiatorYaml.replace('http://127.0.0.1:8080', JSON.stringify(target));
      const error = configErrorOf(() => parseConfigText(text, 'initiator'));
      assert.equal(error.problems.length, 1);
      assert.equal(error.problems[0]?.path, 'local_routes[0].target');
      assert.match(error.problems[0]?.message ?? '', message);
    });
  }

  it('refuses a route repeated with the same prefix', () => {
    const text = `${initiatorYaml}  - prefix: /\n    target: http://127.0.0.1:8081\n`;
    const error = configErrorOf(() => parseConfigText(text, 'initiator'));
    assert.deepEqual(
      error.problems.map((problem) => problem.path),
      ['local_routes[1].prefix'],
    );
  });

  it('treats a prefix as a string prefix, so /ab after /a is shadowed', () => {
    const text =
      initiatorYaml.replace('prefix: /', 'prefix: /a') +
      '  - prefix: /ab\n    target: http://127.0.0.1:8081\n';
    const error = configErrorOf(() => parseConfigText(text, 'initiator'));
    assert.match(
      error.problems[0]?.message ?? '',
      /prefix "\/ab" can never match: route 0 \(prefix "\/a"\)/,
    );
  });

  it('refuses an upper-case host id header', () => {
    const text = `tunnel_listener:\n  address: 127.0.0.1:9000\negress_listeners:\n  - address: 127.0.0.1:8085\n    host_id_headers: [X-Node-Id]\n`;
    const error = configErrorOf(() => parseConfigText(text, 'responder', 'r.yaml'));
    assert.deepEqual(problemLines(error), [
      'r.yaml:5:23: egress_listeners[0].host_id_headers[0]: must be a lower-case HTTP header name',
    ]);
  });

  it('reports a key present with no value as the wrong type, at the value', () => {
    const error = configErrorOf(() =>
      parseConfigText(initiatorYaml.replace('node_id: n', 'node_id:'), 'initiator'),
    );
    assert.equal(error.problems.length, 1);
    assert.equal(error.problems[0]?.path, 'node_id');
    assert.equal(error.problems[0]?.line, 1);
    assert.match(error.problems[0]?.message ?? '', /expected string, received null/);
  });

  it('reports a YAML alias bomb as a ConfigError', () => {
    const bomb = [
      'a: &a [x, x, x, x, x, x, x, x, x, x]',
      'b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]',
      'c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]',
      'd: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]',
    ].join('\n');
    configErrorOf(() => parseConfigText(bomb, 'initiator'));
  });

  it('reports an alias to a missing anchor as a ConfigError', () => {
    configErrorOf(() => parseConfigText('node_id: *nowhere\n', 'initiator'));
  });

  it('refuses a local target with a password but no user name', () => {
    const text = initiatorYaml.replace('http://127.0.0.1:8080', 'http://:secret@127.0.0.1:8080');
    configErrorOf(() => parseConfigText(text, 'initiator'));
  });
});

describe('validateInitiatorConfig', () => {
  it('takes durations as strings and returns them in ms', () => {
    const config = validateInitiatorConfig({
      ...initiatorObject,
      handshake: { timeout: '250ms' },
      max_reconnect_backoff: '1m',
    });
    assert.equal(config.handshake.timeout, 250);
    assert.equal(config.max_reconnect_backoff, 60_000);
    assert.deepEqual(config.remote_clusters[0]?.hosts, [{ host: '127.0.0.1', port: 9000 }]);
  });

  it('returns a config it produced as it is', () => {
    const config = validateInitiatorConfig(initiatorObject);
    assert.equal(validateInitiatorConfig(config), config);
  });

  it('accepts a config parsed from YAML as it is', () => {
    const config = parseConfigText(initiatorYaml, 'initiator');
    assert.equal(validateInitiatorConfig(config), config);
  });

  it('names key paths but no file positions in its problems', () => {
    const error = configErrorOf(() =>
      validateInitiatorConfig({
        ...initiatorObject,
        remote_clusters: [{ name: 'r', hosts: ['127.0.0.1'] }],
        extra: true,
      } as InitiatorConfigInput),
    );
    assert.deepEqual(error.problems, [
      {
        path: 'remote_clusters[0].hosts[0]',
        message: 'invalid address "127.0.0.1": expected host:port',
      },
      { path: 'extra', message: 'unknown key "extra"' },
    ]);
    assert.deepEqual(
      problemLines(error).map((line) => line.slice(0, '<config>: '.length)),
      ['<config>: ', '<config>: '],
    );
  });

  it('accepts any identifier of 1 to 128 characters of [A-Za-z0-9._-]', () => {
    fc.assert(
      fc.property(fc.stringMatching(/^[A-Za-z0-9._-]{1,128}$/), (id) => {
        const config = validateInitiatorConfig({ ...initiatorObject, node_id: id, tenant_id: id });
        assert.equal(config.node_id, id);
        assert.equal(config.tenant_id, id);
      }),
      { numRuns: 200 },
    );
  });

  it('refuses any identifier with a character outside [A-Za-z0-9._-]', () => {
    const allowed = fc.stringMatching(/^[A-Za-z0-9._-]{0,20}$/);
    const forbidden = fc.constantFrom(':', '@', ' ', '/', '\t', '\n', 'é', '*', '%');
    fc.assert(
      fc.property(allowed, forbidden, allowed, (before, bad, after) => {
        const id = `${before}${bad}${after}`;
        const error = configErrorOf(() =>
          validateInitiatorConfig({ ...initiatorObject, cluster_id: id }),
        );
        assert.deepEqual(
          error.problems.map((problem) => problem.path),
          ['cluster_id'],
        );
      }),
      { numRuns: 200 },
    );
  });

  it('refuses an identifier of 129 characters', () => {
    const error = configErrorOf(() =>
      validateInitiatorConfig({ ...initiatorObject, node_id: 'a'.repeat(129) }),
    );
    assert.deepEqual(
      error.problems.map((problem) => problem.path),
      ['node_id'],
    );
  });

  it('reports a value of the wrong type as the wrong type, not as missing', () => {
    const error = configErrorOf(() =>
      validateInitiatorConfig({
        ...initiatorObject,
        node_id: 42,
      } as unknown as InitiatorConfigInput),
    );
    assert.doesNotMatch(error.message, /is required/);
  });

  it('refuses an edited copy of a config it produced, saying what the values should look like', () => {
    const config = validateInitiatorConfig(initiatorObject);
    const error = configErrorOf(() => validateInitiatorConfig({ ...config, node_id: 'other' }));
    assert.doesNotMatch(error.message, /is required/);
    assert.match(error.message, /handshake\.timeout: must be a duration with a unit/);
  });
});

describe('validateResponderConfig', () => {
  it('accepts port 0 on listeners', () => {
    const config = validateResponderConfig({
      admin: { address: '127.0.0.1:0' },
      tunnel_listener: { address: '[::]:0' },
      egress_listeners: [{ address: 'localhost:0' }],
    });
    assert.deepEqual(config.admin?.address, { host: '127.0.0.1', port: 0 });
    assert.deepEqual(config.tunnel_listener.address, { host: '::', port: 0 });
    assert.deepEqual(config.egress_listeners[0]?.address, { host: 'localhost', port: 0 });
  });

  it('lower-cases the header prefix and upper-cases the request method', () => {
    const config = validateResponderConfig({
      ...responderObject,
      tunnel_listener: {
        address: '127.0.0.1:9000',
        header_prefix: 'X-Acme',
        request_method: 'post',
      },
    });
    assert.equal(config.tunnel_listener.header_prefix, 'x-acme');
    assert.equal(config.tunnel_listener.request_method, 'POST');
  });

  it('returns a config it produced as it is', () => {
    const config = validateResponderConfig(responderObject);
    assert.equal(validateResponderConfig(config), config);
  });

  it('reports missing required keys', () => {
    const error = configErrorOf(() => validateResponderConfig({} as ResponderConfigInput));
    assert.deepEqual(error.problems, [
      { path: 'tunnel_listener', message: 'is required' },
      { path: 'egress_listeners', message: 'is required' },
    ]);
  });

  it('refuses an empty list of egress listeners', () => {
    const error = configErrorOf(() =>
      validateResponderConfig({ ...responderObject, egress_listeners: [] }),
    );
    assert.deepEqual(
      error.problems.map((problem) => problem.path),
      ['egress_listeners'],
    );
  });

  it('refuses an initiator config', () => {
    const initiator = validateInitiatorConfig(initiatorObject);
    configErrorOf(() => validateResponderConfig(initiator as unknown as ResponderConfigInput));
  });
});

describe('loadConfigFile', () => {
  it('reports a file it cannot read with its name and the cause', async () => {
    const file = path.join(fixtureRoot, 'no-such-file.yaml');
    const error = await rejectionOf(loadConfigFile(file, 'initiator'));
    assert.ok(isRevtunError(error, 'ERR_CONFIG_READ'));
    assert.ok(error.message.startsWith(`cannot read ${file}: `), error.message);
    assert.equal((error.cause as NodeJS.ErrnoException).code, 'ENOENT');
  });

  it('names the file in every problem', async () => {
    const file = path.join(fixtureRoot, 'invalid', 'unknown-nested-keys.yaml');
    const error = await rejectionOf(loadConfigFile(file, 'responder'));
    assert.ok(error instanceof ConfigError);
    for (const line of problemLines(error)) assert.ok(line.startsWith(`${file}:`), line);
  });
});

describe('local route options', () => {
  type LocalRouteInput = NonNullable<InitiatorConfigInput['local_routes']>[number];
  const withRoutes = (local_routes: LocalRouteInput[]) =>
    validateInitiatorConfig({ ...initiatorObject, local_routes });
  /** The `path: message` of each problem of a config with these routes. */
  const problemsOf = (routes: LocalRouteInput[]) =>
    configErrorOf(() => withRoutes(routes)).problems.map(
      (problem) => `${problem.path}: ${problem.message}`,
    );
  const target = 'http://127.0.0.1:8080';

  const docBlocks = [
    ...readFileSync(path.join(repoRoot, 'docs', 'local-routes.md'), 'utf8').matchAll(
      /```yaml\n([\s\S]*?)```/g,
    ),
  ].map((match) => match[1] as string);

  it('has examples in docs/local-routes.md', () => {
    assert.ok(docBlocks.length >= 4, `${docBlocks.length} yaml blocks`);
  });

  docBlocks.forEach((block, index) => {
    it(`parses yaml block ${index + 1} of docs/local-routes.md as an initiator's local_routes`, () => {
      const text = initiatorYaml.replace(/^local_routes:[\s\S]*$/m, block);
      const config = parseConfigText(text, 'initiator', 'docs/local-routes.md');
      assert.ok(config.local_routes.length >= 1);
    });
  });

  it('takes every new option and fills in the defaults of the rest', () => {
    const config = withRoutes([
      {
        regex: '/v[0-9]+/.*',
        host: 'API.Example.com',
        targets: ['http://127.0.0.1:8081', 'http://[::1]:8082'],
        protocol: 'http2',
        timeout: '1.5s',
        outlier_detection: { consecutive_failures: 3, ejection_time: '5s' },
      },
      { prefix: '/old/', prefix_rewrite: '/new/', host: '*.example.com', target },
    ]);
    const [first, second] = config.local_routes;
    assert.equal(first?.host, 'api.example.com');
    assert.deepEqual(first?.targets, ['http://127.0.0.1:8081', 'http://[::1]:8082']);
    assert.equal(first?.protocol, 'http2');
    assert.equal(first?.timeout, 1500);
    assert.deepEqual(first?.outlier_detection, {
      consecutive_failures: 3,
      ejection_time: 5000,
      max_ejection_time: 300_000,
      max_ejection_percent: 100,
    });
    assert.equal(second?.prefix_rewrite, '/new/');
    assert.equal(second?.protocol, 'http1');
    assert.equal(second?.timeout, undefined);
  });

  it('refuses a route with two of prefix, path and regex, or none', () => {
    const message =
      'a local route needs exactly one of prefix (a path prefix), path (an exact path) or regex (a pattern the whole path matches)';
    assert.deepEqual(
      problemsOf([
        { prefix: '/a', regex: '/a.*', target },
        { path: '/b', regex: '/b', target },
        { target },
      ]),
      [`local_routes[0]: ${message}`, `local_routes[1]: ${message}`, `local_routes[2]: ${message}`],
    );
  });

  it('refuses a regex that does not compile, or that the matcher does not support', () => {
    const problems = problemsOf([
      { regex: '/(', target },
      { regex: '/(a)\\1', target },
      { regex: '/(?=x)x', target },
    ]);
    assert.equal(problems.length, 3);
    assert.match(
      problems[0] ?? '',
      /^local_routes\[0\]\.regex: regex "\/\(": not a valid JavaScript/,
    );
    assert.match(
      problems[1] ?? '',
      /^local_routes\[1\]\.regex: .*backreferences are not supported/,
    );
    assert.match(problems[2] ?? '', /^local_routes\[2\]\.regex: .*lookaheads and lookbehinds/);
  });

  it('refuses prefix_rewrite without prefix', () => {
    assert.deepEqual(problemsOf([{ path: '/a', prefix_rewrite: '/b', target }]), [
      'local_routes[0].prefix_rewrite: prefix_rewrite replaces the matched prefix, so it needs prefix',
    ]);
  });

  it('refuses target and targets together, and neither', () => {
    const message = 'a local route needs exactly one of target (one endpoint) or targets (a list)';
    assert.deepEqual(problemsOf([{ prefix: '/a', target, targets: [target] }, { prefix: '/b' }]), [
      `local_routes[0]: ${message}`,
      `local_routes[1]: ${message}`,
    ]);
  });

  it('refuses an empty targets list, a duplicate target and a target that is no origin', () => {
    const problems = problemsOf([
      { prefix: '/a', targets: [] },
      { prefix: '/b', targets: [target, 'http://127.0.0.1:8081', 'http://127.0.0.1:8080/'] },
      { prefix: '/c', targets: ['http://127.0.0.1:8080/x'] },
    ]);
    assert.equal(problems.length, 3);
    assert.match(problems[0] ?? '', /^local_routes\[0\]\.targets: /);
    // http://127.0.0.1:8080/ is the same origin as http://127.0.0.1:8080.
    assert.equal(
      problems[1],
      'local_routes[1].targets[2]: "http://127.0.0.1:8080" is listed twice',
    );
    assert.match(problems[2] ?? '', /^local_routes\[2\]\.targets\[0\]: .* must be an origin/);
  });

  it('refuses a host with a port, a bare wildcard or a wildcard inside the name', () => {
    const problems = problemsOf([
      { prefix: '/a', host: 'example.com:80', target },
      { prefix: '/b', host: '*', target },
      { prefix: '/c', host: 'a.*.example.com', target },
    ]);
    assert.deepEqual(
      problems.map((problem) => problem.split(':')[0]),
      ['local_routes[0].host', 'local_routes[1].host', 'local_routes[2].host'],
    );
  });

  it('refuses a protocol other than http1 or http2, and a max_ejection_time below ejection_time', () => {
    const problems = problemsOf([
      { prefix: '/a', target, protocol: 'h2c' as 'http2' },
      {
        prefix: '/b',
        target,
        outlier_detection: { ejection_time: '1m', max_ejection_time: '30s' },
      },
    ]);
    assert.equal(problems.length, 2);
    assert.match(problems[0] ?? '', /^local_routes\[0\]\.protocol: /);
    assert.equal(
      problems[1],
      'local_routes[1].outlier_detection.max_ejection_time: max_ejection_time must be at least ejection_time',
    );
  });

  it('reports a route that an earlier one shadows, on any host or on the same host', () => {
    assert.deepEqual(
      problemsOf([
        { prefix: '/api', target },
        { prefix: '/api/v1', host: 'a.example.com', target },
        { prefix: '/', host: '*.example.com', target },
        { path: '/x', host: 'b.example.com', target },
        { prefix: '/y', host: '*.b.example.com', target },
        { prefix: '/', target },
        { regex: '/z.*', target },
      ]),
      [
        'local_routes[1].prefix: prefix "/api/v1" on host "a.example.com" can never match: route 0 (prefix "/api") comes first and matches every such path',
        'local_routes[3].path: path "/x" on host "b.example.com" can never match: route 2 (prefix "/" on host "*.example.com") comes first and matches every such path',
        'local_routes[4].prefix: prefix "/y" on host "*.b.example.com" can never match: route 2 (prefix "/" on host "*.example.com") comes first and matches every such path',
        'local_routes[6].regex: regex "/z.*" can never match: route 5 (prefix "/") comes first and matches every such path',
      ],
    );
  });

  it('reports no shadowing it cannot prove', () => {
    const config = withRoutes([
      { regex: '/.*', target },
      { prefix: '/', host: 'a.example.com', target },
      { prefix: '/a', host: 'b.example.com', target },
      { prefix: '/a', host: '*.example.com', target },
      { prefix: '/a', target },
      { path: '/b', host: 'example.com', target },
      { regex: '/c', target },
      { prefix: '/', target },
    ]);
    assert.equal(config.local_routes.length, 8);
  });

  it('never reports a route as shadowed when a request matches it first', () => {
    // Soundness: when route 1 is refused as shadowed by route 0, every request (authority and
    // path, from a small world) that route 1 matches, route 0 matches too.
    const hosts = [
      undefined,
      'a.example.com',
      'b.a.example.com',
      '*.example.com',
      '*.a.example.com',
    ];
    const authorities = [
      'a.example.com',
      'b.a.example.com',
      'c.b.a.example.com',
      'example.com',
      'x.org',
    ];
    const paths = ['/', '/a', '/ab', '/a/b', '/b'];
    const route = fc.record({
      kind: fc.constantFrom('prefix', 'path', 'regex'),
      value: fc.constantFrom('/', '/a', '/ab', '/a/b'),
      host: fc.constantFrom(...hosts),
    });
    const matches = (
      r: { kind: string; value: string; host: string | undefined },
      authority: string,
      path: string,
    ) => {
      const hostOk =
        r.host === undefined ||
        (r.host.startsWith('*.')
          ? authority.endsWith(r.host.slice(1)) && authority.length > r.host.length - 1
          : authority === r.host);
      const pathOk =
        r.kind === 'prefix'
          ? path.startsWith(r.value)
          : r.kind === 'path'
            ? path === r.value
            : new RegExp(`^(?:${r.value}.*)$`).test(path);
      return hostOk && pathOk;
    };
    fc.assert(
      fc.property(route, route, (earlier, later) => {
        const toInput = (r: typeof earlier): LocalRouteInput => ({
          [r.kind]: r.kind === 'regex' ? `${r.value}.*` : r.value,
          ...(r.host === undefined ? {} : { host: r.host }),
          target,
        });
        let refused = false;
        try {
          withRoutes([toInput(earlier), toInput(later)]);
        } catch (error) {
          if (!(error instanceof ConfigError)) throw error;
          refused = true;
        }
        if (!refused) return;
        for (const authority of authorities) {
          for (const path of paths) {
            if (matches(later, authority, path)) {
              assert.ok(matches(earlier, authority, path), `${authority}${path}`);
            }
          }
        }
      }),
    );
  });
});
