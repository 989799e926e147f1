/**
 * The configuration schemas: what a YAML file (or an object handed to `startInitiator` /
 * `startResponder`) may contain, every default, and every unit. Keys are snake_case, as in the YAML
 * and in Envoy's fields; unknown keys are errors. Durations are written like Envoy's (`2s`,
 * `250ms`) and come out as milliseconds.
 */
import { z } from 'zod';
import { parseHostPort, type HostPort } from '../shared/address.ts';
import { parseDuration } from '../shared/duration.ts';
import { isRevtunError } from '../shared/errors.ts';
import {
  defaultHeaderPrefix,
  defaultRequestMethod,
  defaultRequestPath,
  identifierPattern,
} from '../protocol/handshake.ts';

const identifier = z
  .string()
  .regex(identifierPattern, 'must be 1-128 characters of [A-Za-z0-9._-]');

const duration = (min: number, max: number) =>
  z
    .string({ error: 'must be a duration with a unit, e.g. 250ms, 2s, 5m' })
    .transform((text, context) => {
      const ms = parseDuration(text);
      if (ms === undefined) {
        context.addIssue({
          code: 'custom',
          message: `"${text}" is not a duration; write a number and a unit, e.g. 250ms, 2s, 5m`,
        });
        return z.NEVER;
      }
      if (ms < min || ms > max) {
        context.addIssue({ code: 'custom', message: `must be between ${min} ms and ${max} ms` });
        return z.NEVER;
      }
      return ms;
    });

const address = (options: { allowPortZero: boolean }) =>
  z.string().transform((text, context): HostPort => {
    try {
      return parseHostPort(text, options);
    } catch (error) {
      if (!isRevtunError(error)) throw error;
      context.addIssue({ code: 'custom', message: error.message });
      return z.NEVER;
    }
  });

/** A listener address: `host:port`, port 0 picks a free port. */
const listenAddress = address({ allowPortZero: true });
/** An address to dial: `host:port`. */
const dialAddress = address({ allowPortZero: false });

const headerName = z
  .string()
  .regex(/^[a-z0-9!#$%&'*+.^_`|~-]+$/, 'must be a lower-case HTTP header name');

const pathPrefix = z
  .string()
  .regex(/^\/[\x21-\x7e]*$/, 'must start with "/" and contain no spaces');

const headerPrefix = z
  .string()
  .regex(/^[A-Za-z0-9-]+$/, 'must be letters, digits and "-", e.g. x-envoy')
  .transform((prefix) => prefix.toLowerCase())
  .default(defaultHeaderPrefix);

const admin = z.strictObject({
  /** Where the admin server listens, e.g. 127.0.0.1:8888. Keep it on loopback unless you must. */
  address: listenAddress,
});

/** The origin a local route forwards to: `http://host:port`, nothing after it. */
const localTarget = z.string().transform((text, context) => {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    context.addIssue({
      code: 'custom',
      message: `"${text}" is not a URL, e.g. http://127.0.0.1:8080`,
    });
    return z.NEVER;
  }
  if (url.protocol !== 'http:') {
    context.addIssue({ code: 'custom', message: `"${text}": only http:// targets are supported` });
    return z.NEVER;
  }
  const credentials = url.username !== '' || url.password !== '';
  if (url.pathname !== '/' || url.search !== '' || url.hash !== '' || credentials) {
    context.addIssue({
      code: 'custom',
      message: `"${text}" must be an origin (http://host:port) with no path, query or credentials`,
    });
    return z.NEVER;
  }
  return url.origin;
});

/** Local routes are tried in order and the first whose prefix matches the path wins (as Envoy). */
const routesInOrder = <T extends { prefix: string }>(routes: T[], context: z.RefinementCtx) => {
  routes.forEach((route, index) => {
    const earlier = routes.findIndex(
      (other, j) => j < index && route.prefix.startsWith(other.prefix),
    );
    if (earlier >= 0) {
      context.addIssue({
        code: 'custom',
        path: [index, 'prefix'],
        message: `prefix "${route.prefix}" can never match: route ${earlier} ("${routes[earlier]?.prefix}") comes first and matches every such path`,
      });
    }
  });
};

export const initiatorSchema = z.strictObject({
  node_id: identifier,
  cluster_id: identifier,
  tenant_id: identifier,
  /** Prefix of the initiator's stats. Envoy's default; the sandbox uses downstream_reverse_connection. */
  stat_prefix: identifier.default('reverse_tunnel_initiator'),
  admin: admin.optional(),
  handshake: z
    .strictObject({
      request_path: pathPrefix.default(defaultRequestPath),
      header_prefix: headerPrefix,
      /** From TCP connect to the end of the responder's answer. */
      timeout: duration(100, 300_000).prefault('10s'),
    })
    .prefault({}),
  /** Cap of the per-host reconnect backoff (1, 2, 4 … s). Envoy: default 30 s, minimum 1 s. */
  max_reconnect_backoff: duration(1000, 3_600_000).prefault('30s'),
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS the initiator announces on each tunnel. */
  max_concurrent_streams: z.int().min(1).max(10_000).default(256),
  remote_clusters: z
    .array(
      z.strictObject({
        name: identifier,
        hosts: z.array(dialAddress).min(1),
        /** Tunnels kept open to each host. 0 dials nothing. */
        tunnels_per_host: z.int().min(0).max(1024).default(1),
      }),
    )
    .min(1)
    .superRefine((clusters, context) => {
      const seen = new Set<string>();
      clusters.forEach((cluster, index) => {
        if (seen.has(cluster.name)) {
          context.addIssue({
            code: 'custom',
            path: [index, 'name'],
            message: `remote cluster "${cluster.name}" is defined twice`,
          });
        }
        seen.add(cluster.name);
      });
    }),
  local_routes: z
    .array(
      z.strictObject({
        prefix: pathPrefix,
        target: localTarget,
        /** Most connections the initiator opens to this local service. */
        max_connections: z.int().min(1).max(10_000).default(128),
      }),
    )
    .min(1)
    .superRefine(routesInOrder),
});

/** Envoy's sandbox Lua script looks at x-node-id then x-cluster-id; the seed page uses the other two. */
export const defaultHostIdHeaders = [
  'x-node-id',
  'x-remote-node-id',
  'x-cluster-id',
  'x-dst-cluster-uuid',
] as const;

export const responderSchema = z.strictObject({
  /** Prefix of the tunnel gauges. Envoy's default; the seed sandbox page uses reverse_connections. */
  stat_prefix: identifier.default('reverse_tunnel_acceptor'),
  admin: admin.optional(),
  tunnel_listener: z.strictObject({
    address: listenAddress,
    request_path: pathPrefix.default(defaultRequestPath),
    request_method: z
      .string()
      .regex(/^[A-Za-z]+$/, 'must be an HTTP method, e.g. GET')
      .transform((method) => method.toUpperCase())
      .default(defaultRequestMethod),
    header_prefix: headerPrefix,
    /** From the first byte to a complete handshake request (Envoy [latest]: 10 s). */
    handshake_timeout: duration(100, 300_000).prefault('10s'),
    /** Cap on the handshake request head. */
    max_handshake_bytes: z.int().min(1024).max(65_536).default(8192),
    /** Connections still in the handshake, in total and from one source address. */
    max_pending_handshakes: z.int().min(1).max(100_000).default(1024),
    max_pending_handshakes_per_source: z.int().min(1).max(100_000).default(64),
    /** RPING interval on idle tunnels, plus up to 15 % jitter; the echo is due within half of it. */
    ping_interval: duration(100, 300_000).prefault('2s'),
    /** Consecutive missed echoes before an idle tunnel is closed. */
    ping_failure_threshold: z.int().min(1).max(100).default(3),
  }),
  egress_listeners: z
    .array(
      z.strictObject({
        address: listenAddress,
        /**
         * Request headers that name the host id, tried in order; the first present wins. A value
         * that names a known cluster picks one of its nodes round robin, otherwise it names a node.
         */
        host_id_headers: z
          .array(headerName)
          .min(1)
          .default([...defaultHostIdHeaders]),
        /** Path prefixes forwarded through tunnels, first match wins; other paths get 404. */
        routes: z
          .array(
            z.strictObject({
              prefix: pathPrefix,
              /** Overrides the listener's host_id_headers for this route. */
              host_id_headers: z.array(headerName).min(1).optional(),
            }),
          )
          .min(1)
          .default([{ prefix: '/' }])
          .superRefine(routesInOrder),
        /** How long a request may take from its first byte to its last (Node's requestTimeout). */
        request_timeout: duration(1000, 3_600_000).prefault('300s'),
      }),
    )
    .min(1),
});

export type InitiatorConfigInput = z.input<typeof initiatorSchema>;
export type InitiatorConfig = DeepReadonly<z.output<typeof initiatorSchema>>;
export type ResponderConfigInput = z.input<typeof responderSchema>;
export type ResponderConfig = DeepReadonly<z.output<typeof responderSchema>>;
export type RemoteClusterConfig = InitiatorConfig['remote_clusters'][number];
export type LocalRouteConfig = InitiatorConfig['local_routes'][number];
export type EgressListenerConfig = ResponderConfig['egress_listeners'][number];
export type TunnelListenerConfig = ResponderConfig['tunnel_listener'];

type DeepReadonly<T> = T extends (infer U)[]
  ? ReadonlyArray<DeepReadonly<U>>
  : T extends object
    ? { readonly [K in keyof T]: DeepReadonly<T[K]> }
    : T;
