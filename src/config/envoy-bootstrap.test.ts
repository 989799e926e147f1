import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { translateEnvoyBootstrap } from './envoy-bootstrap.ts';
import { ConfigError, type ConfigProblem } from './load.ts';

const repoRoot = path.join(import.meta.dirname, '..', '..');
const fixture = (name: string) =>
  readFileSync(path.join(repoRoot, 'test', 'fixtures', 'envoy', name), 'utf8');

const sandboxInitiator = fixture('sandbox/initiator-envoy.yaml');
const sandboxResponder = fixture('sandbox/responder-envoy.yaml');

/** The sandbox responder's Lua script, as the YAML block scalar gives it. */
const sandboxLua = [
  'function envoy_on_request(request_handle)',
  '  local headers = request_handle:headers()',
  '  local node_id = headers:get("x-node-id")',
  '  local cluster_id = headers:get("x-cluster-id")',
  '',
  '  local host_id = ""',
  '',
  '  -- Priority 1: x-node-id header',
  '  if node_id then',
  '    host_id = node_id',
  '    request_handle:logInfo("Using x-node-id as host_id: " .. host_id)',
  '  -- Priority 2: x-cluster-id header',
  '  elseif cluster_id then',
  '    host_id = cluster_id',
  '    request_handle:logInfo("Using x-cluster-id as host_id: " .. host_id)',
  '  else',
  '    request_handle:logError("No valid headers found: x-node-id or x-cluster-id")',
  "    -- Don't set x-computed-host-id, which will cause cluster matching to fail",
  '    return',
  '  end',
  '',
  '  -- Set the computed host ID for the reverse connection cluster',
  '  headers:add("x-computed-host-id", host_id)',
  'end',
  '',
].join('\n');

/** `text` with `anchor` (which must occur exactly once) replaced. */
function edit(text: string, anchor: string, replacement: string): string {
  const first = text.indexOf(anchor);
  assert.ok(first >= 0, `"${anchor}" is not in the text`);
  assert.equal(text.indexOf(anchor, first + 1), -1, `"${anchor}" occurs more than once`);
  return text.slice(0, first) + replacement + text.slice(first + anchor.length);
}

/**
 * The 1-based line and column where `marker` (which must occur once) starts in `text`, or with a
 * "»" in it, where the text after the "»" starts.
 */
function place(text: string, marker: string): { line: number; column: number } {
  const cursor = Math.max(marker.indexOf('»'), 0);
  const needle = marker.replace('»', '');
  const found = text.indexOf(needle);
  assert.ok(found >= 0, `"${needle}" is not in the text`);
  assert.equal(text.indexOf(needle, found + 1), -1, `"${needle}" occurs more than once`);
  const offset = found + cursor;
  const before = text.slice(0, offset).split('\n');
  return { line: before.length, column: (before[before.length - 1] as string).length + 1 };
}

function problemsOf(text: string): readonly ConfigProblem[] {
  try {
    translateEnvoyBootstrap(text, 'bootstrap.yaml');
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  assert.fail('the bootstrap was accepted');
}

interface Expected {
  readonly path: string;
  readonly message: string;
  /** Text that starts where the problem is placed. */
  readonly at: string;
}

/** Asserts exactly these problems, each with its path, message and line:col. */
function assertProblems(text: string, expected: readonly Expected[]): void {
  assert.deepEqual(
    problemsOf(text),
    expected.map(({ path: problemPath, message, at }) => ({
      path: problemPath,
      message,
      ...place(text, at),
    })),
  );
}

describe("the Envoy sandbox's bootstrap configs translate to revtun configs", () => {
  it('initiator-envoy.yaml is an initiator with one remote cluster and one local route', () => {
    const translation = translateEnvoyBootstrap(sandboxInitiator, 'initiator-envoy.yaml');
    assert.equal(translation.responder, undefined);
    assert.deepEqual(translation.inputs, {
      initiator: {
        node_id: 'downstream-node',
        cluster_id: 'downstream-cluster',
        tenant_id: 'downstream-tenant',
        stat_prefix: 'downstream_reverse_connection',
        admin: { address: '0.0.0.0:8888', access_log: { path: '/dev/stdout' } },
        remote_clusters: [
          { name: 'upstream-cluster', hosts: ['upstream-envoy:9000'], tunnels_per_host: 1 },
        ],
        local_routes: [
          {
            prefix: '/downstream_service',
            target: 'http://downstream-service:80',
            connect_timeout: '30s',
          },
        ],
      },
    });
    assert.deepEqual(translation.initiator, {
      node_id: 'downstream-node',
      cluster_id: 'downstream-cluster',
      tenant_id: 'downstream-tenant',
      stat_prefix: 'downstream_reverse_connection',
      enable_detailed_stats: false,
      admin: { address: { host: '0.0.0.0', port: 8888 }, access_log: { path: '/dev/stdout' } },
      handshake: {
        request_path: '/reverse_connections/request',
        header_prefix: 'x-envoy',
        timeout: 10_000,
        use_http_upgrade: false,
        headers: [],
      },
      max_reconnect_backoff: 30_000,
      max_concurrent_streams: 256,
      // Schema defaults the bootstrap has no field for.
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
          name: 'upstream-cluster',
          hosts: [{ host: 'upstream-envoy', port: 9000 }],
          tunnels_per_host: 1,
          resolve_interval: 30_000,
        },
      ],
      local_routes: [
        {
          prefix: '/downstream_service',
          target: 'http://downstream-service',
          max_connections: 128,
          connect_timeout: 30_000,
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
    assert.ok(Object.isFrozen(translation.initiator));
  });

  it('responder-envoy.yaml is a responder whose egress listener runs the Lua script', () => {
    const translation = translateEnvoyBootstrap(sandboxResponder, 'responder-envoy.yaml');
    assert.equal(translation.initiator, undefined);
    assert.deepEqual(translation.inputs, {
      responder: {
        stat_prefix: 'upstream_reverse_connection',
        enable_detailed_stats: true,
        admin: { address: '0.0.0.0:8888', access_log: { path: '/dev/stdout' } },
        tunnel_listener: { address: '0.0.0.0:9000', ping_interval: '2s' },
        egress_listeners: [
          {
            address: '0.0.0.0:8085',
            no_host_id_status: 503,
            forwarded_headers: { mode: 'none', via: false },
            stat_prefix: 'egress_http',
            host_id_headers: ['x-computed-host-id'],
            lua: { inline_code: sandboxLua },
            routes: [{ prefix: '/downstream_service', cluster: 'reverse_connection_cluster' }],
          },
        ],
      },
    });
    assert.deepEqual(translation.responder, {
      stat_prefix: 'upstream_reverse_connection',
      enable_tenant_isolation: false,
      enable_detailed_stats: true,
      // Schema defaults the bootstrap has no field for.
      allow_insecure: false,
      pending_requests: { max_per_node: 1024, timeout: 5000 },
      max_departed_stats: 10_000,
      use_all_tunnels: false,
      tcp_listeners: [],
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
      admin: { address: { host: '0.0.0.0', port: 8888 }, access_log: { path: '/dev/stdout' } },
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
        max_tunnels: 100_000,
        connection_limit_retry_after: 10_000,
      },
      egress_listeners: [
        {
          address: { host: '0.0.0.0', port: 8085 },
          stat_prefix: 'egress_http',
          host_id_headers: ['x-computed-host-id'],
          no_host_id_status: 503,
          lua: { inline_code: sandboxLua, max_instructions: 10_000_000 },
          routes: [{ prefix: '/downstream_service', cluster: 'reverse_connection_cluster' }],
          request_timeout: 300_000,
          headers_timeout: 60_000,
          response_timeout: 60_000,
          websocket_idle_timeout: 300_000,
          max_header_bytes: 16_384,
          refused_status: 403,
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
          forwarded_headers: { mode: 'none', via: false, incoming: 'append' },
        },
      ],
    });
    assert.ok(Object.isFrozen(translation.responder));
  });

  it('a bootstrap with both extensions runs both roles, and refuses one admin server for both', () => {
    const both = edit(
      sandboxResponder,
      'bootstrap_extensions:\n',
      [
        'bootstrap_extensions:',
        '- name: envoy.bootstrap.reverse_tunnel.downstream_socket_interface',
        '  typed_config:',
        '    "@type": type.googleapis.com/envoy.extensions.bootstrap.reverse_tunnel.downstream_socket_interface.v3.DownstreamReverseConnectionSocketInterface',
        '',
      ].join('\n'),
    )
      .replace(
        '  listeners:\n',
        [
          '  listeners:',
          '  - name: rc',
          '    address:',
          '      socket_address:',
          '        address: "rc://n1:c1:t1@upstream:1"',
          '        port_value: 0',
          '        resolver_name: envoy.resolvers.reverse_connection',
          '    filter_chains:',
          '    - filters:',
          '      - name: envoy.filters.network.http_connection_manager',
          '        typed_config:',
          '          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
          '          stat_prefix: rc',
          '          route_config:',
          '            virtual_hosts:',
          '            - name: local',
          '              domains: ["*"]',
          '              routes:',
          '              - match: { path: /health }',
          '                route: { cluster: local }',
          '          http_filters:',
          '          - name: envoy.filters.http.router',
          '',
        ].join('\n'),
      )
      .replace(
        '  clusters:\n',
        [
          '  clusters:',
          '  - name: upstream',
          '    load_assignment:',
          '      endpoints:',
          '      - lb_endpoints:',
          '        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 9000 } } }',
          '  - name: local',
          '    type: STATIC',
          '    load_assignment:',
          '      endpoints:',
          '      - lb_endpoints:',
          '        - endpoint: { address: { socket_address: { address: "::1", port_value: 8080 } } }',
          '',
        ].join('\n'),
      );
    const withoutAdmin = both.replace(/\nadmin:\n(?: .*\n)+/, '\n');
    assert.notEqual(withoutAdmin, both);
    const translation = translateEnvoyBootstrap(withoutAdmin);
    assert.deepEqual(translation.inputs.initiator, {
      node_id: 'n1',
      cluster_id: 'c1',
      tenant_id: 't1',
      remote_clusters: [{ name: 'upstream', hosts: ['127.0.0.1:9000'], tunnels_per_host: 1 }],
      local_routes: [{ path: '/health', target: 'http://[::1]:8080' }],
    });
    assert.equal(translation.inputs.responder?.admin, undefined);
    assert.ok(translation.responder !== undefined);
    assert.throws(
      () => translateEnvoyBootstrap(both),
      (error) =>
        error instanceof ConfigError &&
        error.problems.some(
          (problem) =>
            problem.path === 'admin' &&
            /one admin server cannot serve both roles/.test(problem.message),
        ),
    );
  });
});

/** An initiator whose listener adds `additional` rc:// addresses, with clusters a and b. */
function multiClusterInitiator(primary: string, additional: readonly string[]): string {
  return [
    'bootstrap_extensions:',
    '- name: envoy.bootstrap.reverse_tunnel.downstream_socket_interface',
    '  typed_config:',
    '    "@type": type.googleapis.com/envoy.extensions.bootstrap.reverse_tunnel.downstream_socket_interface.v3.DownstreamReverseConnectionSocketInterface',
    'static_resources:',
    '  listeners:',
    '  - name: multi_cluster_listener',
    '    address:',
    '      socket_address:',
    `        address: "${primary}"`,
    '        port_value: 0',
    '        resolver_name: envoy.resolvers.reverse_connection',
    ...(additional.length === 0 ? [] : ['    additional_addresses:']),
    ...additional.flatMap((address) => [
      '    - address:',
      '        socket_address:',
      `          address: "${address}"`,
      '          port_value: 0',
      '          resolver_name: envoy.resolvers.reverse_connection',
    ]),
    '    filter_chains:',
    '    - filters:',
    '      - name: envoy.filters.network.http_connection_manager',
    '        typed_config:',
    '          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
    '          stat_prefix: rc',
    '          route_config:',
    '            virtual_hosts:',
    '            - name: local',
    '              domains: ["*"]',
    '              routes:',
    '              - match: { prefix: / }',
    '                route: { cluster: local }',
    '          http_filters:',
    '          - name: envoy.filters.http.router',
    '  clusters:',
    ...['cluster-a', 'cluster-b', 'local'].flatMap((name, index) => [
      `  - name: ${name}`,
      '    type: STATIC',
      '    load_assignment:',
      '      endpoints:',
      '      - lb_endpoints:',
      `        - endpoint: { address: { socket_address: { address: 127.0.0.${index + 1}, port_value: ${9000 + index} } } }`,
    ]),
    '',
  ].join('\n');
}

describe('rc:// addresses', () => {
  it('additional_addresses add remote clusters with their own counts (2 to cluster-a, 3 to cluster-b)', () => {
    const text = multiClusterInitiator('rc://node-1:downstream-cluster:tenant-a@cluster-a:2', [
      'rc://node-1:downstream-cluster:tenant-a@cluster-b:3',
    ]);
    const translation = translateEnvoyBootstrap(text);
    assert.deepEqual(translation.inputs.initiator, {
      node_id: 'node-1',
      cluster_id: 'downstream-cluster',
      tenant_id: 'tenant-a',
      remote_clusters: [
        { name: 'cluster-a', hosts: ['127.0.0.1:9000'], tunnels_per_host: 2 },
        { name: 'cluster-b', hosts: ['127.0.0.2:9001'], tunnels_per_host: 3 },
      ],
      local_routes: [{ prefix: '/', target: 'http://127.0.0.3:9002' }],
    });
  });

  it('every additional address must carry the same identity', () => {
    const text = multiClusterInitiator('rc://node-1:c:t@cluster-a:2', [
      'rc://node-2:c:t@cluster-b:3',
    ]);
    assertProblems(text, [
      {
        path: 'static_resources.listeners[0].additional_addresses[0].address.socket_address.address',
        message:
          'every rc:// address of the listener must carry the same identity: this one has node-2:c:t, the first node-1:c:t',
        at: '"rc://node-2:c:t@cluster-b:3"',
      },
    ]);
  });

  const rcCases: Array<[string, string, string]> = [
    [
      'no tenant',
      'rc://n:c@cluster-a:1',
      'invalid rc:// address "rc://n:c@cluster-a:1": expected <node_id>:<cluster_id>:<tenant_id> before "@"',
    ],
    [
      'an empty tenant',
      'rc://n:c:@cluster-a:1',
      'invalid rc:// address "rc://n:c:@cluster-a:1": the tenant id is empty (current responders reject an empty tenant)',
    ],
    [
      'no count',
      'rc://n:c:t@cluster-a',
      'invalid rc:// address "rc://n:c:t@cluster-a": expected <remote_cluster>:<connection_count> after "@"',
    ],
    [
      'a count that is not a number',
      'rc://n:c:t@cluster-a:x',
      'invalid rc:// address "rc://n:c:t@cluster-a:x": connection count "x" is not a uint32',
    ],
  ];
  for (const [name, address, message] of rcCases) {
    it(`rejects an rc:// address with ${name}`, () => {
      const text = multiClusterInitiator(address, []);
      assertProblems(text, [
        {
          path: 'static_resources.listeners[0].address.socket_address.address',
          message,
          at: `"${address}"`,
        },
      ]);
    });
  }

  it('rejects a port other than 0, a missing resolver and a remote cluster that does not exist', () => {
    const text = edit(
      multiClusterInitiator('rc://n:c:t@cluster-a:1', ['rc://n:c:t@cluster-x:1']),
      '        port_value: 0\n        resolver_name: envoy.resolvers.reverse_connection\n    additional',
      '        port_value: 9000\n    additional',
    );
    assertProblems(text, [
      {
        path: 'static_resources.listeners[0].address.socket_address.port_value',
        message: 'must be 0 for an rc:// address',
        at: '9000\n    additional',
      },
      {
        path: 'static_resources.listeners[0].address.socket_address.resolver_name',
        message: 'must be envoy.resolvers.reverse_connection for an rc:// address',
        at: 'address: "rc://n:c:t@cluster-a:1"',
      },
      {
        path: 'static_resources.listeners[0].additional_addresses[0].address.socket_address.address',
        message: 'cluster "cluster-x" is not in static_resources.clusters',
        at: '"rc://n:c:t@cluster-x:1"',
      },
    ]);
  });

  it('a cluster nothing uses is a problem in an otherwise sound file', () => {
    const text = multiClusterInitiator('rc://n:c:t@cluster-a:1', []);
    assertProblems(text, [
      {
        path: 'static_resources.clusters[1]',
        message:
          'cluster "cluster-b" is used by no route and no rc:// address; revtun runs no unused clusters: remove it',
        at: 'name: cluster-b',
      },
    ]);
  });
});

interface UnsupportedCase {
  readonly name: string;
  readonly base: 'initiator' | 'responder';
  /** [anchor, replacement] edits, in order. */
  readonly edits: ReadonlyArray<readonly [string, string]>;
  readonly problems: readonly Expected[];
}

const responderFilter = 'static_resources.listeners[0].filter_chains[0].filters[0].typed_config';
const egressHcm = 'static_resources.listeners[1].filter_chains[0].filters[0].typed_config';
const initiatorHcm = 'static_resources.listeners[0].filter_chains[0].filters[0].typed_config';
const reverseCluster = 'static_resources.clusters[0]';

const unsupported: UnsupportedCase[] = [
  {
    name: 'an HTTP filter other than lua and router (cors)',
    base: 'responder',
    edits: [
      [
        '          - name: envoy.filters.http.router\n',
        '          - name: envoy.filters.http.cors\n            typed_config:\n              "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors\n          - name: envoy.filters.http.router\n',
      ],
    ],
    problems: [
      {
        path: `${egressHcm}.http_filters[1].name`,
        message:
          '"envoy.filters.http.cors" is not supported; revtun runs only envoy.filters.http.lua and envoy.filters.http.router',
        at: 'envoy.filters.http.cors',
      },
    ],
  },
  {
    name: 'a Lua filter on the rc:// listener',
    base: 'initiator',
    edits: [
      [
        '          - name: envoy.filters.http.router\n',
        '          - name: envoy.filters.http.lua\n            typed_config:\n              "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua\n              inline_code: "function envoy_on_request(h) end"\n          - name: envoy.filters.http.router\n',
      ],
    ],
    problems: [
      {
        path: `${initiatorHcm}.http_filters[0].name`,
        message:
          '"envoy.filters.http.lua" is not supported on an rc:// listener; revtun runs only envoy.filters.http.router',
        at: 'envoy.filters.http.lua',
      },
    ],
  },
  {
    name: 'an unknown listener field',
    base: 'initiator',
    edits: [
      [
        '  - name: reverse_conn_listener\n',
        '  - name: reverse_conn_listener\n    per_connection_buffer_limit_bytes: 32768\n',
      ],
    ],
    problems: [
      {
        path: 'static_resources.listeners[0].per_connection_buffer_limit_bytes',
        message:
          'is not supported; revtun reads only name, address, additional_addresses, filter_chains, listener_filters and listener_filters_timeout here',
        at: 'per_connection_buffer_limit_bytes',
      },
    ],
  },
  {
    name: 'an unknown top-level field',
    base: 'responder',
    edits: [['\nadmin:\n', '\noverload_manager: {}\nadmin:\n']],
    problems: [
      {
        path: 'overload_manager',
        message:
          'is not supported; revtun reads only node, admin, header_prefix, bootstrap_extensions, static_resources and layered_runtime here',
        at: 'overload_manager',
      },
    ],
  },
  {
    name: 'a runtime key other than the two the sandbox uses',
    base: 'responder',
    edits: [
      [
        '      envoy.reloadable_features.reverse_conn_force_local_reply: true\n',
        '      envoy.reloadable_features.reverse_conn_force_local_reply: true\n      envoy.reloadable_features.http2_use_oghttp2: false\n',
      ],
    ],
    problems: [
      {
        path: 'layered_runtime.layers[0].static_layer.envoy.reloadable_features.http2_use_oghttp2',
        message:
          'runtime key "envoy.reloadable_features.http2_use_oghttp2" is not supported; revtun accepts only re2.max_program_size.error_level and envoy.reloadable_features.reverse_conn_force_local_reply',
        at: 'envoy.reloadable_features.http2_use_oghttp2',
      },
    ],
  },
  {
    name: "the upstream extension's reporter_config",
    base: 'responder',
    edits: [
      [
        '    enable_detailed_stats: true\n',
        '    enable_detailed_stats: true\n    reporter_config: {}\n',
      ],
    ],
    problems: [
      {
        path: 'bootstrap_extensions[0].typed_config.reporter_config',
        message:
          'is not supported: revtun has no tunnel reporter; its admin server lists the tunnels',
        at: 'reporter_config',
      },
    ],
  },
  {
    name: 'jwt_validator on the reverse_tunnel filter',
    base: 'responder',
    edits: [
      [
        '          ping_interval: 2s\n',
        '          ping_interval: 2s\n          jwt_validator:\n            issuer: https://issuer.example\n',
      ],
    ],
    problems: [
      {
        path: `${responderFilter}.jwt_validator`,
        message: 'is not supported: JWT validation of handshakes comes with the security work',
        at: 'jwt_validator',
      },
    ],
  },
  {
    name: 'validation.emit_dynamic_metadata',
    base: 'responder',
    edits: [
      [
        '          ping_interval: 2s\n',
        '          ping_interval: 2s\n          validation:\n            node_id_format: "%REQ(x-expected-node)%"\n            emit_dynamic_metadata: true\n            dynamic_metadata_namespace: rt\n',
      ],
    ],
    problems: [
      {
        path: `${responderFilter}.validation.emit_dynamic_metadata`,
        message:
          'is not supported: revtun has no dynamic metadata; its lifecycle log carries the ids',
        at: 'emit_dynamic_metadata',
      },
      {
        path: `${responderFilter}.validation.dynamic_metadata_namespace`,
        message: 'is not supported: revtun has no dynamic metadata',
        at: 'dynamic_metadata_namespace',
      },
    ],
  },
  {
    name: 'enable_connection_limit without max_connections_per_node',
    base: 'responder',
    edits: [
      [
        '          ping_interval: 2s\n',
        '          ping_interval: 2s\n          enable_connection_limit: true\n',
      ],
    ],
    problems: [
      {
        path: `${responderFilter}.enable_connection_limit`,
        message:
          'enable_connection_limit with max_connections_per_node 0 (or unset) rejects every tunnel in Envoy; set max_connections_per_node on the upstream_socket_interface extension',
        at: 'enable_connection_limit',
      },
    ],
  },
  {
    name: 'a typed_config whose @type is not the extension’s',
    base: 'initiator',
    edits: [
      [
        'downstream_socket_interface.v3.DownstreamReverseConnectionSocketInterface',
        'downstream_socket_interface.v3.Downstream',
      ],
    ],
    problems: [
      {
        path: 'bootstrap_extensions[0].typed_config.@type',
        message:
          'must be type.googleapis.com/envoy.extensions.bootstrap.reverse_tunnel.downstream_socket_interface.v3.DownstreamReverseConnectionSocketInterface, not "type.googleapis.com/envoy.extensions.bootstrap.reverse_tunnel.downstream_socket_interface.v3.Downstream"',
        at: '>-\n      type.googleapis.com/envoy.extensions.bootstrap',
      },
    ],
  },
  {
    name: 'a reverse_connection cluster without lb_policy CLUSTER_PROVIDED',
    base: 'responder',
    edits: [['    lb_policy: CLUSTER_PROVIDED\n', '    lb_policy: ROUND_ROBIN\n']],
    problems: [
      {
        path: `${reverseCluster}.lb_policy`,
        message: 'must be CLUSTER_PROVIDED for an envoy.clusters.reverse_connection cluster',
        at: 'ROUND_ROBIN',
      },
    ],
  },
  {
    name: 'a host_id_format that is not %REQ(header)%',
    base: 'responder',
    edits: [['"%REQ(x-computed-host-id)%"', '"%DYNAMIC_METADATA(envoy.lb:host)%"']],
    problems: [
      {
        path: `${reverseCluster}.cluster_type.typed_config.host_id_format`,
        message:
          '"%DYNAMIC_METADATA(envoy.lb:host)%" is not supported: revtun takes the host id from request headers; write %REQ(header-name)% or %REQ(first-header?second-header)%',
        at: '"%DYNAMIC_METADATA(envoy.lb:host)%"',
      },
    ],
  },
  {
    name: 'an egress route to a cluster that is not a reverse_connection cluster',
    base: 'responder',
    edits: [
      [
        '                  cluster: reverse_connection_cluster\n',
        '                  cluster: local\n',
      ],
      [
        '  clusters:\n',
        '  clusters:\n  - name: local\n    load_assignment:\n      endpoints:\n      - lb_endpoints:\n        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 80 } } }\n',
      ],
    ],
    problems: [
      {
        path: `${egressHcm}.route_config.virtual_hosts[0].routes[0].route.cluster`,
        message:
          'cluster "local" is not an envoy.clusters.reverse_connection cluster; revtun\'s egress listeners route only through the tunnels',
        at: 'cluster: »local\n',
      },
    ],
  },
  {
    name: 'a reverse_connection cluster without HTTP/2 protocol options',
    base: 'responder',
    edits: [
      [
        '          # Right the moment, reverse connections are supported over HTTP/2 only.\n          http2_protocol_options: {}\n',
        '          http_protocol_options: {}\n',
      ],
    ],
    problems: [
      {
        path: `${reverseCluster}.typed_extension_protocol_options.envoy.extensions.upstreams.http.v3.HttpProtocolOptions.explicit_http_config.http_protocol_options`,
        message: 'is not supported: reverse tunnels carry HTTP/2 only',
        at: 'http_protocol_options: {}',
      },
      {
        path: `${reverseCluster}.typed_extension_protocol_options.envoy.extensions.upstreams.http.v3.HttpProtocolOptions.explicit_http_config`,
        message: 'needs http2_protocol_options: {} (reverse tunnels carry HTTP/2 only)',
        at: 'http_protocol_options: {}',
      },
    ],
  },
  {
    name: 'a virtual host with domains other than "*"',
    base: 'responder',
    edits: [['              - "*"\n', '              - "tunnel.example.com"\n']],
    problems: [
      {
        path: `${egressHcm}.route_config.virtual_hosts[0].domains`,
        message: 'must be ["*"]: revtun does not route by host name',
        at: '- "tunnel.example.com"',
      },
    ],
  },
  {
    name: "TLS on the responders' cluster",
    base: 'initiator',
    edits: [
      [
        '  - name: upstream-cluster\n',
        '  - name: upstream-cluster\n    transport_socket:\n      name: envoy.transport_sockets.tls\n',
      ],
    ],
    problems: [
      {
        path: 'static_resources.clusters[0].transport_socket',
        message:
          'is not supported: TLS towards responders and local services comes with the security work',
        at: 'transport_socket:',
      },
    ],
  },
  {
    name: 'a camelCase field name',
    base: 'initiator',
    edits: [
      [
        '    stat_prefix: "downstream_reverse_connection"',
        '    statPrefix: "downstream_reverse_connection"',
      ],
    ],
    problems: [
      {
        path: 'bootstrap_extensions[0].typed_config.statPrefix',
        message: "write stat_prefix: revtun reads Envoy's snake_case field names",
        at: 'statPrefix',
      },
    ],
  },
  {
    name: 'an access logger revtun cannot write to (on the admin server)',
    base: 'initiator',
    edits: [
      ['  - name: envoy.access_loggers.file\n', '  - name: envoy.access_loggers.open_telemetry\n'],
    ],
    problems: [
      {
        path: 'admin.access_log[0].name',
        message:
          '"envoy.access_loggers.open_telemetry" is not supported; revtun writes only to envoy.access_loggers.file, envoy.access_loggers.stdout or envoy.access_loggers.stderr',
        at: 'envoy.access_loggers.open_telemetry',
      },
    ],
  },
  {
    name: 'tenant isolation without tenant_id_format on the reverse_connection cluster',
    base: 'responder',
    edits: [
      [
        '    enable_detailed_stats: true\n',
        '    enable_detailed_stats: true\n    enable_tenant_isolation: true\n',
      ],
    ],
    problems: [
      {
        path: `${reverseCluster}.cluster_type.typed_config`,
        message:
          'needs tenant_id_format (e.g. %REQ(x-tenant-id)%) with enable_tenant_isolation: Envoy does not start without it',
        at: '"@type": >-\n          type.googleapis.com/envoy.extensions.clusters',
      },
    ],
  },
  {
    name: 'a ping interval below what revtun allows (a schema problem, placed at the Envoy field)',
    base: 'responder',
    edits: [['          ping_interval: 2s\n', '          ping_interval: 0.05s\n']],
    problems: [
      {
        path: `${responderFilter}.ping_interval`,
        message: "must be between 100 ms and 300000 ms (revtun's tunnel_listener.ping_interval)",
        at: '0.05s',
      },
    ],
  },
  {
    name: 'a node id revtun refuses (a schema problem, placed at the rc:// address)',
    base: 'initiator',
    edits: [['rc://downstream-node:', 'rc://downstream/node:']],
    problems: [
      {
        path: 'static_resources.listeners[0].address.socket_address.address',
        message: "must be 1-128 characters of [A-Za-z0-9._-] (revtun's node_id)",
        at: '"rc://downstream/node:',
      },
    ],
  },
];

describe('every field revtun does not support is a problem with its path and line:col', () => {
  for (const { name, base, edits, problems } of unsupported) {
    it(name, () => {
      let text = base === 'initiator' ? sandboxInitiator : sandboxResponder;
      for (const [anchor, replacement] of edits) text = edit(text, anchor, replacement);
      assertProblems(text, problems);
    });
  }

  it('reports all problems at once, in file order, each as file:line:col: path: message', () => {
    let text = edit(
      sandboxInitiator,
      '  - name: reverse_conn_listener\n',
      '  - name: reverse_conn_listener\n    per_connection_buffer_limit_bytes: 32768\n',
    );
    text = edit(text, '\nadmin:\n', '\nstats_flush_interval: 5s\nadmin:\n');
    text = edit(
      text,
      '    stat_prefix: "downstream_reverse_connection"',
      '    stat_prefix: "downstream_reverse_connection"\n    max_tunnel_setup_time: 30s',
    );
    assert.throws(
      () => translateEnvoyBootstrap(text, 'initiator.yaml'),
      (error: unknown) => {
        assert.ok(error instanceof ConfigError);
        const at = (marker: string) => {
          const { line, column } = place(text, marker);
          return `initiator.yaml:${line}:${column}`;
        };
        assert.equal(
          error.message,
          [
            'invalid configuration (3 problems):',
            `  ${at('max_tunnel_setup_time')}: bootstrap_extensions[0].typed_config.max_tunnel_setup_time: is not supported: revtun keeps the tunnel_setup_time histogram but no threshold (tunnel_setup_time_exceeded)`,
            `  ${at('per_connection_buffer_limit_bytes')}: static_resources.listeners[0].per_connection_buffer_limit_bytes: is not supported; revtun reads only name, address, additional_addresses, filter_chains, listener_filters and listener_filters_timeout here`,
            `  ${at('stats_flush_interval')}: stats_flush_interval: is not supported; revtun reads only node, admin, header_prefix, bootstrap_extensions, static_resources and layered_runtime here`,
          ].join('\n'),
        );
        return true;
      },
    );
  });

  it('reports a YAML syntax error at its place', () => {
    const text = 'node:\n  id: [unclosed\n';
    assert.throws(
      () => translateEnvoyBootstrap(text, 'broken.yaml'),
      (error: unknown) =>
        error instanceof ConfigError && /^ {2}broken\.yaml:\d+:\d+: /m.test(error.message),
    );
  });

  it('says what a bootstrap needs when it has no reverse-tunnel role', () => {
    assertProblems('node:\n  id: plain-envoy\n', [
      {
        path: '',
        message:
          'no reverse-tunnel role: an initiator needs the bootstrap extension envoy.bootstrap.reverse_tunnel.downstream_socket_interface and an rc:// listener; a responder needs envoy.bootstrap.reverse_tunnel.upstream_socket_interface and a listener with envoy.filters.network.reverse_tunnel',
        at: 'node:',
      },
    ]);
  });
});

describe('supported fields map to revtun settings', () => {
  it('maps the downstream extension and the reverse_tunnel filter field by field', () => {
    let initiator = edit(
      sandboxInitiator,
      '    stat_prefix: "downstream_reverse_connection"\n',
      [
        '    stat_prefix: "downstream_reverse_connection"',
        '    enable_detailed_stats: true',
        '    max_reconnect_backoff: 5s',
        '    http_handshake:',
        '      request_path: /custom/reverse',
        '      use_http_upgrade: true',
        '      additional_headers:',
        '      - header: { key: Authorization, value: "Bearer abc" }',
        '    access_log:',
        '    - name: envoy.access_loggers.file',
        '      typed_config:',
        '        "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog',
        '        path: /var/log/revtun/initiator.jsonl',
        '',
      ].join('\n'),
    );
    initiator = edit(initiator, 'node:\n', 'header_prefix: x-custom\nnode:\n');
    const { inputs } = translateEnvoyBootstrap(initiator);
    assert.deepEqual(inputs.initiator, {
      node_id: 'downstream-node',
      cluster_id: 'downstream-cluster',
      tenant_id: 'downstream-tenant',
      stat_prefix: 'downstream_reverse_connection',
      enable_detailed_stats: true,
      max_reconnect_backoff: '5s',
      handshake: {
        header_prefix: 'x-custom',
        request_path: '/custom/reverse',
        use_http_upgrade: true,
        headers: [{ name: 'authorization', value: 'Bearer abc' }],
      },
      lifecycle_log: { path: '/var/log/revtun/initiator.jsonl' },
      admin: { address: '0.0.0.0:8888', access_log: { path: '/dev/stdout' } },
      remote_clusters: [
        { name: 'upstream-cluster', hosts: ['upstream-envoy:9000'], tunnels_per_host: 1 },
      ],
      local_routes: [
        {
          prefix: '/downstream_service',
          target: 'http://downstream-service:80',
          connect_timeout: '30s',
        },
      ],
    });
  });

  it('maps the upstream extension and the reverse_tunnel filter field by field', () => {
    let responder = edit(
      sandboxResponder,
      '    enable_detailed_stats: true\n',
      [
        '    enable_detailed_stats: true',
        '    ping_failure_threshold: 5',
        '    max_connections_per_node: 2',
        '    access_log:',
        '    - name: envoy.access_loggers.stderr',
        '      typed_config:',
        '        "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog',
        '',
      ].join('\n'),
    );
    responder = edit(
      responder,
      '          ping_interval: 2s\n',
      [
        '          ping_interval: 3s',
        '          auto_close_connections: true',
        '          request_path: /custom/reverse',
        '          request_method: POST',
        '          required_cluster_name: upstream-cluster',
        '          use_http_upgrade: true',
        '          skip_rebalancing: true',
        '          enable_connection_limit: true',
        '          handshake_timeout: 5s',
        '          validation:',
        '            node_id_format: "%REQ(x-expected-node)%"',
        '            cluster_id_format: downstream-cluster',
        '            tenant_id_format: ""',
        '',
      ].join('\n'),
    );
    const { inputs } = translateEnvoyBootstrap(responder);
    assert.deepEqual(inputs.responder?.tunnel_listener, {
      address: '0.0.0.0:9000',
      ping_failure_threshold: 5,
      ping_interval: '3s',
      request_path: '/custom/reverse',
      request_method: 'POST',
      required_cluster_name: 'upstream-cluster',
      use_http_upgrade: true,
      handshake_timeout: '5s',
      max_tunnels_per_node: 2,
      validation: { node_id: '%REQ(x-expected-node)%', cluster_id: 'downstream-cluster' },
    });
    assert.deepEqual(inputs.responder?.lifecycle_log, { path: '/dev/stderr' });
  });

  it('reads METHOD_UNSPECIFIED as GET, and a Lua script from default_source_code', () => {
    let responder = edit(
      sandboxResponder,
      '          ping_interval: 2s\n',
      '          ping_interval: 2s\n          request_method: METHOD_UNSPECIFIED\n',
    );
    const start = responder.indexOf('              inline_code: |\n');
    const end = responder.indexOf('          - name: envoy.filters.http.router');
    responder =
      responder.slice(0, start) +
      `              default_source_code:\n                inline_string: ${JSON.stringify(sandboxLua)}\n` +
      responder.slice(end);
    const { inputs } = translateEnvoyBootstrap(responder);
    assert.equal(inputs.responder?.tunnel_listener.request_method, 'GET');
    assert.equal(inputs.responder?.egress_listeners[0]?.lua?.inline_code, sandboxLua);
  });
});

describe("the Envoy docs' example configs (test/fixtures/envoy/docs, copied unchanged)", () => {
  const logFormat =
    "is not supported: revtun writes each lifecycle event as one JSON line with Envoy's field names (event, node_id, cluster_id, tenant_id, …); remove log_format";

  for (const name of ['initiator-envoy-access-log.yaml', 'responder-envoy-access-log.yaml']) {
    it(`${name}: access_log on the bootstrap extension fails only on its log_format`, () => {
      const text = fixture(`docs/${name}`);
      assertProblems(text, [
        {
          path: 'bootstrap_extensions[0].typed_config.access_log[0].typed_config.log_format',
          message: logFormat,
          at: 'log_format',
        },
      ]);
    });

    it(`${name} without the log_format writes the lifecycle log to stdout`, () => {
      const text = fixture(`docs/${name}`).replace(
        /\n {8}log_format:\n {10}text_format_source:\n {12}inline_string: >-\n( {14}.*\n)+/,
        '\n',
      );
      const role = name.startsWith('initiator') ? 'initiator' : 'responder';
      const translation = translateEnvoyBootstrap(text, name);
      assert.deepEqual(translation.inputs[role]?.lifecycle_log, { path: '/dev/stdout' });
    });
  }

  it('responder-envoy-access-log.yaml accepts the reverse_tunnel_lifecycle upstream filter', () => {
    const text = fixture('docs/responder-envoy-access-log.yaml').replace(
      /\n {8}log_format:\n {10}text_format_source:\n {12}inline_string: >-\n( {14}.*\n)+/,
      '\n',
    );
    assert.ok(text.includes('envoy.filters.upstream_network.reverse_tunnel_lifecycle'));
    assert.ok(translateEnvoyBootstrap(text).responder);
  });

  it('responder-envoy-tenant-isolation.yaml fails only on enable_tenant_isolation on the filter', () => {
    const text = fixture('docs/responder-envoy-tenant-isolation.yaml');
    assertProblems(text, [
      {
        path: `${responderFilter}.enable_tenant_isolation`,
        message:
          "is not a field of envoy.filters.network.reverse_tunnel in Envoy's API (an older doc example put it here): set enable_tenant_isolation on the envoy.bootstrap.reverse_tunnel.upstream_socket_interface bootstrap extension",
        at: 'enable_tenant_isolation',
      },
    ]);
  });

  it('an egress connection manager with codec_type HTTP1 gets an egress listener without HTTP/2', () => {
    const text = sandboxResponder.replace(
      /( +)stat_prefix: egress_http\n/,
      (line, indent: string) => `${line}${indent}codec_type: HTTP1\n`,
    );
    assert.notEqual(text, sandboxResponder);
    const translation = translateEnvoyBootstrap(text);
    assert.deepEqual(translation.inputs.responder?.egress_listeners[0]?.http2, { enabled: false });
    assert.equal(translation.responder?.egress_listeners[0]?.http2.enabled, false);
  });

  it('the tenant-isolation responder the docs describe (constructed) loads with tenant headers', () => {
    const translation = translateEnvoyBootstrap(
      fixture('constructed/responder-envoy-tenant-isolation.yaml'),
    );
    assert.deepEqual(translation.inputs.responder, {
      stat_prefix: 'upstream_reverse_connection',
      enable_tenant_isolation: true,
      tunnel_listener: { address: '0.0.0.0:9000', ping_interval: '2s' },
      egress_listeners: [
        {
          address: '0.0.0.0:8085',
          no_host_id_status: 503,
          forwarded_headers: { mode: 'none', via: false },
          stat_prefix: 'egress_http',
          host_id_headers: ['x-node-id'],
          tenant_id_headers: ['x-tenant-id'],
          routes: [{ prefix: '/downstream_service', cluster: 'reverse_connection_cluster' }],
        },
      ],
    });
    assert.equal(translation.responder?.enable_tenant_isolation, true);
  });
});

describe("an egress HTTP connection manager's access_log", () => {
  const withLogs = (lines: readonly string[]) =>
    edit(
      sandboxResponder,
      '          stat_prefix: egress_http\n',
      ['          stat_prefix: egress_http', '          access_log:', ...lines, ''].join('\n'),
    );
  const fileLogger = [
    '          - name: envoy.access_loggers.file',
    '            typed_config:',
    '              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog',
    '              path: /var/log/revtun/egress.log',
  ];

  it("becomes the egress listener's access_log: Envoy's default text, an inline text format, JSON", () => {
    const text = withLogs([
      ...fileLogger,
      '          - name: envoy.access_loggers.stdout',
      '            typed_config:',
      '              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog',
      '              log_format:',
      '                text_format_source:',
      '                  inline_string: "%REQ(:METHOD)% %RESPONSE_CODE% %UPSTREAM_HOST%\\n"',
      '          - name: envoy.access_loggers.stderr',
      '            typed_config:',
      '              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog',
      '              log_format:',
      '                json_format: { status: "%RESPONSE_CODE%" }',
    ]);
    const { inputs } = translateEnvoyBootstrap(text, 'responder-envoy.yaml');
    assert.deepEqual(inputs.responder?.egress_listeners?.[0]?.access_log, [
      { path: '/var/log/revtun/egress.log', format: 'text' },
      {
        path: '/dev/stdout',
        format: 'text',
        text_format: '%REQ(:METHOD)% %RESPONSE_CODE% %UPSTREAM_HOST%',
      },
      { path: '/dev/stderr', format: 'json' },
    ]);
  });

  it('reports an operator revtun does not know at its place in the bootstrap', () => {
    const text = withLogs([
      '          - name: envoy.access_loggers.stdout',
      '            typed_config:',
      '              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog',
      '              log_format:',
      '                text_format_source:',
      '                  inline_string: "%UPSTREAM_CLUSTER%"',
    ]);
    const problems = problemsOf(text);
    assert.equal(problems.length, 1, JSON.stringify(problems));
    assert.match(problems[0]!.message, /unknown operator %UPSTREAM_CLUSTER%/);
  });

  it('is refused on an rc:// listener, whose requests revtun does not log', () => {
    const text = edit(
      sandboxInitiator,
      '          stat_prefix: reverse_conn_listener\n',
      [
        '          stat_prefix: reverse_conn_listener',
        '          access_log:',
        ...fileLogger,
        '',
      ].join('\n'),
    );
    const problems = problemsOf(text);
    assert.equal(problems.length, 1, JSON.stringify(problems));
    assert.match(problems[0]!.message, /not supported on an rc:\/\/ listener/);
  });
});
