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

/** Handshake header names for a header prefix, lower-case (reference §2 table). */
export function handshakeHeaderNames(prefix: string = defaultHeaderPrefix) {
  const base = `${prefix.toLowerCase()}-reverse-tunnel`;
  return {
    nodeId: `${base}-node-id`,
    clusterId: `${base}-cluster-id`,
    tenantId: `${base}-tenant-id`,
    upstreamClusterName: `${base}-upstream-cluster-name`,
    initiationTime: `${base}-initiation-time`,
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
}

/**
 * Builds the request bytes in Envoy's order and case: host, identity headers, content-length
 * (reference §2 "Order and case"), so byte diffs against Envoy captures stay trivial.
 */
export function buildHandshakeRequest(options: HandshakeRequestOptions): Buffer {
  const names = handshakeHeaderNames(options.headerPrefix);
  const lines = [
    `GET ${options.path ?? defaultRequestPath} HTTP/1.1`,
    `host: ${options.host}`,
    `${names.nodeId}: ${options.identity.nodeId}`,
    `${names.clusterId}: ${options.identity.clusterId}`,
    `${names.tenantId}: ${options.identity.tenantId}`,
  ];
  if (options.upstreamClusterName !== undefined) {
    lines.push(`${names.upstreamClusterName}: ${options.upstreamClusterName}`);
  }
  if (options.initiationTimeMs !== undefined) {
    lines.push(`${names.initiationTime}: ${Math.trunc(options.initiationTimeMs)}`);
  }
  lines.push('content-length: 0', '', '');
  return Buffer.from(lines.join('\r\n'), 'latin1');
}

// ---------------------------------------------------------------------------------------------
// Responder side
// ---------------------------------------------------------------------------------------------

/** `reverse_tunnel.handshake.<name>` counters (reference §3), with no stat prefix. */
export type HandshakeCounter = 'accepted' | 'parse_error' | 'body_rejected' | 'timeout';

export interface HandshakeRejection {
  readonly status: number;
  readonly body: string;
  /** The counter this rejection increments, if any (a wrong path increments none). */
  readonly counter: HandshakeCounter | undefined;
}

export interface AcceptedHandshake {
  readonly identity: Identity;
  readonly upstreamClusterName: string | undefined;
  /** Parsed initiation time, or 0 when absent or unparseable (Envoy logs a warning and reads 0). */
  readonly initiationTimeMs: number;
  /** Set when the initiation-time header was present but not a decimal int64. */
  readonly badInitiationTime: string | undefined;
}

export type HandshakeDecision =
  | { readonly accepted: true; readonly handshake: AcceptedHandshake }
  | { readonly accepted: false; readonly rejection: HandshakeRejection };

export interface HandshakeValidationOptions {
  readonly requestPath: string;
  readonly requestMethod: string;
  readonly headerPrefix: string;
}

const reject = (
  status: number,
  body: string,
  counter: HandshakeCounter | undefined,
): HandshakeDecision => ({ accepted: false, rejection: { status, body, counter } });

/**
 * Decides on a parsed handshake request. Checks run in Envoy's order and the first match decides
 * (reference §3, source/extensions/filters/network/reverse_tunnel/reverse_tunnel_filter.cc).
 */
export function validateHandshakeRequest(
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
  for (const [what, value] of [
    ['node-id', nodeId],
    ['cluster-id', clusterId],
    ['tenant-id', tenantId],
  ] as const) {
    if (!isValidIdentifier(value)) {
      return reject(
        400,
        `Invalid ${what} header value: identifiers are 1-128 characters of [A-Za-z0-9._-]`,
        'parse_error',
      );
    }
  }
  const upstreamClusterName = headerValues(head.headers, names.upstreamClusterName)[0];
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
    },
  };
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

const reasonPhrases: Record<number, string> = {
  400: 'Bad Request',
  404: 'Not Found',
  431: 'Request Header Fields Too Large',
};

/**
 * A rejection: plain text with an explicit content-length and `connection: close` (reference §3
 * "Rejections"); the responder closes the connection once this is flushed.
 */
export function buildHandshakeRejection(rejection: HandshakeRejection): Buffer {
  const body = Buffer.from(rejection.body, 'utf8');
  const head =
    `HTTP/1.1 ${rejection.status} ${reasonPhrases[rejection.status] ?? 'Error'}\r\n` +
    'content-type: text/plain\r\n' +
    `content-length: ${body.length}\r\n` +
    'connection: close\r\n\r\n';
  return Buffer.concat([Buffer.from(head, 'latin1'), body]);
}

// ---------------------------------------------------------------------------------------------
// Initiator side
// ---------------------------------------------------------------------------------------------

export type HandshakeOutcome =
  { readonly ok: true } | { readonly ok: false; readonly reason: string; readonly status: number };

/**
 * Judges the responder's answer (reference §4): success is a 200 without a body; anything else is
 * a failure with reason `http.<status>`. The response is parsed, never byte-compared.
 */
export function evaluateHandshakeResponse(head: ResponseHead): HandshakeOutcome {
  if (head.status !== 200) {
    return { ok: false, reason: `http.${head.status}`, status: head.status };
  }
  const lengths = headerValues(head.headers, 'content-length');
  const declaresBody =
    headerValues(head.headers, 'transfer-encoding').length > 0 ||
    lengths.some((value) => !/^0+$/.test(value));
  if (declaresBody) return { ok: false, reason: 'http.200_with_body', status: 200 };
  return { ok: true };
}
