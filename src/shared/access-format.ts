/**
 * An access-log record and its two renderings (docs/logging.md): a JSON object, or text in an
 * Envoy-style format of `%COMMAND%` operators (Envoy's docs, "Access logging: format rules").
 * Here, not in responder/, because the config schema compiles a `text_format` at load so that an
 * unknown operator is a config error with its path.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';

/** What the caller spoke: Envoy's %PROTOCOL% values, and `websocket` for an upgraded request. */
/** `TCP`: a connection to a responder's tcp_listeners (method CONNECT, path its target). */
export type AccessProtocol = 'HTTP/1.0' | 'HTTP/1.1' | 'HTTP/2' | 'websocket' | 'TCP';

/**
 * Envoy's response flags (the ones revtun can have; `%RESPONSE_FLAGS%`, Envoy's
 * `stream_info/utility.cc`): NR no route, UH no healthy upstream (no tunnel for the host id),
 * UF upstream connection failure (no tunnel free), UT upstream request timeout
 * (response_timeout), UC upstream connection termination (the tunnel failed), DC downstream
 * connection termination (the caller went away), UAEX unauthorized (callers), DPE downstream
 * protocol error (a malformed or over-large request), LR local reply (the request script).
 */
export type ResponseFlag =
  'NR' | 'UH' | 'UF' | 'UT' | 'UC' | 'DC' | 'UAEX' | 'DPE' | 'LR' | 'UO' | 'SI';

/** One request's record: filled in as the request goes, written once at its end. */
export class AccessRecord {
  /** Wall-clock start (ms since the epoch) and a monotonic one for the duration. */
  readonly startMs = Date.now();
  readonly startMono = performance.now();
  readonly method: string;
  readonly path: string;
  readonly authority: string | undefined;
  protocol: AccessProtocol;
  readonly requestHeaders: IncomingHttpHeaders;
  readonly callerAddress: string | undefined;
  readonly callerPort: number | undefined;
  hostId: string | undefined = undefined;
  /** The header that named the host id. */
  hostIdHeader: string | undefined = undefined;
  /** The node chosen: the id of the tunnel's node. */
  nodeId: string | undefined = undefined;
  tenant: string | undefined = undefined;
  /** The caller's name (the `callers` entry its credential matched). */
  caller: string | undefined = undefined;
  status = 0;
  responseHeaders: OutgoingHttpHeaders | undefined = undefined;
  flags: ResponseFlag[] = [];
  bytesReceived = 0;
  bytesSent = 0;
  /** Set once the record is written: a request is logged once. */
  durationMs: number | undefined = undefined;

  constructor(request: {
    method: string;
    path: string;
    authority: string | undefined;
    version: string;
    headers: IncomingHttpHeaders;
    socket: { remoteAddress?: string | undefined; remotePort?: number | undefined } | undefined;
  }) {
    this.method = request.method;
    this.path = request.path;
    this.authority = request.authority;
    this.protocol =
      request.version === '2' ? 'HTTP/2' : (`HTTP/${request.version}` as AccessProtocol);
    this.requestHeaders = request.headers;
    this.callerAddress = request.socket?.remoteAddress;
    this.callerPort = request.socket?.remotePort;
  }

  /** Adds a response flag (each once). */
  flag(flag: ResponseFlag): void {
    if (!this.flags.includes(flag)) this.flags.push(flag);
  }

  /** `countSent` as a method bound once, for a 'data' listener on the response body. */
  readonly countSent = (chunk: Buffer): void => {
    this.bytesSent += chunk.length;
  };
}

export interface AccessLogEntryConfig {
  /** A file, or `/dev/stdout` / `/dev/stderr`. */
  readonly path: string;
  readonly format: 'json' | 'text';
  /** The text format; Envoy's default format when absent. */
  readonly text_format?: string | undefined;
}

/**
 * Envoy's default access-log format (Envoy's docs, "Default format string"), with revtun's
 * UPSTREAM_HOST: the node chosen. `%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%` is `-`: revtun sends
 * no such header.
 */
export const defaultTextFormat =
  '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" ' +
  '%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% ' +
  '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" ' +
  '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"';

type Part = (record: AccessRecord) => string;

/** Operators without an argument, and what they print. */
const plainOperators: Readonly<Record<string, Part>> = {
  START_TIME: (record) => new Date(record.startMs).toISOString(),
  PROTOCOL: (record) => record.protocol,
  RESPONSE_CODE: (record) => String(record.status),
  RESPONSE_FLAGS: (record) => (record.flags.length === 0 ? '-' : record.flags.join(',')),
  BYTES_RECEIVED: (record) => String(record.bytesReceived),
  BYTES_SENT: (record) => String(record.bytesSent),
  DURATION: (record) => String(Math.round(record.durationMs ?? 0)),
  DOWNSTREAM_REMOTE_ADDRESS: (record) =>
    record.callerAddress === undefined
      ? '-'
      : `${record.callerAddress.includes(':') ? `[${record.callerAddress}]` : record.callerAddress}:${record.callerPort ?? 0}`,
  DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT: (record) => record.callerAddress ?? '-',
  UPSTREAM_HOST: (record) => record.nodeId ?? '-',
  HOST_ID: (record) => record.hostId ?? '-',
  HOST_ID_HEADER: (record) => record.hostIdHeader ?? '-',
  NODE_ID: (record) => record.nodeId ?? '-',
  TENANT_ID: (record) => record.tenant ?? '-',
  CALLER: (record) => record.caller ?? '-',
};

/** The operators a text format may use, for the docs and the error message. */
export const textOperators: readonly string[] = [
  ...Object.keys(plainOperators),
  'REQ(X)',
  'RESP(X)',
];

/** A request header by Envoy's name: pseudo-headers `:method`, `:path`, `:authority`, `:scheme`. */
function requestHeader(record: AccessRecord, name: string): string | undefined {
  switch (name) {
    case ':method':
      return record.method;
    case ':path':
      return record.path;
    case ':authority':
      return record.authority;
    default:
      return headerText(record.requestHeaders[name]);
  }
}

function headerText(value: string | string[] | number | undefined): string | undefined {
  if (value === undefined) return undefined;
  return Array.isArray(value) ? value.join(',') : String(value);
}

/** `REQ(A?B):N` / `RESP(A)`: the first header present, cut to N characters, `-` if none. */
function headerPart(kind: 'REQ' | 'RESP', argument: string, maxLength: number | undefined): Part {
  const names = argument
    .toLowerCase()
    .split('?')
    .map((name) => name.trim());
  return (record) => {
    let value: string | undefined;
    for (const name of names) {
      value =
        kind === 'REQ' ? requestHeader(record, name) : headerText(record.responseHeaders?.[name]);
      if (value !== undefined) break;
    }
    if (value === undefined) return '-';
    return escapeText(maxLength === undefined ? value : value.slice(0, maxLength));
  };
}

/**
 * Quotes, backslashes and control characters escaped, so a header value can neither end a quoted
 * field early nor start a new line in the log.
 */
function escapeText(value: string): string {
  // eslint-disable-next-line no-control-regex
  return value.replace(/["\\\x00-\x1f\x7f]/g, (char) =>
    char === '"' || char === '\\'
      ? `\\${char}`
      : `\\x${char.charCodeAt(0).toString(16).padStart(2, '0')}`,
  );
}

/** A format that does not compile: the problem, for a config error at the key's path. */
export class TextFormatError extends Error {}

const operatorPattern = /%([A-Z_]+)(?:\(([^)]*)\))?(?::(\d+))?%/g;

/**
 * Compiles a text format into the function that prints one record. `%%` is a literal `%`; an
 * unknown operator, or REQ/RESP without a header name, throws a TextFormatError.
 */
export function compileTextFormat(format: string): (record: AccessRecord) => string {
  const parts: Array<string | Part> = [];
  let last = 0;
  const text = format.replaceAll('%%', '\u0000');
  for (const match of text.matchAll(operatorPattern)) {
    const [whole, name = '', argument, length] = match;
    parts.push(text.slice(last, match.index).replaceAll('\u0000', '%'));
    last = match.index + whole.length;
    const maxLength = length === undefined ? undefined : Number(length);
    if (name === 'REQ' || name === 'RESP') {
      if (argument === undefined || argument.trim() === '')
        throw new TextFormatError(`%${name}(…)% needs a header name, e.g. %${name}(USER-AGENT)%`);
      parts.push(headerPart(name, argument, maxLength));
      continue;
    }
    const operator = plainOperators[name];
    if (operator === undefined || argument !== undefined)
      throw new TextFormatError(
        `unknown operator %${name}${argument === undefined ? '' : `(${argument})`}%; known: ${textOperators.join(', ')}`,
      );
    // Host id, tenant and caller come from what the caller sent: escaped like header values.
    parts.push((record) => escapeText(operator(record)));
  }
  const rest = text.slice(last);
  if (rest.includes('%'))
    throw new TextFormatError(
      `unmatched "%" in "${rest.replaceAll('\u0000', '%%')}" (write %% for a literal %)`,
    );
  parts.push(rest.replaceAll('\u0000', '%'));
  const fixed = parts.filter((part) => part !== '');
  return (record) => {
    let line = '';
    for (const part of fixed) line += typeof part === 'string' ? part : part(record);
    return line;
  };
}

/** The problem with a text format, or undefined if it compiles (for the config schema). */
export function textFormatProblem(format: string): string | undefined {
  try {
    compileTextFormat(format);
    return undefined;
  } catch (error) {
    if (error instanceof TextFormatError) return error.message;
    throw error;
  }
}

/** A record as one JSON object: every field, absent ones as null, names in snake case. */
export function jsonRecord(record: AccessRecord): string {
  const headers = record.requestHeaders;
  return JSON.stringify({
    start_time: new Date(record.startMs).toISOString(),
    method: record.method,
    path: record.path,
    protocol: record.protocol,
    authority: record.authority ?? null,
    host_id: record.hostId ?? null,
    host_id_header: record.hostIdHeader ?? null,
    node_id: record.nodeId ?? null,
    tenant_id: record.tenant ?? null,
    response_code: record.status,
    response_flags: record.flags.length === 0 ? null : record.flags.join(','),
    duration_ms: Math.round((record.durationMs ?? 0) * 1000) / 1000,
    bytes_received: record.bytesReceived,
    bytes_sent: record.bytesSent,
    downstream_remote_address: record.callerAddress ?? null,
    downstream_remote_port: record.callerPort ?? null,
    caller: record.caller ?? null,
    request_id: headerText(headers['x-request-id']) ?? null,
    user_agent: headerText(headers['user-agent']) ?? null,
  });
}
