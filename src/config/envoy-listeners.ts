/**
 * static_resources.listeners of an Envoy bootstrap, each read as what it is to revtun: the
 * initiator's rc:// listener, the responder's tunnel listener (envoy.filters.network.reverse_tunnel)
 * or one of its egress listeners (an HTTP connection manager routing through the tunnels).
 */
import { parseRcAddress, type RcAddress } from '../protocol/rc-address.ts';
import { isRevtunError } from '../shared/errors.ts';
import { extension, legacyHcmName, rcResolver } from './envoy-extensions.ts';
import {
  Field,
  joinWords,
  optional,
  readRequestAccessLog,
  readSocketAddress,
  type Fields,
  type RequestAccessLog,
} from './envoy-reader.ts';

export interface Route {
  readonly field: Field;
  readonly match: { readonly prefix: string } | { readonly path: string };
  readonly cluster: string;
  readonly clusterField: Field;
}

export interface HttpConnectionManager {
  /** The HCM's stat_prefix: revtun's egress listener counts `http.<stat_prefix>.…` too. */
  readonly statPrefix?: { readonly text: string; readonly field: Field };
  readonly routes: readonly Route[];
  readonly lua?: { readonly code: string; readonly field: Field };
  /** `codec_type: HTTP1` on an egress listener: HTTP/1.1 only, no HTTP/2 beside it. */
  readonly http1Only?: { readonly field: Field };
  /** The HCM's access loggers (egress listeners only): one record per request. */
  readonly accessLog?: { readonly entries: readonly RequestAccessLog[]; readonly field: Field };
}

export interface RcListener {
  readonly field: Field;
  readonly addresses: ReadonlyArray<{ readonly address: RcAddress; readonly field: Field }>;
  readonly hcm: HttpConnectionManager;
}

export interface TunnelListener {
  readonly field: Field;
  readonly address: string;
  readonly addressField: Field;
  readonly config: Fields | undefined;
}

export interface EgressListener {
  readonly field: Field;
  readonly address: string;
  readonly addressField: Field;
  readonly hcm: HttpConnectionManager;
}

export type Listener =
  | ({ readonly kind: 'initiator' } & RcListener)
  | ({ readonly kind: 'tunnel' } & TunnelListener)
  | ({ readonly kind: 'egress' } & EgressListener);

export function readListener(field: Field): Listener | undefined {
  const listener = field.object([
    'name',
    'address',
    'additional_addresses',
    'filter_chains',
    'listener_filters',
    'listener_filters_timeout',
  ]);
  if (listener === undefined) return undefined;
  listener.get('name').string();
  const listenerFilters = listener.get('listener_filters');
  if ((listenerFilters.list() ?? []).length > 0) {
    listenerFilters.fail(
      'is not supported: revtun runs no listener filters (write [] or leave it out)',
    );
  }
  listener.get('listener_filters_timeout').duration();
  const addressField = listener.get('address');
  const socket = new Field(
    addressField.problems,
    [...addressField.path, 'socket_address', 'address'],
    (addressField.value as { socket_address?: { address?: unknown } } | null | undefined)
      ?.socket_address?.address,
  );
  const isRc = typeof socket.value === 'string' && socket.value.startsWith('rc://');
  const filter = readNetworkFilter(listener.get('filter_chains'));
  const additional = listener.get('additional_addresses');
  if (!isRc && additional.present) {
    additional.fail('is supported only on an rc:// listener (more remote clusters)', {
      key: true,
    });
  }
  let result: Listener | undefined;
  if (isRc) {
    const addresses = [
      readRcAddress(addressField),
      ...(additional.list() ?? []).map((item) => {
        const entry = item.object(['address']);
        const address = entry?.get('address');
        entry?.done();
        return address === undefined ? undefined : readRcAddress(address);
      }),
    ].filter((address) => address !== undefined);
    if (filter !== undefined && filter.kind !== 'hcm') {
      filter.name.fail(
        `an rc:// listener serves the tunnels' HTTP/2 with ${extension.hcm.name}, not ${extension.reverseTunnel.name}`,
      );
    } else if (filter !== undefined) {
      const hcm = readHcm(filter.config, 'initiator');
      if (hcm !== undefined) result = { kind: 'initiator', field, addresses, hcm };
    }
  } else {
    const address = readSocketAddress(addressField);
    if (filter?.kind === 'reverse_tunnel' && address !== undefined) {
      result = {
        kind: 'tunnel',
        field,
        address: address.text,
        addressField: address.field,
        config: filter.config,
      };
    } else if (filter?.kind === 'hcm') {
      const hcm = readHcm(filter.config, 'egress');
      if (hcm !== undefined && address !== undefined) {
        result = {
          kind: 'egress',
          field,
          address: address.text,
          addressField: address.field,
          hcm,
        };
      }
    }
  }
  listener.done();
  return result;
}

/** One rc:// address (`address.socket_address` with port 0 and the reverse_connection resolver). */
function readRcAddress(field: Field): { address: RcAddress; field: Field } | undefined {
  const address = field.object(['socket_address']);
  const socket = address
    ?.get('socket_address')
    .object(['address', 'port_value', 'resolver_name', 'protocol']);
  address?.done();
  if (socket === undefined) return undefined;
  const textField = socket.get('address');
  const text = textField.string();
  const port = socket.get('port_value');
  if (port.present && port.value !== 0) port.fail('must be 0 for an rc:// address');
  const resolver = socket.get('resolver_name');
  if (resolver.string() !== rcResolver) {
    resolver.fail(`must be ${rcResolver} for an rc:// address`, { key: resolver.present });
  }
  socket.get('protocol').enumName(['TCP']);
  socket.done();
  if (text === undefined) return textField.fail('is required');
  try {
    return { address: parseRcAddress(text), field: textField };
  } catch (error) {
    if (!isRevtunError(error, 'ERR_RC_ADDRESS_INVALID')) throw error;
    return textField.fail(error.message);
  }
}

/** The one network filter of a listener's one filter chain. */
function readNetworkFilter(
  field: Field,
): { kind: 'hcm' | 'reverse_tunnel'; name: Field; config: Fields | undefined } | undefined {
  const chains = field.list();
  if (chains === undefined) return undefined;
  if (chains.length === 0) return field.fail('is required: one filter chain');
  for (const extra of chains.slice(1))
    extra.fail('is not supported: revtun runs one filter chain per listener');
  const chain = chains[0]?.object(['filters', 'name']);
  if (chain === undefined) return undefined;
  chain.get('name').string();
  chain.reject('transport_socket', 'is not supported: TLS comes with the security work');
  chain.reject('filter_chain_match', 'is not supported: revtun runs one filter chain per listener');
  const filtersField = chain.get('filters');
  chain.done();
  const filters = filtersField.list();
  if (filters === undefined) return undefined;
  if (filters.length === 0) return filtersField.fail('is required: one network filter');
  for (const extra of filters.slice(1)) {
    extra.fail(
      `is not supported: revtun runs one network filter per listener (${extension.hcm.name} or ${extension.reverseTunnel.name})`,
    );
  }
  const filter = filters[0]?.object(['name', 'typed_config']);
  if (filter === undefined) return undefined;
  const nameField = filter.get('name');
  const name = nameField.string();
  let result:
    { kind: 'hcm' | 'reverse_tunnel'; name: Field; config: Fields | undefined } | undefined;
  if (name === extension.hcm.name || name === legacyHcmName) {
    result = {
      kind: 'hcm',
      name: nameField,
      config: filter
        .get('typed_config')
        .typedConfig(extension.hcm.type, [
          'stat_prefix',
          'codec_type',
          'route_config',
          'http_filters',
          'access_log',
        ]),
    };
  } else if (name === extension.reverseTunnel.name) {
    result = {
      kind: 'reverse_tunnel',
      name: nameField,
      config: filter
        .get('typed_config')
        .typedConfig(extension.reverseTunnel.type, [
          'ping_interval',
          'auto_close_connections',
          'request_path',
          'request_method',
          'validation',
          'required_cluster_name',
          'use_http_upgrade',
          'skip_rebalancing',
          'enable_connection_limit',
          'handshake_timeout',
        ]),
    };
  } else if (name !== undefined) {
    nameField.fail(
      `"${name}" is not supported; revtun runs only ${extension.hcm.name} (rc:// and egress listeners) and ${extension.reverseTunnel.name}`,
    );
    filter.ignore('typed_config');
  }
  filter.done();
  return result;
}

function readHcm(
  config: Fields | undefined,
  role: 'initiator' | 'egress',
): HttpConnectionManager | undefined {
  if (config === undefined) return undefined;
  const statPrefixField = config.get('stat_prefix');
  const statPrefix = statPrefixField.string();
  const codec = config.get('codec_type');
  const codecs = role === 'initiator' ? ['AUTO', 'HTTP2'] : ['AUTO', 'HTTP1'];
  if (codec.present && !codecs.includes(String(codec.value))) {
    codec.fail(
      role === 'initiator'
        ? 'must be AUTO or HTTP2: the tunnels carry HTTP/2'
        : 'must be AUTO (HTTP/1.1 and HTTP/2) or HTTP1: a revtun egress listener always serves HTTP/1.1',
    );
  }
  const http1Only = role === 'egress' && codec.present && codec.value === 'HTTP1';
  config.reject('rds', 'is not supported: revtun reads route_config only');
  const routes = readRoutes(config.get('route_config'));
  const lua = readHttpFilters(config.get('http_filters'), role);
  const accessLogField = config.get('access_log');
  let accessLog: RequestAccessLog[] | undefined;
  if (accessLogField.present && role === 'initiator') {
    accessLogField.fail(
      "is not supported on an rc:// listener: revtun's access log is the responder's, on its egress listeners",
    );
  } else if (accessLogField.present) {
    accessLog = [];
    for (const entry of accessLogField.list() ?? []) {
      const log = readRequestAccessLog(entry);
      if (log !== undefined) accessLog.push(log);
    }
  }
  config.done();
  if (routes === undefined) return undefined;
  return {
    routes,
    ...optional('lua', lua),
    ...optional('http1Only', http1Only ? { field: codec } : undefined),
    ...optional(
      'accessLog',
      accessLog === undefined ? undefined : { entries: accessLog, field: accessLogField },
    ),
    ...optional(
      'statPrefix',
      statPrefix === undefined ? undefined : { text: statPrefix, field: statPrefixField },
    ),
  };
}

function readRoutes(field: Field): Route[] | undefined {
  if (!field.present) return field.fail('is required: a route_config with one virtual host');
  const config = field.object(['name', 'virtual_hosts']);
  if (config === undefined) return undefined;
  config.get('name').string();
  const hostsField = config.get('virtual_hosts');
  config.done();
  const hosts = hostsField.list();
  if (hosts === undefined) return undefined;
  if (hosts.length === 0)
    return hostsField.fail('is required: one virtual host with domains ["*"]');
  for (const extra of hosts.slice(1))
    extra.fail('is not supported: revtun runs one virtual host, with domains ["*"]');
  const host = hosts[0]?.object(['name', 'domains', 'routes']);
  if (host === undefined) return undefined;
  host.get('name').string();
  const domains = host.get('domains');
  const domainList = domains.list();
  if (domainList !== undefined && (domainList.length !== 1 || domainList[0]?.value !== '*')) {
    domains.fail('must be ["*"]: revtun does not route by host name');
  }
  const routesField = host.get('routes');
  host.done();
  const routes: Route[] = [];
  for (const item of routesField.list() ?? []) {
    const route = readRoute(item);
    if (route !== undefined) routes.push(route);
  }
  if ((routesField.list() ?? []).length === 0)
    return routesField.fail('is required: at least one route');
  return routes;
}

function readRoute(field: Field): Route | undefined {
  const route = field.object(['name', 'match', 'route']);
  if (route === undefined) return undefined;
  route.get('name').string();
  for (const action of ['redirect', 'direct_response']) {
    route.reject(action, 'is not supported: revtun routes only to a cluster');
  }
  const match = route.get('match').object(['prefix', 'path']);
  const prefix = match?.get('prefix').string();
  const path = match?.get('path').string();
  match?.done();
  const action = route.get('route').object(['cluster']);
  const clusterField = action?.get('cluster');
  const cluster = clusterField?.string();
  action?.done();
  route.done();
  if (match === undefined || action === undefined || clusterField === undefined) return undefined;
  if ((prefix === undefined) === (path === undefined)) {
    return match.field.fail('needs exactly one of prefix or path');
  }
  if (cluster === undefined)
    return clusterField.fail('is required: the cluster this route goes to');
  return {
    field,
    // Envoy's empty prefix matches every path, as "/" does.
    match:
      prefix !== undefined ? { prefix: prefix === '' ? '/' : prefix } : { path: path as string },
    cluster,
    clusterField,
  };
}

/** `envoy.filters.http.router` last; on an egress listener an `envoy.filters.http.lua` before it. */
function readHttpFilters(
  field: Field,
  role: 'initiator' | 'egress',
): { code: string; field: Field } | undefined {
  const supported =
    role === 'initiator' ? [extension.router.name] : [extension.lua.name, extension.router.name];
  const filters = field.list() ?? [];
  let lua: { code: string; field: Field } | undefined;
  filters.forEach((item, index) => {
    const filter = item.object(['name', 'typed_config']);
    if (filter === undefined) return;
    const nameField = filter.get('name');
    const name = nameField.string();
    const last = index === filters.length - 1;
    if (name === extension.router.name) {
      if (!last) nameField.fail(`${extension.router.name} must be the last HTTP filter`);
      const config = filter.get('typed_config');
      if (config.present) config.typedConfig(extension.router.type, [])?.done();
    } else if (name === extension.lua.name && role === 'egress') {
      if (lua !== undefined) {
        nameField.fail(`revtun runs one ${extension.lua.name} per egress listener`);
        filter.ignore('typed_config');
      } else {
        lua = readLua(filter.get('typed_config'));
      }
    } else {
      nameField.fail(
        `"${name ?? ''}" is not supported${role === 'initiator' ? ' on an rc:// listener' : ''}; revtun runs only ${joinWords(supported)}`,
      );
      filter.ignore('typed_config');
    }
    filter.done();
  });
  const lastName = (filters[filters.length - 1]?.value as { name?: unknown } | undefined)?.name;
  if (lastName !== extension.router.name) {
    field.fail(`must end with ${extension.router.name}`);
  }
  return lua;
}

function readLua(field: Field): { code: string; field: Field } | undefined {
  const config = field.typedConfig(extension.lua.type, ['inline_code', 'default_source_code']);
  if (config === undefined) return undefined;
  const inline = config.get('inline_code');
  const source = config.get('default_source_code').object(['inline_string']);
  const sourceString = source?.get('inline_string');
  for (const key of ['source_codes', 'stat_prefix', 'clear_route_cache']) {
    config.reject(key, `is not supported: revtun runs one inline script per egress listener`);
  }
  source?.reject('filename', 'is not supported: put the script in inline_string');
  source?.done();
  config.done();
  const code = inline.string();
  const codeFromSource = sourceString?.string();
  if (code !== undefined && codeFromSource !== undefined) {
    return config.field.fail('set inline_code or default_source_code, not both');
  }
  if (code !== undefined) return { code, field: inline };
  if (codeFromSource !== undefined && sourceString !== undefined)
    return { code: codeFromSource, field: sourceString };
  return config.field.fail('needs the script: inline_code (or default_source_code.inline_string)');
}
