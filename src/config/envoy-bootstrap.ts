/**
 * An Envoy bootstrap (YAML) → revtun configs: the initiator and/or the responder it describes,
 * by which reverse-tunnel extensions and filters it has. revtun reads the subset of Envoy's
 * fields that reverse tunnels use (protocol reference §11); every other field is a problem that
 * names its path and file:line:col, all of them reported at once, because a field skipped in
 * silence would make revtun run something other than what the file says. The translated inputs
 * then go through revtun's own schema, whose problems are reported against the Envoy field they
 * came from.
 *
 * Where Envoy's docs and code disagree this follows the code, as the reference does (e.g. tenant
 * isolation is a field of the upstream bootstrap extension, not of the reverse_tunnel filter).
 */
import { formatHostPort } from '../shared/address.ts';
import { readClusters, type Cluster } from './envoy-clusters.ts';
import { extension } from './envoy-extensions.ts';
import {
  readListener,
  type EgressListener,
  type Listener,
  type RcListener,
  type TunnelListener,
} from './envoy-listeners.ts';
import {
  Field,
  joinWords,
  optional,
  Problems,
  readAccessLog,
  readSocketAddress,
  type Fields,
  type Mutable,
} from './envoy-reader.ts';
import {
  ConfigError,
  formatPath,
  readConfigFile,
  readYaml,
  validateInitiatorConfig,
  validateResponderConfig,
  type ConfigProblem,
  type KeyPath,
  type Role,
  type YamlSource,
} from './load.ts';
import type {
  InitiatorConfig,
  InitiatorConfigInput,
  ResponderConfig,
  ResponderConfigInput,
} from './schema.ts';

export interface EnvoyBootstrapTranslation {
  /** The initiator, when the bootstrap has an rc:// listener. */
  readonly initiator?: InitiatorConfig;
  /** The responder, when it has a reverse_tunnel listener. */
  readonly responder?: ResponderConfig;
  /** What went into revtun's schema, written as revtun's YAML would be (durations as text). */
  readonly inputs: {
    readonly initiator?: InitiatorConfigInput;
    readonly responder?: ResponderConfigInput;
  };
}

/** config.core.v3.RequestMethod, in enum order. */
const requestMethods = [
  'METHOD_UNSPECIFIED',
  'GET',
  'HEAD',
  'POST',
  'PUT',
  'DELETE',
  'CONNECT',
  'OPTIONS',
  'TRACE',
  'PATCH',
] as const;

/** Runtime keys revtun accepts, with why they change nothing in revtun. */
const runtimeKeys: Record<string, { kind: 'number' | 'boolean' }> = {
  // RE2 program size limits: revtun has no RE2 regexes in its configuration.
  're2.max_program_size.error_level': { kind: 'number' },
  // revtun always answers a request with no tunnel itself (503), which is what this forces.
  'envoy.reloadable_features.reverse_conn_force_local_reply': { kind: 'boolean' },
};

/** Reads a whole bootstrap; the roles come out as schema inputs, with where each value came from. */
class Translator {
  readonly problems: Problems;
  /** revtun key path (formatted) → the Envoy field it came from, per role. */
  readonly origins: Record<Role, Map<string, KeyPath>> = {
    initiator: new Map(),
    responder: new Map(),
  };
  readonly #usedClusters = new Set<string>();
  /** Clusters already reported for a problem that every route using them would repeat. */
  readonly #reported = new Set<Cluster>();

  constructor(problems: Problems) {
    this.problems = problems;
  }

  #note(role: Role, revtunPath: string, field: Field): void {
    this.origins[role].set(revtunPath, field.path);
  }

  /** The cluster a route or an rc:// address names; undefined (and a problem) if there is none. */
  #useCluster(
    clusters: ReadonlyMap<string, Cluster | undefined>,
    name: string,
    field: Field,
  ): Cluster | undefined {
    this.#usedClusters.add(name);
    // A cluster that is there but could not be read has its own problems already.
    if (!clusters.has(name)) field.fail(`cluster "${name}" is not in static_resources.clusters`);
    return clusters.get(name);
  }

  /** Sets `target[key]` to a value read from `field` (if it was set), noting where it came from. */
  #set<T extends object, K extends keyof T & string>(
    role: Role,
    at: string,
    target: T,
    key: K,
    value: T[K] | undefined,
    field: Field,
  ): void {
    if (value === undefined) return;
    target[key] = value;
    this.#note(role, at === '' ? key : `${at}.${key}`, field);
  }

  translate(root: Field): EnvoyBootstrapTranslation['inputs'] {
    const bootstrap = root.object([
      'node',
      'admin',
      'header_prefix',
      'bootstrap_extensions',
      'static_resources',
      'layered_runtime',
    ]);
    if (bootstrap === undefined) return {};
    this.#node(bootstrap.get('node'));
    const headerPrefixField = bootstrap.get('header_prefix');
    const headerPrefix = headerPrefixField.string();
    const adminField = bootstrap.get('admin');
    const admin = this.#admin(adminField);
    this.#runtime(bootstrap.get('layered_runtime'));
    const extensions = this.#extensions(bootstrap.get('bootstrap_extensions'));
    const resources = bootstrap.get('static_resources').object(['listeners', 'clusters']);
    bootstrap.done();
    if (resources === undefined) return {};
    const clusters = readClusters(resources.get('clusters'));
    const listeners = (resources.get('listeners').list() ?? []).map((listener) =>
      readListener(listener),
    );
    resources.done();

    const rcListeners = listeners.filter(
      (l): l is Listener & { kind: 'initiator' } => l?.kind === 'initiator',
    );
    const tunnelListeners = listeners.filter(
      (l): l is Listener & { kind: 'tunnel' } => l?.kind === 'tunnel',
    );
    const egressListeners = listeners.filter(
      (l): l is Listener & { kind: 'egress' } => l?.kind === 'egress',
    );

    const inputs: Mutable<EnvoyBootstrapTranslation['inputs']> = {};
    const hasInitiator = rcListeners.length > 0 || extensions.downstream !== undefined;
    const hasResponder = tunnelListeners.length > 0 || extensions.upstream !== undefined;
    // revtun runs each role with its own admin server; one address cannot serve two.
    if (hasInitiator && hasResponder && admin !== undefined) {
      adminField.fail(
        'one admin server cannot serve both roles: revtun runs the initiator and the responder each with its own admin server; split the bootstrap in two',
      );
    }
    const adminRole: Role | undefined =
      hasInitiator && hasResponder
        ? undefined
        : hasResponder
          ? 'responder'
          : hasInitiator
            ? 'initiator'
            : undefined;
    if (hasInitiator) {
      const initiator = this.#initiator({
        rcListeners,
        extension: extensions.downstream,
        clusters,
        ...(adminRole === 'initiator' ? { admin } : {}),
        headerPrefix:
          headerPrefix === undefined ? undefined : { text: headerPrefix, field: headerPrefixField },
        adminField,
      });
      if (initiator !== undefined) inputs.initiator = initiator;
    }
    if (hasResponder) {
      const responder = this.#responder({
        tunnelListeners,
        egressListeners,
        extension: extensions.upstream,
        clusters,
        ...(adminRole === 'responder' ? { admin } : {}),
        headerPrefix:
          headerPrefix === undefined ? undefined : { text: headerPrefix, field: headerPrefixField },
        adminField,
      });
      if (responder !== undefined) inputs.responder = responder;
    } else {
      for (const listener of egressListeners) {
        listener.field.fail(
          `an egress listener (routes to an ${extension.reverseConnectionCluster.name} cluster) needs a responder: the bootstrap extension ${extension.upstream.name} and a listener with ${extension.reverseTunnel.name}`,
        );
      }
    }
    if (!hasInitiator && !hasResponder) {
      root.fail(
        `no reverse-tunnel role: an initiator needs the bootstrap extension ${extension.downstream.name} and an rc:// listener; a responder needs ${extension.upstream.name} and a listener with ${extension.reverseTunnel.name}`,
      );
    }
    // Only in an otherwise sound file: a reference that had a problem may be what names it.
    for (const cluster of this.problems.list.length === 0 ? clusters.values() : []) {
      if (cluster !== undefined && !this.#usedClusters.has(cluster.name)) {
        cluster.field.fail(
          `cluster "${cluster.name}" is used by no route and no rc:// address; revtun runs no unused clusters: remove it`,
        );
      }
    }
    return inputs;
  }

  #node(field: Field): void {
    // Envoy's node identity; a reverse tunnel's identity comes from the rc:// address.
    const node = field.object(['id', 'cluster']);
    node?.get('id').string();
    node?.get('cluster').string();
    node?.done();
  }

  #admin(field: Field): { address: string; access_log?: { path: string } } | undefined {
    if (!field.present) return undefined;
    const admin = field.object(['address', 'access_log']);
    if (admin === undefined) return undefined;
    const logsField = admin.get('access_log');
    const logs = logsField.list() ?? [];
    if (logs.length > 1)
      logsField.fail('has more than one entry; revtun writes one admin access log');
    const path = logs[0] === undefined ? undefined : readAccessLog(logs[0], 'admin');
    const address = readSocketAddress(admin.get('address'));
    admin.done();
    if (address === undefined) return undefined;
    return { address: address.text, ...(path === undefined ? {} : { access_log: { path } }) };
  }

  #runtime(field: Field): void {
    if (!field.present) return;
    const runtime = field.object(['layers']);
    for (const layerField of runtime?.get('layers').list() ?? []) {
      const layer = layerField.object(['name', 'static_layer']);
      if (layer === undefined) continue;
      layer.get('name').string();
      for (const kind of ['rtds_layer', 'disk_layer', 'admin_layer']) {
        layer.reject(kind, 'is not supported: revtun reads only static_layer runtime keys');
      }
      const staticLayer = layer.get('static_layer').object([]);
      if (staticLayer !== undefined) this.#runtimeKeys(staticLayer, '');
      layer.done();
    }
    runtime?.done();
  }

  /** Static layer keys, flattened as Envoy flattens nested mappings (`a: {b: 1}` is `a.b`). */
  #runtimeKeys(layer: Fields, prefix: string): void {
    for (const [key, value] of layer.entries()) {
      const name = `${prefix}${key}`;
      const known = runtimeKeys[name];
      if (known !== undefined) {
        if (known.kind === 'number' && typeof value.value !== 'number')
          value.fail('must be a number');
        if (known.kind === 'boolean') value.boolean();
        continue;
      }
      if (typeof value.value === 'object' && value.value !== null && !Array.isArray(value.value)) {
        const nested = value.object([]);
        if (nested !== undefined) this.#runtimeKeys(nested, `${name}.`);
        continue;
      }
      value.fail(
        `runtime key "${name}" is not supported; revtun accepts only ${joinWords(Object.keys(runtimeKeys))}`,
        { key: true },
      );
    }
  }

  /**
   * The reverse-tunnel bootstrap extensions: each one's typed_config, or null when it is there but
   * its typed_config had a problem (so that nothing also says it is missing).
   */
  #extensions(field: Field): { downstream?: Fields | null; upstream?: Fields | null } {
    const found: { downstream?: Fields | null; upstream?: Fields | null } = {};
    for (const item of field.list() ?? []) {
      const entry = item.object(['name', 'typed_config']);
      if (entry === undefined) continue;
      const nameField = entry.get('name');
      const name = nameField.string();
      const role =
        name === extension.downstream.name
          ? 'downstream'
          : name === extension.upstream.name
            ? 'upstream'
            : undefined;
      if (role === undefined) {
        nameField.fail(
          `"${name ?? ''}" is not supported; revtun runs only ${extension.downstream.name} and ${extension.upstream.name}`,
        );
        entry.ignore('typed_config');
        entry.done();
        continue;
      }
      if (found[role] !== undefined) {
        nameField.fail(`${name} is configured twice`);
        entry.ignore('typed_config');
        entry.done();
        continue;
      }
      const config =
        role === 'downstream'
          ? entry
              .get('typed_config')
              .typedConfig(extension.downstream.type, [
                'stat_prefix',
                'enable_detailed_stats',
                'http_handshake',
                'max_reconnect_backoff',
                'access_log',
              ])
          : entry
              .get('typed_config')
              .typedConfig(extension.upstream.type, [
                'stat_prefix',
                'enable_detailed_stats',
                'ping_failure_threshold',
                'enable_tenant_isolation',
                'max_connections_per_node',
                'access_log',
              ]);
      entry.done();
      found[role] = config ?? null;
    }
    return found;
  }

  #lifecycleLog(
    config: Fields | undefined,
    role: Role,
    target: { lifecycle_log?: { path: string } | undefined },
  ): void {
    const logs = config?.get('access_log');
    const list = logs?.list() ?? [];
    for (const extra of list.slice(1))
      extra.fail('is not supported: revtun writes one lifecycle log');
    const first = list[0];
    if (first === undefined) return;
    const path = readAccessLog(first);
    if (path !== undefined) {
      target.lifecycle_log = { path };
      this.#note(role, 'lifecycle_log.path', first);
    }
  }

  #initiator(options: {
    rcListeners: ReadonlyArray<RcListener>;
    extension: Fields | null | undefined;
    clusters: ReadonlyMap<string, Cluster | undefined>;
    admin?: { address: string; access_log?: { path: string } } | undefined;
    adminField: Field;
    headerPrefix: { text: string; field: Field } | undefined;
  }): InitiatorConfigInput | undefined {
    const { rcListeners, clusters } = options;
    const config = options.extension ?? undefined;
    const [listener, ...others] = rcListeners;
    for (const other of others) {
      other.field.fail(
        'revtun runs one rc:// listener; add more remote clusters to its additional_addresses',
      );
    }
    if (options.extension === undefined) {
      listener?.field.fail(
        `an rc:// listener needs the bootstrap extension ${extension.downstream.name}`,
      );
    }
    const result: Partial<Mutable<InitiatorConfigInput>> = {};
    if (config !== undefined) {
      const statPrefix = config.get('stat_prefix');
      this.#set('initiator', '', result, 'stat_prefix', statPrefix.string(), statPrefix);
      const detailed = config.get('enable_detailed_stats');
      this.#set('initiator', '', result, 'enable_detailed_stats', detailed.boolean(), detailed);
      const backoff = config.get('max_reconnect_backoff');
      this.#set('initiator', '', result, 'max_reconnect_backoff', backoff.duration(), backoff);
      const handshake = this.#handshake(config.get('http_handshake'), options.headerPrefix);
      if (handshake !== undefined) result.handshake = handshake;
      this.#lifecycleLog(config, 'initiator', result);
      config.reject(
        'max_tunnel_setup_time',
        'is not supported: revtun keeps the tunnel_setup_time histogram but no threshold (tunnel_setup_time_exceeded)',
      );
      config.done();
    } else if (options.headerPrefix !== undefined) {
      result.handshake = { header_prefix: options.headerPrefix.text };
    }
    if (options.admin !== undefined) {
      result.admin = options.admin;
      this.#note('initiator', 'admin', options.adminField);
    }
    if (listener === undefined) {
      config?.field.fail(
        `${extension.downstream.name} is configured but no listener has an rc:// address`,
      );
      return undefined;
    }
    const [first] = listener.addresses;
    if (first === undefined) return undefined;
    const identity = first.address.identity;
    result.node_id = identity.nodeId;
    result.cluster_id = identity.clusterId;
    result.tenant_id = identity.tenantId;
    for (const key of ['node_id', 'cluster_id', 'tenant_id'])
      this.#note('initiator', key, first.field);
    const remoteClusters: Mutable<InitiatorConfigInput['remote_clusters']> = [];
    for (const { address, field } of listener.addresses) {
      const same = address.identity;
      if (
        same.nodeId !== identity.nodeId ||
        same.clusterId !== identity.clusterId ||
        same.tenantId !== identity.tenantId
      ) {
        field.fail(
          `every rc:// address of the listener must carry the same identity: this one has ${same.nodeId}:${same.clusterId}:${same.tenantId}, the first ${identity.nodeId}:${identity.clusterId}:${identity.tenantId}`,
        );
        continue;
      }
      const cluster = this.#useCluster(clusters, address.remoteCluster, field);
      if (cluster === undefined) continue;
      if (cluster.kind !== 'endpoints') {
        field.fail(
          `remote cluster "${address.remoteCluster}" must list the responders' endpoints, not be an ${extension.reverseConnectionCluster.name} cluster`,
        );
        continue;
      }
      const index = remoteClusters.length;
      remoteClusters.push({
        name: address.remoteCluster,
        hosts: cluster.endpoints.map((endpoint) => formatHostPort(endpoint)),
        tunnels_per_host: address.connectionCount,
      });
      this.#note('initiator', `remote_clusters[${index}]`, field);
      this.#note('initiator', `remote_clusters[${index}].name`, field);
      this.#note('initiator', `remote_clusters[${index}].tunnels_per_host`, field);
      cluster.endpoints.forEach((endpoint, hostIndex) =>
        this.#note('initiator', `remote_clusters[${index}].hosts[${hostIndex}]`, endpoint.field),
      );
    }
    result.remote_clusters = remoteClusters;
    this.#note('initiator', 'remote_clusters', listener.field);
    const localRoutes: Mutable<InitiatorConfigInput['local_routes']> = [];
    for (const route of listener.hcm.routes) {
      const cluster = this.#useCluster(clusters, route.cluster, route.clusterField);
      if (cluster === undefined) continue;
      if (cluster.kind !== 'endpoints') {
        route.clusterField.fail(
          `cluster "${route.cluster}" is an ${extension.reverseConnectionCluster.name} cluster; an rc:// listener routes to local services`,
        );
        continue;
      }
      const [endpoint, ...more] = cluster.endpoints;
      if (endpoint === undefined) continue;
      for (const extra of more) {
        extra.field.fail(
          `a local service's cluster has one endpoint in revtun (load balancing over several comes later)`,
        );
      }
      const index = localRoutes.length;
      localRoutes.push({
        ...route.match,
        target: `http://${formatHostPort(endpoint)}`,
        ...optional('connect_timeout', cluster.connectTimeout?.text),
      });
      this.#note('initiator', `local_routes[${index}]`, route.field);
      this.#note(
        'initiator',
        `local_routes[${index}].${'prefix' in route.match ? 'prefix' : 'path'}`,
        route.field,
      );
      this.#note('initiator', `local_routes[${index}].target`, endpoint.field);
      if (cluster.connectTimeout !== undefined) {
        this.#note(
          'initiator',
          `local_routes[${index}].connect_timeout`,
          cluster.connectTimeout.field,
        );
      }
    }
    result.local_routes = localRoutes;
    this.#note('initiator', 'local_routes', listener.field);
    return result as InitiatorConfigInput;
  }

  #handshake(
    field: Field,
    headerPrefix: { text: string; field: Field } | undefined,
  ): NonNullable<InitiatorConfigInput['handshake']> | undefined {
    const result: Mutable<NonNullable<InitiatorConfigInput['handshake']>> = {};
    if (headerPrefix !== undefined) {
      result.header_prefix = headerPrefix.text;
      this.#note('initiator', 'handshake.header_prefix', headerPrefix.field);
    }
    const config = field.object(['request_path', 'additional_headers', 'use_http_upgrade']);
    if (config !== undefined) {
      const path = config.get('request_path');
      this.#set('initiator', 'handshake', result, 'request_path', path.string(), path);
      const upgrade = config.get('use_http_upgrade');
      this.#set('initiator', 'handshake', result, 'use_http_upgrade', upgrade.boolean(), upgrade);
      const headers: Array<{ name: string; value: string }> = [];
      for (const item of config.get('additional_headers').list() ?? []) {
        const option = item.object(['header']);
        const header = option?.get('header').object(['key', 'value']);
        for (const key of ['append_action', 'keep_empty_value', 'append']) {
          option?.reject(
            key,
            'is not supported: handshake headers are added once, to a fresh request',
          );
        }
        header?.reject('raw_value', 'is not supported: write the value as text in value');
        const key = header?.get('key').string();
        const value = header?.get('value').string();
        header?.done();
        option?.done();
        if (key === undefined || value === undefined) {
          if (header !== undefined) header.field.fail('needs key and value');
          continue;
        }
        this.#note('initiator', `handshake.headers[${headers.length}]`, item);
        headers.push({ name: key.toLowerCase(), value });
      }
      if (headers.length > 0) result.headers = headers;
      config.reject(
        'formatters',
        "is not supported: a header revtun reads from a file at every dial is value_file in revtun's own config",
      );
      config.done();
    }
    return Object.keys(result).length > 0 ? result : undefined;
  }

  #responder(options: {
    tunnelListeners: ReadonlyArray<TunnelListener>;
    egressListeners: ReadonlyArray<EgressListener>;
    extension: Fields | null | undefined;
    clusters: ReadonlyMap<string, Cluster | undefined>;
    admin?: { address: string; access_log?: { path: string } } | undefined;
    adminField: Field;
    headerPrefix: { text: string; field: Field } | undefined;
  }): ResponderConfigInput | undefined {
    const { clusters } = options;
    const config = options.extension ?? undefined;
    const [tunnel, ...others] = options.tunnelListeners;
    for (const other of others) {
      other.field.fail(`revtun runs one listener with ${extension.reverseTunnel.name}`);
    }
    if (options.extension === undefined) {
      tunnel?.field.fail(
        `a listener with ${extension.reverseTunnel.name} needs the bootstrap extension ${extension.upstream.name}`,
      );
    }
    const result: Partial<Mutable<ResponderConfigInput>> = {};
    let isolation = false;
    let maxConnections: { value: number; field: Field } | undefined;
    let pingFailureThreshold: { value: number; field: Field } | undefined;
    if (config !== undefined) {
      const statPrefix = config.get('stat_prefix');
      this.#set('responder', '', result, 'stat_prefix', statPrefix.string(), statPrefix);
      // The same switch as Envoy's; unset, revtun keeps its default (true, see the schema).
      const detailed = config.get('enable_detailed_stats');
      this.#set('responder', '', result, 'enable_detailed_stats', detailed.boolean(), detailed);
      const isolationField = config.get('enable_tenant_isolation');
      const isolationValue = isolationField.boolean();
      isolation = isolationValue ?? false;
      this.#set('responder', '', result, 'enable_tenant_isolation', isolationValue, isolationField);
      const threshold = config.get('ping_failure_threshold');
      const thresholdValue = threshold.uint();
      if (thresholdValue !== undefined)
        pingFailureThreshold = { value: thresholdValue, field: threshold };
      const max = config.get('max_connections_per_node');
      const maxValue = max.uint();
      if (maxValue !== undefined) maxConnections = { value: maxValue, field: max };
      this.#lifecycleLog(config, 'responder', result);
      config.reject(
        'reporter_config',
        'is not supported: revtun has no tunnel reporter; its admin server lists the tunnels',
      );
      config.done();
    }
    if (options.admin !== undefined) {
      result.admin = options.admin;
      this.#note('responder', 'admin', options.adminField);
    }
    if (tunnel === undefined) {
      config?.field.fail(
        `${extension.upstream.name} is configured but no listener has ${extension.reverseTunnel.name}`,
      );
      return undefined;
    }
    result.tunnel_listener = this.#tunnelListener(tunnel, {
      maxConnections,
      pingFailureThreshold,
      headerPrefix: options.headerPrefix,
    });
    if (options.egressListeners.length === 0) {
      tunnel.field.fail(
        `a responder needs an egress listener: a listener with ${extension.hcm.name} whose routes go to an ${extension.reverseConnectionCluster.name} cluster`,
      );
      return undefined;
    }
    result.egress_listeners = options.egressListeners.map((listener, index) =>
      this.#egressListener(listener, index, clusters, isolation),
    );
    return result as ResponderConfigInput;
  }

  #tunnelListener(
    listener: TunnelListener,
    options: {
      maxConnections: { value: number; field: Field } | undefined;
      pingFailureThreshold: { value: number; field: Field } | undefined;
      headerPrefix: { text: string; field: Field } | undefined;
    },
  ): ResponderConfigInput['tunnel_listener'] {
    const result: Mutable<ResponderConfigInput['tunnel_listener']> = { address: listener.address };
    this.#note('responder', 'tunnel_listener.address', listener.addressField);
    const set = <K extends keyof typeof result>(
      key: K,
      value: (typeof result)[K] | undefined,
      field: Field,
    ) => this.#set('responder', 'tunnel_listener', result, key, value, field);
    if (options.headerPrefix !== undefined)
      set('header_prefix', options.headerPrefix.text, options.headerPrefix.field);
    if (options.pingFailureThreshold !== undefined) {
      set(
        'ping_failure_threshold',
        options.pingFailureThreshold.value,
        options.pingFailureThreshold.field,
      );
    }
    const config = listener.config;
    if (config === undefined) return result;
    const ping = config.get('ping_interval');
    set('ping_interval', ping.duration(), ping);
    // Documented as "close after accept/reject"; the newest Envoy ignores it, as revtun does.
    config.get('auto_close_connections').boolean();
    const path = config.get('request_path');
    set('request_path', path.string(), path);
    const method = config.get('request_method');
    const methodName = method.enumName(requestMethods);
    set('request_method', methodName === 'METHOD_UNSPECIFIED' ? 'GET' : methodName, method);
    const clusterName = config.get('required_cluster_name');
    const required = clusterName.string();
    set('required_cluster_name', required === '' ? undefined : required, clusterName);
    const upgrade = config.get('use_http_upgrade');
    set('use_http_upgrade', upgrade.boolean(), upgrade);
    // Envoy keeps a tunnel on its accepting worker; revtun has one event loop.
    config.get('skip_rebalancing').boolean();
    const timeout = config.get('handshake_timeout');
    set('handshake_timeout', timeout.duration(), timeout);
    const limitField = config.get('enable_connection_limit');
    if (limitField.boolean() === true) {
      const max = options.maxConnections;
      if (max === undefined || max.value === 0) {
        (max?.field ?? limitField).fail(
          'enable_connection_limit with max_connections_per_node 0 (or unset) rejects every tunnel in Envoy; set max_connections_per_node on the upstream_socket_interface extension',
          { key: true },
        );
      } else {
        set('max_tunnels_per_node', max.value, max.field);
      }
    }
    // Without enable_connection_limit, max_connections_per_node has no effect in Envoy either.
    this.#validation(config.get('validation'), set);
    config.reject(
      'jwt_validator',
      'is not supported: JWT validation of handshakes comes with the security work',
    );
    config.reject(
      'enable_tenant_isolation',
      `is not a field of ${extension.reverseTunnel.name} in Envoy's API (an older doc example put it here): set enable_tenant_isolation on the ${extension.upstream.name} bootstrap extension`,
    );
    config.done();
    return result;
  }

  #validation(
    field: Field,
    set: (
      key: 'validation',
      value: NonNullable<ResponderConfigInput['tunnel_listener']['validation']>,
      field: Field,
    ) => void,
  ): void {
    const validation = field.object([
      'node_id_format',
      'cluster_id_format',
      'tenant_id_format',
      'emit_dynamic_metadata',
    ]);
    if (validation === undefined || !field.present) return;
    const result: Mutable<NonNullable<ResponderConfigInput['tunnel_listener']['validation']>> = {};
    for (const [key, target] of [
      ['node_id_format', 'node_id'],
      ['cluster_id_format', 'cluster_id'],
      ['tenant_id_format', 'tenant_id'],
    ] as const) {
      const format = validation.get(key);
      const text = format.string();
      // An empty format skips the check, as in Envoy.
      if (text === undefined || text === '') continue;
      result[target] = text;
      this.#note('responder', `tunnel_listener.validation.${target}`, format);
    }
    const emit = validation.get('emit_dynamic_metadata');
    if (emit.boolean() === true) {
      emit.fail(
        'is not supported: revtun has no dynamic metadata; its lifecycle log carries the ids',
        { key: true },
      );
    }
    validation.reject(
      'dynamic_metadata_namespace',
      'is not supported: revtun has no dynamic metadata',
    );
    validation.done();
    if (Object.keys(result).length > 0) set('validation', result, field);
  }

  #egressListener(
    listener: EgressListener,
    index: number,
    clusters: ReadonlyMap<string, Cluster | undefined>,
    isolation: boolean,
  ): ResponderConfigInput['egress_listeners'][number] {
    const at = `egress_listeners[${index}]`;
    this.#note('responder', at, listener.field);
    this.#note('responder', `${at}.address`, listener.addressField);
    const routes: Array<
      Mutable<NonNullable<ResponderConfigInput['egress_listeners'][number]['routes']>[number]>
    > = [];
    const hostHeaders: Array<readonly string[]> = [];
    const tenantHeaders: Array<readonly string[] | undefined> = [];
    for (const route of listener.hcm.routes) {
      const cluster = this.#useCluster(clusters, route.cluster, route.clusterField);
      if (cluster === undefined) continue;
      if (cluster.kind !== 'reverse_connection') {
        route.clusterField.fail(
          `cluster "${route.cluster}" is not an ${extension.reverseConnectionCluster.name} cluster; revtun's egress listeners route only through the tunnels`,
        );
        continue;
      }
      if (cluster.hostIdHeaders === undefined) continue;
      if (isolation && cluster.tenantIdHeaders === undefined) {
        if (this.#reported.has(cluster)) continue;
        this.#reported.add(cluster);
        cluster.configField.fail(
          'needs tenant_id_format (e.g. %REQ(x-tenant-id)%) with enable_tenant_isolation: Envoy does not start without it',
        );
        continue;
      }
      const routeIndex = routes.length;
      routes.push({ ...route.match, cluster: route.cluster });
      hostHeaders.push(cluster.hostIdHeaders);
      tenantHeaders.push(cluster.tenantIdHeaders);
      this.#note('responder', `${at}.routes[${routeIndex}]`, route.field);
      this.#note('responder', `${at}.routes[${routeIndex}].cluster`, route.clusterField);
      this.#note(
        'responder',
        `${at}.routes[${routeIndex}].${'prefix' in route.match ? 'prefix' : 'path'}`,
        route.field,
      );
      this.#note('responder', `${at}.routes[${routeIndex}].host_id_headers`, cluster.configField);
      this.#note('responder', `${at}.routes[${routeIndex}].tenant_id_headers`, cluster.configField);
    }
    const result: Mutable<ResponderConfigInput['egress_listeners'][number]> = {
      address: listener.address,
      // Envoy's reverse_connection cluster finds no host for a request without a host id: 503.
      no_host_id_status: 503,
      routes,
      // Envoy's connection manager adds no via by default, nor an x-forwarded-for of its own
      // without use_remote_address (which the translator does not take): neither does this one.
      forwarded_headers: { mode: 'none', via: false },
    };
    if (listener.hcm.http1Only !== undefined) {
      result.http2 = { enabled: false };
      this.#note('responder', `${at}.http2.enabled`, listener.hcm.http1Only.field);
    }
    if (listener.hcm.statPrefix !== undefined) {
      result.stat_prefix = listener.hcm.statPrefix.text;
      this.#note('responder', `${at}.stat_prefix`, listener.hcm.statPrefix.field);
    }
    if (listener.hcm.accessLog !== undefined) {
      result.access_log = listener.hcm.accessLog.entries.map((entry) => ({ ...entry }));
      this.#note('responder', `${at}.access_log`, listener.hcm.accessLog.field);
    }
    // The same headers on every route are the listener's; otherwise each route names its own.
    const same = (lists: ReadonlyArray<readonly string[] | undefined>) =>
      lists.every((list) => JSON.stringify(list) === JSON.stringify(lists[0]));
    if (same(hostHeaders) && hostHeaders[0] !== undefined) {
      result.host_id_headers = [...hostHeaders[0]];
      this.#note('responder', `${at}.host_id_headers`, listener.field);
    } else {
      routes.forEach((route, i) => (route.host_id_headers = [...(hostHeaders[i] ?? [])]));
    }
    if (same(tenantHeaders)) {
      if (tenantHeaders[0] !== undefined) result.tenant_id_headers = [...tenantHeaders[0]];
    } else {
      routes.forEach((route, i) => {
        const headers = tenantHeaders[i];
        if (headers !== undefined) route.tenant_id_headers = [...headers];
      });
    }
    if (listener.hcm.lua !== undefined) {
      result.lua = { inline_code: listener.hcm.lua.code };
      this.#note('responder', `${at}.lua`, listener.hcm.lua.field);
    }
    return result;
  }
}

/**
 * A schema problem on translated input, restated at the Envoy field the value came from (the
 * longest revtun path with a known origin that contains the problem's path).
 */
function fromEnvoy(
  problem: ConfigProblem,
  origins: Map<string, KeyPath>,
  yaml: YamlSource,
): ConfigProblem {
  let origin: KeyPath | undefined;
  for (let path = problem.path; ;) {
    origin = origins.get(path);
    if (origin !== undefined || path === '') break;
    const cut = Math.max(path.lastIndexOf('.'), path.lastIndexOf('['));
    path = cut <= 0 ? '' : path.slice(0, cut);
  }
  const message = `${problem.message} (revtun's ${problem.path === '' ? 'config' : problem.path})`;
  if (origin === undefined) return { path: '', message };
  return { path: formatPath(origin), message, ...yaml.position(origin) };
}

/**
 * Translates an Envoy bootstrap's YAML text; `source` names it in problems (`file:line:col`).
 * Throws a ConfigError with every problem found.
 */
export function translateEnvoyBootstrap(
  text: string,
  source = '<bootstrap>',
): EnvoyBootstrapTranslation {
  const yaml = readYaml(text, source);
  const problems = new Problems(yaml);
  const translator = new Translator(problems);
  const inputs = translator.translate(new Field(problems, [], yaml.value));
  if (problems.list.length > 0) throw new ConfigError(source, problems.list);
  const schemaProblems: ConfigProblem[] = [];
  const validate = <C>(role: Role, check: () => C): C | undefined => {
    try {
      return check();
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      for (const problem of error.problems) {
        schemaProblems.push(fromEnvoy(problem, translator.origins[role], yaml));
      }
      return undefined;
    }
  };
  const initiatorInput = inputs.initiator;
  const responderInput = inputs.responder;
  const initiator =
    initiatorInput === undefined
      ? undefined
      : validate('initiator', () => validateInitiatorConfig(initiatorInput));
  const responder =
    responderInput === undefined
      ? undefined
      : validate('responder', () => validateResponderConfig(responderInput));
  if (schemaProblems.length > 0) throw new ConfigError(source, schemaProblems);
  return { ...optional('initiator', initiator), ...optional('responder', responder), inputs };
}

/** Reads and translates an Envoy bootstrap file. */
export async function loadEnvoyBootstrapFile(file: string): Promise<EnvoyBootstrapTranslation> {
  return translateEnvoyBootstrap(await readConfigFile(file), file);
}
