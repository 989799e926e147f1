/**
 * The reverse-tunnel handshake: one HTTP/1.1 request from the initiator, one response from the
 * responder (protocol reference §2–§4). Pure: byte builders and decisions, no sockets.
 */
import {
  headerValues,
  type HeaderList,
  type RequestHead,
  type ResponseHead,
} from './http1-head.ts';

export const defaultRequestPath = '/reverse_connections/request';
export const defaultRequestMethod = 'GET';
/** Envoy's header prefix (`x-envoy` unless a bootstrap `header_prefix` changes it). */
export const defaultHeaderPrefix = 'x-envoy';

/** The identity an initiator claims: node, cluster and tenant ids. */
export interface Identity {
  readonly nodeId: string;
  readonly clusterId: string;
  readonly tenantId: string;
}

/** Upgrade mode's fixed token (reference §2; #45330, to make it configurable, was closed). */
export const upgradeToken = 'reverse-tunnel';

/** Handshake header names for a header prefix, lower-case (reference §2 table). */
export function handshakeHeaderNames(prefix: string = defaultHeaderPrefix) {
  const base = `${prefix.toLowerCase()}-reverse-tunnel`;
  return {
    nodeId: `${base}-node-id`,
    clusterId: `${base}-cluster-id`,
    tenantId: `${base}-tenant-id`,
    upstreamClusterName: `${base}-upstream-cluster-name`,
    initiationTime: `${base}-initiation-time`,
    workerId: `${base}-worker-id`,
    connectionId: `${base}-connection-id`,
    /**
     * revtun's own: "keep this TLS session for the whole tunnel" (architecture decision 8). The
     * initiator sends `true`; a revtun responder that keeps TLS echoes it in the 200. Envoy ignores
     * it and never confirms.
     */
    keepTls: `${base}-keep-tls`,
  } as const;
}

/**
 * Identifiers appear in stat names and log lines, so revtun limits them to `[A-Za-z0-9._-]`
 * (reference §2 "Identifiers"), which also rules out `:` and `@` (reference §7).
 */
export const identifierPattern = /^[A-Za-z0-9._-]{1,128}$/;

export function isValidIdentifier(value: string): boolean {
  return identifierPattern.test(value);
}

export interface HandshakeRequestOptions {
  readonly identity: Identity;
  /** The responder as dialled, `ip:port` or `[v6]:port`. */
  readonly host: string;
  readonly path?: string;
  readonly headerPrefix?: string;
  /** The initiator's name for the remote cluster (`@remote_cluster` in `rc://`). */
  readonly upstreamClusterName?: string;
  /** Unix epoch ms at which this tunnel slot's first attempt began; retries keep it. */
  readonly initiationTimeMs?: number;
  /** Upgrade mode: `connection: Upgrade` and `upgrade: reverse-tunnel` after `host`. */
  readonly upgrade?: boolean;
  /** Configured extra headers (e.g. authorization), after the identity headers. */
  readonly extraHeaders?: ReadonlyArray<readonly [name: string, value: string]>;
}

/**
 * Builds the request bytes in Envoy's order and case: host, identity headers, content-length
 * (reference §2 "Order and case"), so byte diffs against Envoy captures stay trivial.
 */
export function buildHandshakeRequest(options: HandshakeRequestOptions): Buffer {
  const names = handshakeHeaderNames(options.headerPrefix);
  const lines = [`GET ${options.path ?? defaultRequestPath} HTTP/1.1`, `host: ${options.host}`];
  if (options.upgrade === true) lines.push('connection: Upgrade', `upgrade: ${upgradeToken}`);
  lines.push(
    `${names.nodeId}: ${options.identity.nodeId}`,
    `${names.clusterId}: ${options.identity.clusterId}`,
    `${names.tenantId}: ${options.identity.tenantId}`,
  );
  if (options.upstreamClusterName !== undefined) {
    lines.push(`${names.upstreamClusterName}: ${options.upstreamClusterName}`);
  }
  if (options.initiationTimeMs !== undefined) {
    lines.push(`${names.initiationTime}: ${Math.trunc(options.initiationTimeMs)}`);
  }
  for (const [name, value] of options.extraHeaders ?? []) lines.push(`${name}: ${value}`);
  lines.push('content-length: 0', '', '');
  return Buffer.from(lines.join('\r\n'), 'latin1');
}

// ---------------------------------------------------------------------------------------------
// Responder side
// ---------------------------------------------------------------------------------------------

/** `reverse_tunnel.handshake.<name>` counters (reference §3, §9), with no stat prefix. */
export const handshakeCounters = [
  'accepted',
  'parse_error',
  'validation_failed',
  'rejected',
  'body_rejected',
  'timeout',
  // Envoy's JWT counter; then revtun's: a bad static token or client certificate, a TLS handshake
  // that failed, and an identity that collides with a connected one (409).
  'jwt_denied',
  'auth_denied',
  'tls_error',
  'conflict',
] as const;
export type HandshakeCounter = (typeof handshakeCounters)[number];

export interface HandshakeRejection {
  readonly status: number;
  readonly body: string;
  /** The counter this rejection increments, if any (a wrong path increments none). */
  readonly counter: HandshakeCounter | undefined;
  /** Extra response headers: `upgrade` on 426, `retry-after` on 429. */
  readonly headers?: ReadonlyArray<readonly [name: string, value: string]>;
}

export interface AcceptedHandshake {
  readonly identity: Identity;
  readonly upstreamClusterName: string | undefined;
  /** Parsed initiation time, or 0 when absent or unparseable (Envoy logs a warning and reads 0). */
  readonly initiationTimeMs: number;
  /** Set when the initiation-time header was present but not a decimal int64. */
  readonly badInitiationTime: string | undefined;
  /** The initiator's optional worker-id and connection-id headers, for lifecycle logs. */
  readonly initiatorWorkerId: string | undefined;
  readonly initiatorConnectionId: string | undefined;
  /** The initiator asked to keep the TLS session for the whole tunnel (keep-tls: true). */
  readonly keepTls: boolean;
}

export type HandshakeDecision =
  | { readonly accepted: true; readonly handshake: AcceptedHandshake }
  | { readonly accepted: false; readonly rejection: HandshakeRejection };

/** What a claimed id is compared with: a literal, or a header of the handshake request. */
export type ExpectedId = { readonly literal: string } | { readonly header: string };

export interface HandshakeValidationOptions {
  readonly requestPath: string;
  readonly requestMethod: string;
  readonly headerPrefix: string;
  /** Upgrade mode: `upgrade: reverse-tunnel` required (else 426). */
  readonly useHttpUpgrade?: boolean;
  /** When set, the upstream-cluster-name header must be present and equal. */
  readonly requiredClusterName?: string | undefined;
  /** Expected ids; a claimed id that differs gets 403. */
  readonly validation?:
    | {
        readonly node_id?: ExpectedId | undefined;
        readonly cluster_id?: ExpectedId | undefined;
        readonly tenant_id?: ExpectedId | undefined;
      }
    | undefined;
  /** Tunnels a node may hold (per tenant+node under isolation); more get 429. */
  readonly maxTunnelsPerNode?: number | undefined;
  /** Seconds for the Retry-After of that 429. */
  readonly retryAfterSeconds?: number;
  /** How many tunnels this identity's node holds now (for the per-node limit). */
  readonly tunnelsOf?: (identity: Identity) => number;
}

const reject = (
  status: number,
  body: string,
  counter: HandshakeCounter | undefined,
  headers?: ReadonlyArray<readonly [string, string]>,
): HandshakeDecision => ({
  accepted: false,
  rejection: headers === undefined ? { status, body, counter } : { status, body, counter, headers },
});

/**
 * Decides on a parsed handshake request. Checks run in Envoy's order and the first match decides
 * (reference §3, source/extensions/filters/network/reverse_tunnel/reverse_tunnel_filter.cc):
 * `checkHandshakeRequest` (checks 0–6), then credentials (check 7, asynchronous, in the tunnel
 * listener: responder/handshake-auth.ts), then `admitHandshake` (checks 8–9). This runs the two
 * pure halves with no credentials.
 */
export function validateHandshakeRequest(
  head: RequestHead,
  options: HandshakeValidationOptions,
): HandshakeDecision {
  const checked = checkHandshakeRequest(head, options);
  return checked.accepted ? admitHandshake(checked.handshake, head, options) : checked;
}

/** Checks 0–6: the request's shape and the syntax of the ids it claims. */
export function checkHandshakeRequest(
  head: RequestHead,
  options: HandshakeValidationOptions,
): HandshakeDecision {
  // 0. No body: content-length must be absent or 0, and no transfer-encoding.
  const lengths = headerValues(head.headers, 'content-length');
  if (
    headerValues(head.headers, 'transfer-encoding').length > 0 ||
    lengths.some((value) => !/^0+$/.test(value))
  ) {
    return reject(400, 'Reverse tunnel handshake must not carry a body', 'body_rejected');
  }
  // 1. Method (case-insensitive) and path (byte for byte, so a query string is a mismatch).
  if (
    head.method.toUpperCase() !== options.requestMethod.toUpperCase() ||
    head.target !== options.requestPath
  ) {
    return reject(404, 'Not a reverse tunnel request', undefined);
  }
  // 2. Upgrade mode: the upgrade token, case-insensitively.
  if (options.useHttpUpgrade === true) {
    const upgrade = headerValues(head.headers, 'upgrade').join(',').trim().toLowerCase();
    if (upgrade !== upgradeToken) {
      return reject(426, 'Upgrade: reverse-tunnel required', 'parse_error', [
        ['upgrade', upgradeToken],
      ]);
    }
  }
  // 3. Identity headers present, each exactly once.
  const names = handshakeHeaderNames(options.headerPrefix);
  const nodeId = single(head.headers, names.nodeId);
  const clusterId = single(head.headers, names.clusterId);
  const tenantId = single(head.headers, names.tenantId);
  if (nodeId === undefined || clusterId === undefined || tenantId === undefined) {
    return reject(400, 'Missing required reverse tunnel headers', 'parse_error');
  }
  if (nodeId === null || clusterId === null || tenantId === null) {
    return reject(400, 'Duplicate reverse tunnel identity headers', 'parse_error');
  }
  // 4. Empty ids. Envoy's newest responders reject an empty tenant; an empty node or cluster id
  // would be dropped by Envoy's socket manager after the 200, so revtun says so up front.
  if (tenantId === '') return reject(400, 'Empty tenant-id header value', 'parse_error');
  if (nodeId === '') return reject(400, 'Empty node-id header value', 'parse_error');
  if (clusterId === '') return reject(400, 'Empty cluster-id header value', 'parse_error');
  // 5. Identifiers. Envoy bans ':' under tenant isolation (it joins keys as tenant:node); revtun
  // bans it always, and limits ids to [A-Za-z0-9._-] because they appear in stat names.
  for (const [what, value] of [
    ['node-id', nodeId],
    ['cluster-id', clusterId],
    ['tenant-id', tenantId],
  ] as const) {
    if (value.includes(':')) {
      return reject(
        400,
        `Reverse tunnel identifiers must not contain ':' (${what})`,
        'parse_error',
      );
    }
    if (!isValidIdentifier(value)) {
      return reject(
        400,
        `Invalid ${what} header value: identifiers are 1-128 characters of [A-Za-z0-9._-]`,
        'parse_error',
      );
    }
  }
  // A host id names a node or a cluster; one that is both could not be told apart (revtun's).
  if (nodeId === clusterId) {
    return reject(400, 'Reverse tunnel node-id and cluster-id must differ', 'parse_error');
  }
  // 6. The initiator's name for this responder's cluster.
  const upstreamClusterName = headerValues(head.headers, names.upstreamClusterName)[0];
  if (options.requiredClusterName !== undefined) {
    if (upstreamClusterName === undefined) {
      return reject(400, 'Missing upstream cluster name header', 'parse_error');
    }
    if (upstreamClusterName !== options.requiredClusterName) {
      return reject(400, 'Cluster name mismatch', 'validation_failed');
    }
  }
  const initiationTime = headerValues(head.headers, names.initiationTime)[0];
  let initiationTimeMs = 0;
  let badInitiationTime: string | undefined;
  if (initiationTime !== undefined) {
    const parsed = /^-?\d{1,19}$/.test(initiationTime) ? Number(initiationTime) : NaN;
    if (Number.isSafeInteger(parsed)) initiationTimeMs = parsed;
    else badInitiationTime = initiationTime;
  }
  return {
    accepted: true,
    handshake: {
      identity: { nodeId, clusterId, tenantId },
      upstreamClusterName,
      initiationTimeMs,
      badInitiationTime,
      initiatorWorkerId: headerValues(head.headers, names.workerId)[0],
      initiatorConnectionId: headerValues(head.headers, names.connectionId)[0],
      keepTls: headerValues(head.headers, names.keepTls).some(
        (value) => value.trim().toLowerCase() === 'true',
      ),
    },
  };
}

/** Checks 8–9, on a request that passed `checkHandshakeRequest` and any credentials. */
export function admitHandshake(
  handshake: AcceptedHandshake,
  head: RequestHead,
  options: HandshakeValidationOptions,
): HandshakeDecision {
  const { identity } = handshake;
  const { nodeId, clusterId, tenantId } = identity;
  // 8. The per-node tunnel limit, with a Retry-After (reference §4 "Retry-After", §12 #9).
  if (
    options.maxTunnelsPerNode !== undefined &&
    (options.tunnelsOf?.(identity) ?? 0) >= options.maxTunnelsPerNode
  ) {
    return reject(429, 'rejected', 'rejected', [
      ['retry-after', String(options.retryAfterSeconds ?? 10)],
    ]);
  }
  // 9. Expected ids. A missing header renders as "-", and an empty or "-" expectation never
  // matches (the newest Envoy's behaviour).
  for (const [key, claimed] of [
    ['node_id', nodeId],
    ['cluster_id', clusterId],
    ['tenant_id', tenantId],
  ] as const) {
    const expected = options.validation?.[key];
    if (expected === undefined) continue;
    const value =
      'literal' in expected
        ? expected.literal
        : (headerValues(head.headers, expected.header)[0] ?? '-');
    if (value === '' || value === '-' || value !== claimed) {
      return reject(403, 'validation_failed', 'validation_failed');
    }
  }
  return { accepted: true, handshake };
}

/** The single value of a header: undefined when absent, null when repeated. */
function single(headers: HeaderList, name: string): string | undefined | null {
  const [first, ...others] = headerValues(headers, name);
  if (first === undefined) return undefined;
  return others.length === 0 ? first : null;
}

/**
 * Exactly the bytes Envoy's test responder sends and Envoy initiators accept (reference §3
 * "Success"). No `Connection: close`: the socket becomes the tunnel.
 */
export const handshakeAcceptedResponse = Buffer.from(
  'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n',
  'latin1',
);

/**
 * The success of a revtun responder that keeps the TLS session, confirming the initiator's keep-tls
 * header: the 200 (or Upgrade mode's 101) with that header added. Sent only when asked, so an Envoy
 * initiator always gets the exact bytes of `handshakeAcceptedResponse` / `handshakeUpgradedResponse`.
 */
export function handshakeKeptTlsResponse(
  prefix: string = defaultHeaderPrefix,
  upgrade = false,
): Buffer {
  const confirmation = `${handshakeHeaderNames(prefix).keepTls}: true\r\n`;
  const head = upgrade
    ? `HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: ${upgradeToken}\r\n`
    : 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n';
  return Buffer.from(`${head}${confirmation}\r\n`, 'latin1');
}

/** True if a handshake response confirms keep-tls (the initiator's check). */
export function confirmsKeptTls(head: ResponseHead, prefix: string = defaultHeaderPrefix): boolean {
  return headerValues(head.headers, handshakeHeaderNames(prefix).keepTls).some(
    (value) => value.trim().toLowerCase() === 'true',
  );
}

/** Upgrade mode's success (reference §3 "Upgrade mode"); tunnel bytes follow at once. */
export const handshakeUpgradedResponse = Buffer.from(
  `HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: ${upgradeToken}\r\n\r\n`,
  'latin1',
);

const reasonPhrases: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  409: 'Conflict',
  426: 'Upgrade Required',
  429: 'Too Many Requests',
  431: 'Request Header Fields Too Large',
};

/**
 * A rejection: plain text with an explicit content-length and `connection: close` (reference §3
 * "Rejections"); the responder closes the connection once this is flushed.
 */
export function buildHandshakeRejection(rejection: HandshakeRejection): Buffer {
  const body = Buffer.from(rejection.body, 'utf8');
  const extra = (rejection.headers ?? []).map(([name, value]) => `${name}: ${value}\r\n`).join('');
  const head =
    `HTTP/1.1 ${rejection.status} ${reasonPhrases[rejection.status] ?? 'Error'}\r\n` +
    extra +
    'content-type: text/plain\r\n' +
    `content-length: ${body.length}\r\n` +
    'connection: close\r\n\r\n';
  return Buffer.concat([Buffer.from(head, 'latin1'), body]);
}

// ---------------------------------------------------------------------------------------------
// Initiator side
// ---------------------------------------------------------------------------------------------

export type HandshakeOutcome =
  | { readonly ok: true }
  | {
      readonly ok: false;
      readonly reason: string;
      readonly status: number;
      /** A usable Retry-After (429 or 503), in seconds, clamped to 3600. */
      readonly retryAfterSeconds: number | undefined;
    };

/**
 * Judges the responder's answer (reference §4): success is a 200 without a body, or a 101 in
 * Upgrade mode; anything else, including 200 in Upgrade mode and 101 outside it, is a failure with
 * reason `http.<status>`. The response is parsed, never byte-compared.
 */
export function evaluateHandshakeResponse(
  head: ResponseHead,
  options: { readonly upgrade?: boolean } = {},
): HandshakeOutcome {
  const expected = options.upgrade === true ? 101 : 200;
  if (head.status !== expected) {
    return {
      ok: false,
      reason: `http.${head.status}`,
      status: head.status,
      retryAfterSeconds: head.status === 429 || head.status === 503 ? retryAfter(head) : undefined,
    };
  }
  const lengths = headerValues(head.headers, 'content-length');
  const declaresBody =
    headerValues(head.headers, 'transfer-encoding').length > 0 ||
    lengths.some((value) => !/^0+$/.test(value));
  if (declaresBody) {
    return {
      ok: false,
      reason: `http.${expected}_with_body`,
      status: expected,
      retryAfterSeconds: undefined,
    };
  }
  return { ok: true };
}

/**
 * Retry-After in delta-seconds; zero, unparseable values and HTTP-dates are ignored, and the value
 * is clamped to 3600 s (reference §4, as Envoy).
 */
function retryAfter(head: ResponseHead): number | undefined {
  const value = headerValues(head.headers, 'retry-after')[0]?.trim();
  if (value === undefined || !/^\d{1,10}$/.test(value)) return undefined;
  const seconds = Number(value);
  return seconds === 0 ? undefined : Math.min(seconds, 3600);
}
