/**
 * static_resources.clusters of an Envoy bootstrap: clusters of endpoints (responders for an
 * rc:// address, local services for an rc:// listener's routes) and envoy.clusters.reverse_connection
 * clusters (an egress listener's routes through the tunnels).
 */
import { extension } from './envoy-extensions.ts';
import {
  describeValue,
  optional,
  readSocketAddress,
  type Field,
  type Fields,
  type SocketAddress,
} from './envoy-reader.ts';

/** An endpoint's `socket_address`. */
export type Endpoint = SocketAddress;

export type Cluster =
  | {
      readonly kind: 'endpoints';
      readonly name: string;
      readonly field: Field;
      readonly endpoints: readonly Endpoint[];
      readonly connectTimeout?: { readonly text: string; readonly field: Field };
    }
  | {
      readonly kind: 'reverse_connection';
      readonly name: string;
      readonly field: Field;
      readonly hostIdHeaders?: readonly string[];
      readonly tenantIdHeaders?: readonly string[];
      readonly configField: Field;
    };

/** A header-only formatter: `%REQ(name)%`, or `%REQ(first?second)%` (the second if no first). */
function requestHeaders(field: Field, what: string): string[] | undefined {
  const text = field.string();
  if (text === undefined) return undefined;
  const match = /^%REQ\(([!#$%&'*+.^_`|~0-9A-Za-z-]+)(?:\?([!#$%&'*+.^_`|~0-9A-Za-z-]+))?\)%$/.exec(
    text,
  );
  if (match === null) {
    return field.fail(
      `"${text}" is not supported: revtun takes the ${what} from request headers; write %REQ(header-name)% or %REQ(first-header?second-header)%`,
    );
  }
  return [match[1], match[2]]
    .filter((name): name is string => name !== undefined)
    .map((name) => name.toLowerCase());
}

/**
 * The clusters by name. A cluster that has problems maps to undefined, so that what refers to it
 * is not also told it does not exist.
 */
export function readClusters(field: Field): Map<string, Cluster | undefined> {
  const clusters = new Map<string, Cluster | undefined>();
  for (const item of field.list() ?? []) {
    const name = (item.value as { name?: unknown } | null)?.name;
    const cluster = readCluster(item);
    if (typeof name !== 'string') continue;
    if (clusters.has(name)) {
      item.fail(`cluster "${name}" is defined twice`);
      continue;
    }
    clusters.set(name, cluster);
  }
  return clusters;
}

function readCluster(field: Field): Cluster | undefined {
  const cluster = field.object([
    'name',
    'type',
    'connect_timeout',
    'load_assignment',
    'lb_policy',
    'cluster_type',
    'typed_extension_protocol_options',
    'filters',
  ]);
  if (cluster === undefined) return undefined;
  const nameField = cluster.get('name');
  const name = nameField.string();
  if (name === undefined) {
    cluster.done();
    return nameField.fail('is required');
  }
  cluster.reject(
    'transport_socket',
    'is not supported: TLS towards responders and local services comes with the security work',
  );
  // Accepted on every cluster: for a local service it is the connect deadline; a responder's
  // handshake is bounded by revtun's handshake timeout (10 s) from connect to answer.
  const connectTimeoutField = cluster.get('connect_timeout');
  const connectTimeout = connectTimeoutField.duration();
  const clusterType = cluster.get('cluster_type');
  const reverseConnection = clusterType.present
    ? readReverseConnectionCluster(name, cluster, clusterType)
    : readEndpointCluster(
        name,
        cluster,
        field,
        connectTimeout === undefined
          ? undefined
          : { text: connectTimeout, field: connectTimeoutField },
      );
  cluster.done();
  return reverseConnection;
}

function readEndpointCluster(
  name: string,
  cluster: Fields,
  field: Field,
  connectTimeout: { text: string; field: Field } | undefined,
): Cluster | undefined {
  cluster.get('type').enumName(['STATIC', 'STRICT_DNS', 'LOGICAL_DNS']);
  cluster.get('lb_policy').enumName(['ROUND_ROBIN']);
  const options = cluster.get('typed_extension_protocol_options');
  if (options.present) {
    options.fail(
      'is not supported on this cluster: revtun speaks HTTP/1.1 to local services and its own handshake to responders',
      { key: true },
    );
  }
  const filters = cluster.get('filters');
  if (filters.present) filters.fail('is not supported on this cluster', { key: true });
  const assignment = cluster.get('load_assignment').object(['cluster_name', 'endpoints']);
  if (assignment === undefined) return undefined;
  assignment.get('cluster_name').string();
  const endpoints: Endpoint[] = [];
  for (const group of assignment.get('endpoints').list() ?? []) {
    const locality = group.object(['lb_endpoints']);
    for (const lbEndpoint of locality?.get('lb_endpoints').list() ?? []) {
      const lb = lbEndpoint.object(['endpoint']);
      const endpoint = lb?.get('endpoint').object(['address']);
      const addressField = endpoint?.get('address');
      const address = addressField === undefined ? undefined : readSocketAddress(addressField);
      endpoint?.done();
      lb?.done();
      if (address !== undefined) endpoints.push(address);
    }
    locality?.done();
  }
  assignment.done();
  if (endpoints.length === 0) {
    return field.fail(
      `cluster "${name}" has no endpoint: add load_assignment.endpoints[].lb_endpoints[].endpoint`,
    );
  }
  return {
    kind: 'endpoints',
    name,
    field,
    endpoints,
    ...optional('connectTimeout', connectTimeout),
  };
}

function readReverseConnectionCluster(
  name: string,
  cluster: Fields,
  clusterType: Field,
): Cluster | undefined {
  const type = cluster.get('type');
  if (type.present) type.fail('cannot be set with cluster_type', { key: true });
  const lbPolicy = cluster.get('lb_policy');
  if (lbPolicy.value !== 'CLUSTER_PROVIDED') {
    lbPolicy.fail(
      `must be CLUSTER_PROVIDED for an ${extension.reverseConnectionCluster.name} cluster`,
    );
  }
  const assignment = cluster.get('load_assignment');
  if (assignment.present) {
    assignment.fail(
      `is not allowed on an ${extension.reverseConnectionCluster.name} cluster: its hosts are the tunnels`,
      { key: true },
    );
  }
  for (const filter of cluster.get('filters').list() ?? []) {
    // It only feeds Envoy's access logs of the upstream connections; revtun's lifecycle log
    // has the events either way.
    const fields = filter.object(['name', 'typed_config']);
    const filterName = fields?.get('name');
    if (filterName !== undefined && filterName.string() !== extension.lifecycleFilter.name) {
      filterName.fail(
        `${describeValue(filterName.value)} is not supported; revtun accepts only ${extension.lifecycleFilter.name} here`,
      );
      fields?.ignore('typed_config');
    } else {
      fields?.get('typed_config').typedConfig(extension.lifecycleFilter.type, [])?.done();
    }
    fields?.done();
  }
  requireHttp2(cluster.get('typed_extension_protocol_options'));
  const typeFields = clusterType.object(['name', 'typed_config']);
  const typeName = typeFields?.get('name');
  if (typeName !== undefined && typeName.string() !== extension.reverseConnectionCluster.name) {
    typeName.fail(
      `${describeValue(typeName.value)} is not supported; revtun runs only ${extension.reverseConnectionCluster.name} clusters and clusters of STATIC, STRICT_DNS or LOGICAL_DNS endpoints`,
    );
    typeFields?.ignore('typed_config');
    typeFields?.done();
    return undefined;
  }
  const configField = typeFields?.get('typed_config');
  const config = configField?.typedConfig(extension.reverseConnectionCluster.type, [
    'cleanup_interval',
    'host_id_format',
    'tenant_id_format',
  ]);
  typeFields?.done();
  if (config === undefined || configField === undefined) return undefined;
  // Hosts unused for cleanup_interval are removed; revtun keeps no per-host state to clean.
  config.get('cleanup_interval').duration();
  const hostIdFormat = config.get('host_id_format');
  const hostIdHeaders = hostIdFormat.present
    ? requestHeaders(hostIdFormat, 'host id')
    : hostIdFormat.fail('is required: e.g. %REQ(x-computed-host-id)%');
  const tenantIdFormat = config.get('tenant_id_format');
  const tenantIdHeaders =
    tenantIdFormat.present && tenantIdFormat.value !== ''
      ? requestHeaders(tenantIdFormat, 'tenant id')
      : undefined;
  config.done();
  return {
    kind: 'reverse_connection',
    name,
    field: cluster.field,
    configField,
    ...optional('hostIdHeaders', hostIdHeaders),
    ...optional('tenantIdHeaders', tenantIdHeaders),
  };
}

/** The reverse_connection cluster must speak HTTP/2 (reference §6), with no other options. */
function requireHttp2(field: Field): void {
  const required = `is required: ${extension.httpProtocolOptions.name} with explicit_http_config.http2_protocol_options (reverse tunnels carry HTTP/2 only)`;
  if (!field.present) {
    field.fail(required);
    return;
  }
  const options = field.object([extension.httpProtocolOptions.name]);
  if (options === undefined) return;
  const http = options.get(extension.httpProtocolOptions.name);
  options.done();
  if (!http.present) {
    field.fail(required);
    return;
  }
  const config = http.typedConfig(extension.httpProtocolOptions.type, ['explicit_http_config']);
  const explicit = config?.get('explicit_http_config').object(['http2_protocol_options']);
  config?.done();
  if (explicit === undefined) return;
  const http2 = explicit.get('http2_protocol_options');
  explicit.reject('http_protocol_options', 'is not supported: reverse tunnels carry HTTP/2 only');
  explicit.reject('http3_protocol_options', 'is not supported: reverse tunnels carry HTTP/2 only');
  explicit.done();
  if (!http2.present && http2.value === undefined) {
    explicit.field.fail('needs http2_protocol_options: {} (reverse tunnels carry HTTP/2 only)');
    return;
  }
  // revtun's HTTP/2 settings are its own (keepalive on by default, reference §6).
  http2.object([])?.done();
}
