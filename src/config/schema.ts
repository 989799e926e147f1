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
import { textFormatProblem } from '../shared/access-format.ts';
import { compileRouteRegex } from '../shared/route-regex.ts';
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

/**
 * An egress listener's access log: JSON lines (default), or text in Envoy's default format or a
 * `text_format` of Envoy-style `%COMMAND%` operators, checked here so a typo fails at load.
 */
const accessLogEntry = z
  .strictObject({
    path: z.string().min(1),
    format: z.enum(['json', 'text']).default('json'),
    text_format: z
      .string()
      .min(1)
      .superRefine((format, context) => {
        const problem = textFormatProblem(format);
        if (problem !== undefined) context.addIssue({ code: 'custom', message: problem });
      })
      .optional(),
  })
  .superRefine((entry, context) => {
    if (entry.text_format !== undefined && entry.format !== 'text') {
      context.addIssue({
        code: 'custom',
        path: ['text_format'],
        message: 'text_format needs format: text',
      });
    }
  });

const admin = z.strictObject({
  /** Where the admin server listens, e.g. 127.0.0.1:8888. Keep it on loopback unless you must. */
  address: listenAddress,
  /** A file that gets one line per admin request, in Envoy's default access-log format. */
  access_log: z.strictObject({ path: z.string().min(1) }).optional(),
  /** A file holding a bearer token every admin request must present (`authorization: Bearer …`). */
  token_file: z.string().min(1).optional(),
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

/**
 * A route matches a path by `prefix` or, exactly, by `path` (Envoy's route matches), always on the
 * path without its query string. Routes are tried in order and the first match wins (as Envoy).
 */
const routeMatch = {
  prefix: pathPrefix.optional(),
  path: pathPrefix.optional(),
};

function exactlyOneMatch(
  route: { prefix?: string | undefined; path?: string | undefined },
  context: z.RefinementCtx,
): void {
  if ((route.prefix === undefined) === (route.path === undefined)) {
    context.addIssue({
      code: 'custom',
      message: 'a route needs exactly one of prefix (a path prefix) or path (an exact path)',
    });
  }
}

/**
 * What the shadowing check needs of a route: its path match, and for local routes the optional
 * `regex` and `host` (egress routes have neither).
 */
interface ShadowableRoute {
  prefix?: string | undefined;
  path?: string | undefined;
  regex?: string | undefined;
  host?: string | undefined;
}

/**
 * Whether every host `earlier` accepts includes every host `later` accepts: no host is any host;
 * `*.example.com` includes `a.example.com` and `*.a.example.com`; an exact host only itself.
 */
function hostsInclude(earlier: string | undefined, later: string | undefined): boolean {
  if (earlier === undefined) return true;
  if (later === undefined) return false;
  if (!earlier.startsWith('*.')) return earlier === later;
  const suffix = earlier.slice(1);
  return later.startsWith('*.') ? later.slice(1).endsWith(suffix) : later.endsWith(suffix);
}

/**
 * Whether `earlier` matches every request `later` matches, so that `later` can never match. Only
 * what can be proven: a regex is never proven to shadow (nor, except by the catch-all prefix `/`,
 * to be shadowed), so the check never calls a reachable route unreachable.
 */
function shadows(earlier: ShadowableRoute, later: ShadowableRoute): boolean {
  if (earlier.regex !== undefined || !hostsInclude(earlier.host, later.host)) return false;
  if (earlier.prefix !== undefined) {
    // Every request path starts with "/" (the router answers 400 to any other), so `/` is all.
    if (later.regex !== undefined) return earlier.prefix === '/';
    return (later.prefix ?? later.path ?? '').startsWith(earlier.prefix);
  }
  return later.path !== undefined && later.path === earlier.path;
}

function describeMatch(route: ShadowableRoute | undefined): string {
  const match =
    route?.prefix !== undefined
      ? `prefix "${route.prefix}"`
      : route?.regex !== undefined
        ? `regex "${route.regex}"`
        : `path "${route?.path}"`;
  return route?.host !== undefined ? `${match} on host "${route.host}"` : match;
}

/** A route that an earlier one shadows can never match: that is a mistake, not a configuration. */
const routesInOrder = <T extends ShadowableRoute>(routes: T[], context: z.RefinementCtx) => {
  routes.forEach((route, index) => {
    const earlier = routes.findIndex((other, j) => j < index && shadows(other, route));
    if (earlier >= 0) {
      const field =
        route.prefix !== undefined ? 'prefix' : route.regex !== undefined ? 'regex' : 'path';
      context.addIssue({
        code: 'custom',
        path: [index, field],
        message: `${describeMatch(route)} can never match: route ${earlier} (${describeMatch(routes[earlier])}) comes first and matches every such path`,
      });
    }
  });
};

/**
 * A value compared with a claimed id: a literal, or `%REQ(header)%` for a handshake request header
 * (the subset of Envoy's substitution formatters that a reverse-tunnel validation uses).
 */
export type ExpectedValue = { readonly literal: string } | { readonly header: string };

const expectedValue = z.string().transform((text, context): ExpectedValue => {
  const request = /^%REQ\(([A-Za-z0-9!#$%&'*+.^_`|~-]+)\)%$/.exec(text);
  if (request !== null) return { header: (request[1] as string).toLowerCase() };
  if (text.includes('%')) {
    context.addIssue({
      code: 'custom',
      message: `"${text}": only a literal value or %REQ(header-name)% is supported`,
    });
    return z.NEVER;
  }
  return { literal: text };
});

const lifecycleLog = z.strictObject({
  /** File that receives one JSON line per lifecycle event (Envoy's access_log on the extension). */
  path: z.string().min(1),
});

const tlsVersion = z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2');

/** A file path that must name something: read when the listener or dialler starts. */
const filePath = z.string().min(1);

/** A TLS server's certificate and key (PEM files), and the oldest TLS version it accepts. */
const serverTls = z.strictObject({
  cert_file: filePath,
  key_file: filePath,
  min_version: tlsVersion,
  /** CA (PEM) that client certificates must chain to; when set, a client certificate is required. */
  client_ca_file: filePath.optional(),
});

/** SHA-256 of a secret, hex: revtun stores and compares hashes, never the secrets themselves. */
const sha256Hex = z
  .string()
  .regex(/^[0-9a-f]{64}$/, 'must be the SHA-256 of the secret, 64 lower-case hex digits');

/** A base64 SHA-256 of a certificate's SubjectPublicKeyInfo (the HPKP / curl --pinnedpubkey form). */
const spkiPin = z
  .string()
  .regex(/^[A-Za-z0-9+/]{43}=$/, 'must be the base64 SHA-256 of a SubjectPublicKeyInfo');

/** A set of ids a caller may reach; an absent list allows all. */
const allowList = z.array(identifier).min(1).optional();

/** Extra handshake header: a fixed value, or a file read at every dial (a token that rotates). */
const handshakeHeader = z
  .strictObject({
    name: headerName,
    value: z
      .string()
      .regex(/^[\t\x20-\x7e\x80-\xff]*$/, 'must be a valid header value')
      .optional(),
    value_file: z.string().min(1).optional(),
  })
  .superRefine((header, context) => {
    if ((header.value === undefined) === (header.value_file === undefined)) {
      context.addIssue({
        code: 'custom',
        message: 'a handshake header needs exactly one of value or value_file',
      });
    }
  });

/** An HTTP/2 flow-control window, bytes: from HTTP/2's initial 65 535 to its largest, 2^31 − 1. */
const windowSize = (defaultBytes: number) =>
  z
    .int()
    .min(65_535)
    .max(2 ** 31 - 1)
    .default(defaultBytes);

/** A list whose entries' `name`s must differ: a second one is reported at its own `name`. */
const uniqueNames =
  (what: string) => (entries: ReadonlyArray<{ name: string }>, context: z.RefinementCtx) => {
    const seen = new Set<string>();
    entries.forEach((entry, index) => {
      if (seen.has(entry.name)) {
        context.addIssue({
          code: 'custom',
          path: [index, 'name'],
          message: `${what} "${entry.name}" is defined twice`,
        });
      }
      seen.add(entry.name);
    });
  };

/** HTTP/2 limits of a tunnel's session, on either side (Node's http2 session options). */
const http2Limits = z.strictObject({
  /** SETTINGS_MAX_HEADER_LIST_SIZE: the largest header block accepted, bytes. */
  max_header_list_size: z
    .int()
    .min(1024)
    .max(1024 * 1024)
    .default(64 * 1024),
  /** Memory one session may use before new streams are refused, MiB (Node's maxSessionMemory). */
  max_session_memory: z.int().min(1).max(1024).default(10),
  /** Invalid frames tolerated before the session is closed (Node's maxSessionInvalidFrames). */
  max_invalid_frames: z.int().min(0).max(100_000).default(1000),
  /** Streams refused before the session is closed (Node's maxSessionRejectedStreams). */
  max_rejected_streams: z.int().min(0).max(100_000).default(100),
  /**
   * Flow-control windows this side announces, bytes: per stream (SETTINGS_INITIAL_WINDOW_SIZE) and
   * for the whole session (a WINDOW_UPDATE on stream 0). They bound what the peer may send before
   * this side reads, so they bound memory too; HTTP/2's 64 KiB default caps one stream at one
   * window per round trip.
   */
  stream_window: windowSize(1024 * 1024),
  connection_window: windowSize(4 * 1024 * 1024),
  /** SETTINGS_MAX_FRAME_SIZE: the largest frame this side accepts, bytes. */
  max_frame_size: z
    .int()
    .min(16_384)
    .max(2 ** 24 - 1)
    .default(16_384),
  /**
   * Liveness of a tunnel that carries HTTP/2: a PING this often (plus 0–15 % jitter), which must
   * be acknowledged within `ping_timeout`, or the tunnel is closed (`http2_keepalive_timeout`) and
   * its streams fail. A dead link is found within interval + timeout.
   */
  ping_interval: duration(100, 3_600_000).prefault('5s'),
  ping_timeout: duration(100, 600_000).prefault('3s'),
});

/**
 * The host a local route is limited to, as an Envoy virtual host's domain: a name, an IPv6
 * literal in brackets, or `*.` and a suffix. Compared case-insensitively with `:authority`
 * without its port.
 */
const routeHost = z
  .string()
  .transform((host) => host.toLowerCase())
  .pipe(
    z
      .string()
      .regex(
        /^(?:(?:\*\.)?[a-z0-9_-]+(?:\.[a-z0-9_-]+)*|\[[0-9a-f:.]+\])$/,
        'must be a host name, "*." and a domain, or an [IPv6] literal, without a port',
      ),
  );

/** A local route's `regex`, compiled once here so that a bad pattern is a config error. */
const routeRegex = z.string().superRefine((source, context) => {
  try {
    compileRouteRegex(source);
  } catch (error) {
    if (!isRevtunError(error)) throw error;
    context.addIssue({ code: 'custom', message: error.message });
  }
});

/**
 * Passive failure detection of a local route's endpoints (Envoy's outlier detection, its
 * consecutive-5xx detector): an endpoint whose requests fail `consecutive_failures` times in a row
 * (a 5xx answer, or no answer at all) is taken out of the rotation for a while.
 */
const outlierDetection = z.strictObject({
  /** Consecutive failures that eject an endpoint. Envoy's consecutive_5xx; default 5. */
  consecutive_failures: z.int().min(1).max(1000).default(5),
  /**
   * How long the first ejection lasts; the n-th ejection in a row lasts n times as long (Envoy's
   * base_ejection_time × ejections), up to `max_ejection_time`. Default 30 s.
   */
  ejection_time: duration(100, 86_400_000).prefault('30s'),
  /** The cap of an ejection's length. Envoy's max_ejection_time; default 300 s. */
  max_ejection_time: duration(100, 86_400_000).prefault('300s'),
  /**
   * Most endpoints of the route that may be ejected at once, percent; one may always be. Default
   * 100 (Envoy's is 10, which for the two or three endpoints of a local service means one).
   */
  max_ejection_percent: z.int().min(0).max(100).default(100),
});

/** A local route: which streams it takes, and the local service endpoints that serve them. */
const localRoute = z
  .strictObject({
    /** The path (without query) starts with this. */
    prefix: pathPrefix.optional(),
    /** The path (without query) is exactly this. */
    path: pathPrefix.optional(),
    /**
     * The whole path (without query) matches this JavaScript RegExp source (no flags), as Envoy's
     * safe_regex; matched in linear time (src/shared/route-regex.ts), so backreferences and
     * lookarounds are refused. A path over 8192 characters never matches.
     */
    regex: routeRegex.optional(),
    /** Only streams whose `:authority` (without port) is this host, or matches `*.domain`. */
    host: routeHost.optional(),
    /** Replaces the matched prefix of the path, query kept (Envoy's prefix_rewrite); only with prefix. */
    prefix_rewrite: pathPrefix.optional(),
    /** The local service's origin, `http://host:port`. */
    target: localTarget.optional(),
    /** Several endpoints of the local service, served round robin; instead of `target`. */
    targets: z.array(localTarget).min(1).max(1000).optional(),
    /** `http1`, or `http2` for h2c with prior knowledge (gRPC services). Default http1. */
    protocol: z.enum(['http1', 'http2']).default('http1'),
    /**
     * How long the local service may take to send the response headers; then the stream gets 504.
     * Absent: no per-route limit.
     */
    timeout: duration(10, 86_400_000).optional(),
    /** Most connections the initiator opens to each endpoint of this local service. */
    max_connections: z.int().min(1).max(10_000).default(128),
    /** TCP connect deadline towards the local service. */
    connect_timeout: duration(10, 300_000).prefault('10s'),
    outlier_detection: outlierDetection.prefault({}),
  })
  .superRefine((route, context) => {
    const matches = [route.prefix, route.path, route.regex].filter((m) => m !== undefined);
    if (matches.length !== 1) {
      context.addIssue({
        code: 'custom',
        message:
          'a local route needs exactly one of prefix (a path prefix), path (an exact path) or regex (a pattern the whole path matches)',
      });
    }
    if (route.prefix_rewrite !== undefined && route.prefix === undefined) {
      context.addIssue({
        code: 'custom',
        path: ['prefix_rewrite'],
        message: 'prefix_rewrite replaces the matched prefix, so it needs prefix',
      });
    }
    if ((route.target === undefined) === (route.targets === undefined)) {
      context.addIssue({
        code: 'custom',
        message: 'a local route needs exactly one of target (one endpoint) or targets (a list)',
      });
    }
    route.targets?.forEach((target, index) => {
      if (route.targets?.indexOf(target) !== index) {
        context.addIssue({
          code: 'custom',
          path: ['targets', index],
          message: `"${target}" is listed twice`,
        });
      }
    });
    if (route.outlier_detection.max_ejection_time < route.outlier_detection.ejection_time) {
      context.addIssue({
        code: 'custom',
        path: ['outlier_detection', 'max_ejection_time'],
        message: 'max_ejection_time must be at least ejection_time',
      });
    }
  });

const initiatorFields = z.strictObject({
  node_id: identifier,
  cluster_id: identifier,
  tenant_id: identifier,
  /** Prefix of the initiator's stats. Envoy's default; the sandbox uses downstream_reverse_connection. */
  stat_prefix: identifier.default('reverse_tunnel_initiator'),
  /** Adds the `<prefix>.handshake…` counters by result and failure reason (Envoy's field). */
  enable_detailed_stats: z.boolean().default(false),
  admin: admin.optional(),
  lifecycle_log: lifecycleLog.optional(),
  handshake: z
    .strictObject({
      request_path: pathPrefix.default(defaultRequestPath),
      header_prefix: headerPrefix,
      /** From TCP connect to the end of the responder's answer. */
      timeout: duration(100, 300_000).prefault('10s'),
      /** Upgrade mode: `connection: upgrade` + `upgrade: reverse-tunnel`, success is 101. */
      use_http_upgrade: z.boolean().default(false),
      /** Extra headers on every handshake, e.g. `authorization` (Envoy's additional_headers). */
      headers: z.array(handshakeHeader).default([]),
      /** A file whose content is sent as `authorization: Bearer <content>`, read at every dial. */
      bearer_token_file: z.string().min(1).optional(),
    })
    .superRefine((handshake, context) => {
      if (
        handshake.bearer_token_file !== undefined &&
        handshake.headers.some((header) => header.name.toLowerCase() === 'authorization')
      ) {
        context.addIssue({
          code: 'custom',
          path: ['bearer_token_file'],
          message: 'bearer_token_file sends authorization; drop the authorization entry of headers',
        });
      }
    })
    .prefault({}),
  /** Cap of the per-host reconnect backoff (1, 2, 4 … s). Envoy: default 30 s, minimum 1 s. */
  max_reconnect_backoff: duration(1000, 3_600_000).prefault('30s'),
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS the initiator announces on each tunnel. */
  max_concurrent_streams: z.int().min(1).max(10_000).default(256),
  http2: http2Limits.prefault({}),
  /** Starts even with a cleartext tunnel to a host beyond loopback. */
  allow_insecure: z.boolean().default(false),
  remote_clusters: z
    .array(
      z.strictObject({
        name: identifier,
        hosts: z.array(dialAddress).min(1),
        /** Tunnels kept open to each host. 0 dials nothing. */
        tunnels_per_host: z.int().min(0).max(1024).default(1),
        /**
         * How often a host given by name is resolved again (every address is a host with its own
         * `tunnels_per_host` tunnels; new addresses are dialled, vanished ones drained). From the
         * end of one resolution to the next; default 30 s, 1 s to 24 h. IP literals never resolve.
         */
        resolve_interval: duration(1000, 86_400_000).prefault('30s'),
        /**
         * TLS to these hosts, kept for the whole tunnel (RPING and HTTP/2 run inside it). Without
         * it the tunnel is cleartext TCP, which only loopback may carry unless allow_insecure.
         */
        tls: z
          .strictObject({
            /** CA (PEM) the responder's certificate must chain to; Node's bundled Mozilla CAs when absent. */
            ca_file: filePath.optional(),
            /** SNI and the name the certificate must carry; the host's name when absent. */
            server_name: z.string().min(1).optional(),
            /** A client certificate and key (PEM) for responders that require one (mTLS). */
            cert_file: filePath.optional(),
            key_file: filePath.optional(),
            /** Accept only these public keys (base64 SHA-256 of the SPKI), besides the chain check. */
            spki_pins: z.array(spkiPin).min(1).optional(),
            min_version: tlsVersion,
          })
          .superRefine((tls, context) => {
            if ((tls.cert_file === undefined) !== (tls.key_file === undefined)) {
              context.addIssue({ code: 'custom', message: 'cert_file and key_file go together' });
            }
          })
          .optional(),
      }),
    )
    .min(1)
    .superRefine(uniqueNames('remote cluster')),
  local_routes: z.array(localRoute).default([]).superRefine(routesInOrder),
  /**
   * TCP services the responder may open connections to by name (a CONNECT whose `:authority` is
   * the name, docs/streams.md §3). Only these are ever dialled. Default: none.
   */
  tcp_targets: z
    .array(
      z.strictObject({
        /** What the responder's `tcp_listeners` call it. Unique. */
        name: identifier,
        /** `host:port` of the TCP service. */
        address: dialAddress,
        /** TCP connect deadline; default 10 s, 10 ms to 300 s. */
        connect_timeout: duration(10, 300_000).prefault('10s'),
      }),
    )
    .default([])
    .superRefine(uniqueNames('TCP target')),
});

export const initiatorSchema = initiatorFields.refine(
  (config) => config.local_routes.length > 0 || config.tcp_targets.length > 0,
  {
    path: ['local_routes'],
    message: 'is required: an initiator needs at least one local route or TCP target',
    // Checked even when other keys have problems, so that a config with neither hears of it; not
    // when the object itself or either list is wrong (there is nothing to count then).
    when: (payload) =>
      payload.issues.every((issue) => {
        const key = issue.path?.[0];
        return key !== undefined && key !== 'local_routes' && key !== 'tcp_targets';
      }),
  },
);

/** Envoy's sandbox Lua script looks at x-node-id then x-cluster-id; the seed page uses the other two. */
export const defaultHostIdHeaders = [
  'x-node-id',
  'x-remote-node-id',
  'x-cluster-id',
  'x-dst-cluster-uuid',
] as const;

export const responderSchema = z
  .strictObject({
    /** Prefix of the tunnel gauges. Envoy's default; the seed sandbox page uses reverse_connections. */
    stat_prefix: identifier.default('reverse_tunnel_acceptor'),
    /**
     * Tenant isolation (Envoy's enable_tenant_isolation): tunnels are keyed `tenant:node` and
     * `tenant:cluster`, and every egress request must name its tenant.
     */
    enable_tenant_isolation: z.boolean().default(false),
    /**
     * The per-node and per-cluster gauges (`<stat_prefix>.nodes.<node>`, `.clusters.<cluster>`,
     * their `worker_0` and `tenants` forms). Off bounds the stats to the aggregates, which are
     * always on (`reverse_tunnel.acceptor.total_nodes`, `.total_clusters`, counters, histograms), however
     * many nodes connect. Envoy's field has the same meaning and defaults to false since #41364;
     * revtun defaults to true, as it always listed these gauges (reference §12 #19) and the
     * sandbox's checks and the dashboard read them; `max_departed_stats` already bounds those of
     * nodes that left. Set false past a few thousand nodes.
     */
    enable_detailed_stats: z.boolean().default(true),
    /** Starts even with a listener beyond loopback that takes no credentials. */
    allow_insecure: z.boolean().default(false),
    http2: http2Limits.prefault({}),
    /**
     * Requests for a node whose tunnels are all at their stream limit wait in a queue per node, at
     * most `max_per_node` of them and for at most `timeout`; beyond either, 503 with Retry-After.
     */
    pending_requests: z
      .strictObject({
        max_per_node: z.int().min(0).max(1_000_000).default(1024),
        timeout: duration(0, 300_000).prefault('5s'),
      })
      .prefault({}),
    /**
     * The gauges of a node or cluster with no tunnels left read 0, as in Envoy, until more than
     * this many such gauges are kept; then the oldest are removed, so that a stream of distinct ids
     * cannot grow the stats without bound.
     */
    max_departed_stats: z.int().min(0).max(10_000_000).default(10_000),
    /**
     * Streams to a node go over every one of its tunnels, the least loaded first, instead of one
     * HTTP/2 connection until it is at its stream limit (the protocol reference's recommendation,
     * and Envoy's pool). Each tunnel is its own TCP connection with its own HTTP/2 windows, so a
     * lost segment or a bulk transfer holds up only its own streams; every tunnel in use leaves
     * the idle pool for good (the initiator replaces it only when it closes). Default false.
     */
    use_all_tunnels: z.boolean().default(false),
    admin: admin.optional(),
    lifecycle_log: lifecycleLog.optional(),
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
      /** Upgrade mode: require `upgrade: reverse-tunnel` (else 426) and answer 101. */
      use_http_upgrade: z.boolean().default(false),
      /** When set, the handshake's upstream-cluster-name header must equal it (else 400). */
      required_cluster_name: identifier.optional(),
      /** Expected ids, each a literal or %REQ(header)%; a claimed id that differs gets 403. */
      validation: z
        .strictObject({
          node_id: expectedValue.optional(),
          cluster_id: expectedValue.optional(),
          tenant_id: expectedValue.optional(),
        })
        .optional(),
      /** Tunnels one node (one tenant's node under isolation) may hold; more get 429. */
      max_tunnels_per_node: z.int().min(1).max(100_000).optional(),
      /** Tunnels the responder holds in all; more get 429. */
      max_tunnels: z.int().min(1).max(1_000_000).default(100_000),
      /** TLS on the tunnel listener, kept for the whole tunnel. */
      tls: serverTls.optional(),
      /**
       * Credentials an initiator must present; with any set, a handshake without a valid one gets
       * 401 (the same answer for an unknown id and a bad secret).
       */
      auth: z
        .strictObject({
          /** A JWT (Envoy's jwt_validator): `exp` required; ids optionally bound to claims. */
          jwt: z
            .strictObject({
              issuer: z.string().min(1),
              audiences: z.array(z.string().min(1)).min(1).optional(),
              jwks_file: filePath,
              token_header: headerName.default('authorization'),
              clock_skew: duration(0, 3_600_000).prefault('60s'),
              /** Claims the claimed ids must equal, e.g. { node_id: sub }. */
              claims: z
                .strictObject({
                  node_id: z.string().min(1).optional(),
                  cluster_id: z.string().min(1).optional(),
                  tenant_id: z.string().min(1).optional(),
                })
                .optional(),
            })
            .optional(),
          /** Static per-node tokens (`authorization: Bearer <token>`), stored as SHA-256. */
          tokens: z
            .array(z.strictObject({ node_id: identifier, sha256: sha256Hex }))
            .min(1)
            .optional(),
          /**
           * The client certificate (tls.client_ca_file) must name the claimed ids: `uri_san` is a
           * template such as `spiffe://{tenant_id}/{cluster_id}/{node_id}`; `dns_san` or
           * `common_name` set to `node_id` binds the node id to a DNS SAN or the subject CN.
           */
          client_certificate: z
            .strictObject({
              uri_san: z.string().min(1).optional(),
              dns_san: z.literal('node_id').optional(),
              common_name: z.literal('node_id').optional(),
            })
            .optional(),
        })
        .optional(),
      /** The Retry-After sent with that 429. */
      connection_limit_retry_after: duration(1000, 3_600_000).prefault('10s'),
    }),
    egress_listeners: z
      .array(
        z.strictObject({
          address: listenAddress,
          /** Names the listener in its stats: `http.<stat_prefix>.…` (Envoy's HCM stat_prefix). */
          stat_prefix: identifier.default('egress'),
          /**
           * One record per request through a tunnel (docs/logging.md), to each entry's file
           * (`/dev/stdout` and `/dev/stderr` are the process's own). Default: none.
           */
          access_log: z.array(accessLogEntry).min(1).optional(),
          /**
           * Request headers that name the host id, tried in order; the first present wins. A value
           * that names a known cluster picks one of its nodes round robin, otherwise it names a node.
           */
          host_id_headers: z
            .array(headerName)
            .min(1)
            .default([...defaultHostIdHeaders]),
          /**
           * The answer to a request that names no host id: 400 (revtun's default: the caller must
           * send a routing header), or 503 as Envoy answers (its cluster finds no host).
           */
          no_host_id_status: z.union([z.literal(400), z.literal(503)]).default(400),
          /** With tenant isolation: request headers that name the tenant, tried in order. */
          tenant_id_headers: z.array(headerName).min(1).optional(),
          /** A Lua script whose envoy_on_request(request_handle) runs before routing. */
          lua: z
            .strictObject({
              inline_code: z.string().min(1),
              /** Lua instructions one call may run before it is stopped. */
              max_instructions: z.int().min(1000).max(1_000_000_000).default(10_000_000),
            })
            .optional(),
          /** Routes to the tunnels, first match wins; other paths get 404. */
          routes: z
            .array(
              z
                .strictObject({
                  ...routeMatch,
                  /** Overrides the listener's host_id_headers for this route. */
                  host_id_headers: z.array(headerName).min(1).optional(),
                  /** Overrides the listener's tenant_id_headers for this route. */
                  tenant_id_headers: z.array(headerName).min(1).optional(),
                  /** The name of this route's target in stats: `cluster.<name>.upstream_rq_total`. */
                  cluster: identifier.default('reverse_connection_cluster'),
                })
                .superRefine(exactlyOneMatch),
            )
            .min(1)
            .default([{ prefix: '/', cluster: 'reverse_connection_cluster' }])
            .superRefine(routesInOrder),
          /** How long a request may take from its first byte to its last (Node's requestTimeout). */
          request_timeout: duration(1000, 3_600_000).prefault('300s'),
          /** How long a caller may take to send its headers (Node's headersTimeout). */
          headers_timeout: duration(1000, 300_000).prefault('60s'),
          /**
           * How long the initiator may take to send the response headers once the request is on
           * the tunnel; after it the caller gets 504 and the stream is reset. A response that has
           * begun may stream for as long as it likes.
           */
          response_timeout: duration(100, 3_600_000).prefault('60s'),
          /**
           * A WebSocket with no bytes either way for this long is closed (the caller's connection
           * or stream reset, the tunnel stream cancelled), as Envoy's stream_idle_timeout (also
           * 5 min) closes an idle upgraded stream. Applications that idle longer send pings. `0s`:
           * no limit.
           */
          websocket_idle_timeout: duration(0, 86_400_000).prefault('5m'),
          /** Largest request head, bytes; beyond it 431. */
          max_header_bytes: z
            .int()
            .min(1024)
            .max(1024 * 1024)
            .default(16 * 1024),
          /** Largest request body, bytes; beyond it 413. Unlimited when absent. */
          max_body_bytes: z.int().min(0).optional(),
          /**
           * HTTPS on the egress listener, e.g. for client certificates: HTTP/2 and HTTP/1.1 by
           * ALPN (`h2`, `http/1.1`), or HTTP/1.1 only with `http2.enabled: false`.
           */
          tls: serverTls.optional(),
          /**
           * HTTP/2 for callers (docs/egress.md). On by default: h2c with prior knowledge beside
           * HTTP/1.1 on a cleartext port (the connection preface decides), ALPN `h2` with TLS.
           * The limits bound what one caller's connection may cost before it authenticates.
           */
          http2: z
            .strictObject({
              /** Speak HTTP/2 to callers that ask for it. Default true. */
              enabled: z.boolean().default(true),
              /** SETTINGS_MAX_CONCURRENT_STREAMS announced to a caller. Default 100. */
              max_concurrent_streams: z.int().min(1).max(10_000).default(100),
              /** Memory one caller session may use before its new streams are refused, MiB. Default 10. */
              max_session_memory: z.int().min(1).max(1024).default(10),
              /** Invalid frames tolerated before a caller's session is closed. Default 100. */
              max_invalid_frames: z.int().min(0).max(100_000).default(100),
              /** Streams refused before a caller's session is closed. Default 100. */
              max_rejected_streams: z.int().min(0).max(100_000).default(100),
              /** Receive window announced per stream (SETTINGS_INITIAL_WINDOW_SIZE), bytes. Default 1 MiB. */
              stream_window: windowSize(1024 * 1024),
              /** Receive window of a caller's whole session (WINDOW_UPDATE on stream 0), bytes. Default 4 MiB. */
              connection_window: windowSize(4 * 1024 * 1024),
              /**
               * A caller's session with no frame at all for this long is closed (GOAWAY). Default
               * 300s. Streams that are quiet but open (a server-sent-events response between two
               * events) keep nothing alive: PING or data does.
               */
              idle_timeout: duration(1000, 3_600_000).prefault('300s'),
            })
            .prefault({}),
          /**
           * Headers that tell the local service how the request reached revtun (docs/egress.md),
           * added after the request script ran.
           */
          forwarded_headers: z
            .strictObject({
              /**
               * `x-forwarded` (default): `x-forwarded-for`, `-proto`, `-host`. `forwarded`: one
               * RFC 7239 `forwarded` element (`for=…;proto=…;host=…`). `none`: neither.
               */
              mode: z.enum(['x-forwarded', 'forwarded', 'none']).default('x-forwarded'),
              /** Add `via: 1.1 revtun` (`2 revtun` for an HTTP/2 caller), after any via. Default true. */
              via: z.boolean().default(true),
              /**
               * What becomes of the caller's own forwarding headers. `append` (default, as nginx's
               * `$proxy_add_x_forwarded_for` and Envoy's `use_remote_address`): the caller's
               * address is appended to its `x-forwarded-for` (or `forwarded`), and `-proto`/`-host`
               * are set by revtun. `replace`: the caller's are dropped, only revtun's are sent.
               * `trust`: as append, but a `-proto`/`-host` the caller sent is kept (revtun behind a
               * proxy of yours).
               */
              incoming: z.enum(['append', 'replace', 'trust']).default('append'),
            })
            .prefault({}),
          /**
           * Callers that may use the listener; when set, a request must authenticate as one of
           * them and may reach only what that caller's allow-lists name.
           */
          callers: z
            .array(
              z
                .strictObject({
                  name: identifier,
                  /** SHA-256 (hex) of the caller's bearer token. */
                  token_sha256: sha256Hex.optional(),
                  /** A URI or DNS SAN the caller's client certificate must carry (needs tls). */
                  client_certificate_san: z.string().min(1).optional(),
                  allow: z
                    .strictObject({ tenants: allowList, clusters: allowList, nodes: allowList })
                    .prefault({}),
                })
                .superRefine((caller, context) => {
                  if (
                    (caller.token_sha256 === undefined) ===
                    (caller.client_certificate_san === undefined)
                  ) {
                    context.addIssue({
                      code: 'custom',
                      message:
                        'a caller needs exactly one of token_sha256 or client_certificate_san',
                    });
                  }
                }),
            )
            .min(1)
            .optional(),
          /** The answer to a refused caller: 403, or 404 to look like "no such node". */
          refused_status: z.union([z.literal(403), z.literal(404)]).default(403),
        }),
      )
      .min(1),
    /**
     * Raw TCP listeners (docs/tcp-and-websocket.md): each accepted connection becomes a CONNECT
     * stream (docs/streams.md §3) to the node `host_id` names, whose initiator connects it to its
     * TCP target named `target`. No caller authentication: beyond loopback only with
     * allow_insecure.
     */
    tcp_listeners: z
      .array(
        z.strictObject({
          address: listenAddress,
          /** Names the listener in its stats: `tcp.<stat_prefix>.…` (Envoy's tcp_proxy stat_prefix). */
          stat_prefix: identifier,
          /** The node or cluster id every connection goes to (a cluster picks a node round robin). */
          host_id: identifier,
          /** The tenant of `host_id`; required with enable_tenant_isolation, refused without. */
          tenant_id: identifier.optional(),
          /** The name of the initiator's TCP target (`tcp_targets[].name`), sent as `:authority`. */
          target: identifier,
          /** Connections open at once; one more is closed at once (`downstream_cx_overflow`). */
          max_connections: z.int().min(1).max(1_000_000).default(1024),
          /** From accepting a connection to the initiator's 200; after it the connection closes. */
          connect_timeout: duration(100, 300_000).prefault('10s'),
          /**
           * A connection with no bytes either way for this long is closed (and its stream reset).
           * Default 1h; `0s` turns it off.
           */
          idle_timeout: duration(0, 86_400_000).prefault('1h'),
          /**
           * One record per connection when it closes (docs/logging.md): method CONNECT, path the
           * target, protocol TCP, status 200 once the initiator connected it, bytes each way.
           */
          access_log: z.array(accessLogEntry).min(1).optional(),
        }),
      )
      .default([]),
  })
  .superRefine((config, context) => {
    const { tunnel_listener: tunnel } = config;
    if (tunnel.auth?.client_certificate !== undefined && tunnel.tls?.client_ca_file === undefined) {
      context.addIssue({
        code: 'custom',
        path: ['tunnel_listener', 'auth', 'client_certificate'],
        message: 'binding ids to the client certificate needs tls.client_ca_file (mTLS)',
      });
    }
    config.egress_listeners.forEach((listener, index) => {
      listener.callers?.forEach((caller, callerIndex) => {
        if (
          caller.client_certificate_san !== undefined &&
          listener.tls?.client_ca_file === undefined
        ) {
          context.addIssue({
            code: 'custom',
            path: ['egress_listeners', index, 'callers', callerIndex, 'client_certificate_san'],
            message:
              'a caller known by its client certificate needs tls.client_ca_file on the listener',
          });
        }
      });
    });
    if (!config.enable_tenant_isolation) return;
    config.egress_listeners.forEach((listener, index) => {
      listener.routes.forEach((route, routeIndex) => {
        if ((route.tenant_id_headers ?? listener.tenant_id_headers) === undefined) {
          context.addIssue({
            code: 'custom',
            path: ['egress_listeners', index, 'routes', routeIndex],
            message:
              'enable_tenant_isolation needs a tenant source: set tenant_id_headers on the egress listener or the route',
          });
        }
      });
    });
  })
  .superRefine((config, context) => {
    // A TCP listener's tenant is its own config (a raw connection carries no tenant header).
    config.tcp_listeners.forEach((listener, index) => {
      if (config.enable_tenant_isolation === (listener.tenant_id !== undefined)) return;
      context.addIssue({
        code: 'custom',
        path: ['tcp_listeners', index, 'tenant_id'],
        message: config.enable_tenant_isolation
          ? 'with enable_tenant_isolation a tcp listener must name the tenant_id of its host_id'
          : 'tenant_id needs enable_tenant_isolation',
      });
    });
  });

export type InitiatorConfigInput = z.input<typeof initiatorSchema>;
export type InitiatorConfig = DeepReadonly<z.output<typeof initiatorSchema>>;
export type ResponderConfigInput = z.input<typeof responderSchema>;
export type ResponderConfig = DeepReadonly<z.output<typeof responderSchema>>;
export type RemoteClusterConfig = InitiatorConfig['remote_clusters'][number];
export type LocalRouteConfig = InitiatorConfig['local_routes'][number];
export type TcpTargetConfig = InitiatorConfig['tcp_targets'][number];
export type EgressListenerConfig = ResponderConfig['egress_listeners'][number];
export type TunnelListenerConfig = ResponderConfig['tunnel_listener'];
export type TcpListenerConfig = ResponderConfig['tcp_listeners'][number];

type DeepReadonly<T> = T extends (infer U)[]
  ? ReadonlyArray<DeepReadonly<U>>
  : T extends object
    ? { readonly [K in keyof T]: DeepReadonly<T[K]> }
    : T;
