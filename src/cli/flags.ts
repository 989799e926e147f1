/**
 * Quick-start flags → config inputs, validated by the same schema as a config file. Problems are
 * reported against the flag that caused them.
 */
import { ConfigError } from '../config/load.ts';
import type { InitiatorConfigInput, ResponderConfigInput } from '../config/schema.ts';
import { parseRcAddress } from '../protocol/rc-address.ts';
import { formatHostPort, parseHostPort } from '../shared/address.ts';
import { RevtunError } from '../shared/errors.ts';

export type FlagValues = Record<string, string | boolean | Array<string | boolean> | undefined>;

/** A usage error; the CLI prefixes `revtun <command>: ` and points at `--help`. */
const usage = (message: string): RevtunError => new RevtunError('ERR_USAGE', message);

function text(flags: FlagValues, name: string): string | undefined {
  const value = flags[name];
  return typeof value === 'string' ? value : undefined;
}

function list(flags: FlagValues, name: string): string[] {
  const value = flags[name];
  return Array.isArray(value)
    ? value.filter((item): item is string => typeof item === 'string')
    : [];
}

/** `[HOST:]PORT` with a default host, normalised to `host:port`. */
function listenFlag(flags: FlagValues, name: string, defaultHost: string): string | undefined {
  const value = text(flags, name);
  if (value === undefined) return undefined;
  try {
    return formatHostPort(parseHostPort(value, { defaultHost, allowPortZero: true }));
  } catch (error) {
    throw usage(`--${name}: ${(error as Error).message}`);
  }
}

/** `--allow-insecure` → `allow_insecure: true` (absent otherwise, so the schema's default shows). */
function allowInsecure(flags: FlagValues): { allow_insecure?: true } {
  return flags['allow-insecure'] === true ? { allow_insecure: true } : {};
}

export function initiatorFromFlags(flags: FlagValues): InitiatorConfigInput {
  const rc = text(flags, 'rc');
  let ids: { node_id: string; cluster_id: string; tenant_id: string };
  let remote = text(flags, 'remote-cluster') ?? 'upstream-cluster';
  let tunnels = 1;
  if (rc !== undefined) {
    for (const clash of ['node-id', 'cluster-id', 'tenant-id', 'remote-cluster', 'tunnels']) {
      if (flags[clash] !== undefined) throw usage(`--rc already gives what --${clash} would`);
    }
    let address;
    try {
      address = parseRcAddress(rc);
    } catch (error) {
      throw usage(`--rc: ${(error as Error).message}`);
    }
    ids = {
      node_id: address.identity.nodeId,
      cluster_id: address.identity.clusterId,
      tenant_id: address.identity.tenantId,
    };
    remote = address.remoteCluster;
    tunnels = address.connectionCount;
  } else {
    const missing = ['node-id', 'cluster-id', 'tenant-id'].filter(
      (name) => text(flags, name) === undefined,
    );
    if (missing.length > 0) {
      throw usage(
        `${missing.map((name) => `--${name}`).join(', ')} required (or --rc, or --config FILE)`,
      );
    }
    ids = {
      node_id: text(flags, 'node-id') as string,
      cluster_id: text(flags, 'cluster-id') as string,
      tenant_id: text(flags, 'tenant-id') as string,
    };
    const count = text(flags, 'tunnels');
    if (count !== undefined) {
      if (!/^\d+$/.test(count)) throw usage(`--tunnels: "${count}" is not a whole number`);
      tunnels = Number(count);
    }
  }
  const responders = list(flags, 'responder');
  if (responders.length === 0) throw usage('--responder HOST:PORT is required');
  const routes = list(flags, 'route').map((route) => {
    const equals = route.indexOf('=');
    if (equals <= 0)
      throw usage(`--route: "${route}" is not PREFIX=URL, e.g. /app=http://127.0.0.1:8080`);
    return { prefix: route.slice(0, equals), target: route.slice(equals + 1) };
  });
  if (routes.length === 0) throw usage('--route PREFIX=URL is required');
  const admin = listenFlag(flags, 'admin-listen', '127.0.0.1');
  const statPrefix = text(flags, 'stat-prefix');
  return {
    ...ids,
    ...allowInsecure(flags),
    ...(statPrefix === undefined ? {} : { stat_prefix: statPrefix }),
    ...(admin === undefined ? {} : { admin: { address: admin } }),
    remote_clusters: [{ name: remote, hosts: responders, tunnels_per_host: tunnels }],
    local_routes: routes,
  };
}

export function responderFromFlags(flags: FlagValues): ResponderConfigInput {
  const tunnel = listenFlag(flags, 'tunnel-listen', '0.0.0.0');
  const egress = listenFlag(flags, 'egress-listen', '127.0.0.1');
  if (tunnel === undefined)
    throw usage('--tunnel-listen [HOST:]PORT is required (or --config FILE)');
  if (egress === undefined)
    throw usage('--egress-listen [HOST:]PORT is required (or --config FILE)');
  const admin = listenFlag(flags, 'admin-listen', '127.0.0.1');
  const statPrefix = text(flags, 'stat-prefix');
  const routes = list(flags, 'route').map((prefix) => ({ prefix }));
  const headers = list(flags, 'host-id-header').map((name) => name.toLowerCase());
  return {
    ...allowInsecure(flags),
    ...(statPrefix === undefined ? {} : { stat_prefix: statPrefix }),
    ...(admin === undefined ? {} : { admin: { address: admin } }),
    tunnel_listener: { address: tunnel },
    egress_listeners: [
      {
        address: egress,
        ...(routes.length === 0 ? {} : { routes }),
        ...(headers.length === 0 ? {} : { host_id_headers: headers }),
      },
    ],
  };
}

const flagOfKey: Array<[RegExp, string]> = [
  [/^node_id$/, '--node-id'],
  [/^cluster_id$/, '--cluster-id'],
  [/^tenant_id$/, '--tenant-id'],
  [/^stat_prefix$/, '--stat-prefix'],
  [/^admin/, '--admin-listen'],
  [/^remote_clusters\[0\]\.name$/, '--remote-cluster'],
  [/^remote_clusters\[0\]\.hosts/, '--responder'],
  [/^remote_clusters\[0\]\.tunnels_per_host$/, '--tunnels'],
  [/^local_routes/, '--route'],
  [/^tunnel_listener/, '--tunnel-listen'],
  [/^egress_listeners\[0\]\.routes/, '--route'],
  [/^egress_listeners\[0\]\.host_id_headers/, '--host-id-header'],
  [/^egress_listeners/, '--egress-listen'],
];

/** Restates a schema error on flag-built config in terms of the flags. */
export function flagError(error: unknown): unknown {
  if (!(error instanceof ConfigError)) return error;
  const lines = error.problems.map((problem) => {
    const flag = flagOfKey.find(([pattern]) => pattern.test(problem.path))?.[1] ?? problem.path;
    return `${flag}: ${problem.message}`;
  });
  return usage(lines.join('; '));
}
