/**
 * An egress listener: callers send ordinary HTTP/1.1 requests (over TLS with `tls`) naming a node
 * or a cluster in a header; each request goes to that node as an HTTP/2 stream on one of its
 * tunnels.
 *
 * The steps, in order: the header fields are counted (431 past the cap of a tunnel stream) and
 * `host` is required (400), the caller authenticates (`callers`: 401 without valid credentials), a
 * declared body larger than `max_body_bytes` is refused (413), the request script runs, the route
 * is matched (404), the routing headers are read (400 if none, or if one is repeated), the node is
 * resolved among those the caller may reach (503 none connected; `refused_status` when the caller
 * may not reach it), and the request is sent on a session borrowed from the registry.
 *
 * Failure answers are one line of plain text. Once the response has begun, a failure aborts the
 * caller's connection: a truncated body never looks complete. A chunked upload that grows past
 * `max_body_bytes` resets the stream to the initiator (never END_STREAM), and is answered 413 if
 * the response has not begun.
 *
 * Header hygiene: the local service never sees how it was reached. The route's host id and tenant
 * headers and the tunnel identity headers (`<header_prefix>-reverse-tunnel-*`) are not forwarded,
 * nor, on a listener with callers, `authorization`. A header a request script reads to compute a
 * host id (the sandbox's x-node-id → x-computed-host-id) is the script's to remove.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import http2, { type ClientHttp2Stream, type OutgoingHttpHeaders } from 'node:http2';
import https from 'node:https';
import type { Duplex } from 'node:stream';
import { Transform, type TransformCallback } from 'node:stream';
import type { EgressListenerConfig } from '../config/schema.ts';
import { handshakeHeaderNames } from '../protocol/handshake.ts';
import { formatHostPort, type HostPort } from '../shared/address.ts';
import { describeError, RevtunError, isRevtunError } from '../shared/errors.ts';
import { forEachEndToEndHeader } from '../shared/hop-by-hop.ts';
import { maxHeaderListPairs } from '../shared/http2-limits.ts';
import { contentLength, resetStream, watchEndStream } from '../shared/http2-stream.ts';
import { findRoute, pathOf } from '../shared/route-match.ts';
import { closeServer, listen } from '../shared/listen.ts';
import { pump } from '../shared/pump.ts';
import type { Logger } from '../shared/logger.ts';
import type { StatsRegistry } from '../shared/stats.ts';
import { loadServerTls } from '../shared/tls-files.ts';
import {
  EgressCallers,
  mayReach,
  type Authentication,
  type CallerConfig,
} from './egress-callers.ts';
import type { NodeEntry, TunnelRegistry } from './registry.ts';
import { RequestHeaders } from './request-headers.ts';
import type { LocalReply, RequestScript } from './request-script.ts';
import type { TunnelSession } from './tunnel-session.ts';

export interface EgressListenerOptions {
  readonly config: EgressListenerConfig;
  readonly registry: TunnelRegistry;
  /** Tenant isolation: every request names its tenant, and lookups are by tenant. */
  readonly tenantIsolation: boolean;
  /** The tunnel listener's header_prefix: the identity headers it names are never forwarded. */
  readonly identityHeaderPrefix: string;
  readonly stats: StatsRegistry;
  readonly logger: Logger;
  readonly index: number;
}

/** The pseudo-headers of every stream (`:method`, `:path`, `:scheme`, `:authority`). */
const pseudoHeaderCount = 4;

/**
 * Header fields a request may carry: what a tunnel stream carries besides its pseudo-headers.
 * Checked on the request as received, before anything else runs (as Envoy's codec checks its
 * max_headers_count, default 100, and answers 431), and again on what would be forwarded, which a
 * request script may have grown.
 */
const maxRequestHeaderFields = maxHeaderListPairs - pseudoHeaderCount;

/**
 * Header fields Node keeps of a request (server.maxHeadersCount; its default, stated). It drops the
 * rest silently, so a request that reaches it has at least that many and the exact count is lost.
 */
const keptHeaderFields = 1000;

type EgressRouteConfig = EgressListenerConfig['routes'][number];

/**
 * What a route needs per request, worked out once: its routing headers and the names of its stats
 * (building them for every request showed in profiles).
 */
interface RoutePlan {
  readonly hostIdHeaders: readonly string[];
  readonly tenantHeaders: readonly string[];
  /** The host id and tenant headers, each once. */
  readonly routingHeaders: readonly string[];
  /** Headers never forwarded on this route: host (sent as :authority), routing and identity. */
  readonly dropped: ReadonlySet<string>;
  readonly cluster: string;
  readonly stats: {
    readonly requests: string;
    readonly retries: string;
    readonly connectFailures: string;
    readonly noneHealthy: string;
  };
}

export class EgressListener {
  readonly #options: EgressListenerOptions;
  readonly #callers: EgressCallers | undefined;
  readonly #identityHeaders: readonly string[];
  readonly #routePlans: ReadonlyMap<EgressRouteConfig, RoutePlan>;
  #server: http.Server | undefined;
  #script: RequestScript | undefined;
  #draining = false;

  constructor(options: EgressListenerOptions) {
    this.#options = options;
    const { callers } = options.config;
    this.#callers = callers === undefined ? undefined : new EgressCallers(callers);
    const identityHeaders = Object.values(handshakeHeaderNames(options.identityHeaderPrefix));
    this.#identityHeaders = identityHeaders;
    this.#routePlans = new Map(
      options.config.routes.map((route) => [
        route,
        routePlan(route, options.config, identityHeaders),
      ]),
    );
  }

  /** Loads the request script and the TLS files, if any, then listens. */
  async listen(): Promise<HostPort> {
    const { config, logger, index } = this.#options;
    if (config.lua !== undefined) {
      // Loaded only when a script is configured: the Lua VM is a WebAssembly module.
      const { loadRequestScript } = await import('./request-script.ts');
      this.#script = await loadRequestScript({
        inlineCode: config.lua.inline_code,
        maxInstructions: config.lua.max_instructions,
        logger: logger.child({ egress_listener: index }),
      });
    }
    this.#server = await this.#createServer();
    return listen(this.#server, config.address, `egress listener ${index}`);
  }

  /** Stops accepting connections; requests that arrive on kept-alive connections get 503. */
  async drain(): Promise<void> {
    this.#draining = true;
    if (this.#server === undefined) return;
    const closed = closeServer(this.#server);
    this.#server.closeIdleConnections();
    await closed;
  }

  destroy(): void {
    this.#server?.closeAllConnections();
    this.#script?.close();
  }

  async #createServer(): Promise<http.Server> {
    const { config, logger } = this.#options;
    const options: http.ServerOptions = {
      requestTimeout: config.request_timeout,
      // Node refuses a headers timeout above the request timeout; the smaller one binds anyway.
      headersTimeout: Math.min(config.headers_timeout, config.request_timeout),
      // Node answers a longer head with 431 (the 'clientError' below writes it).
      maxHeaderSize: config.max_header_bytes,
      // #handle checks Host itself, after the field count: with maxHeadersCount (below), Node's
      // own check would answer 400 for a Host it dropped, where the answer is 431.
      requireHostHeader: false,
      // Node's default, stated: 5 s idle between requests on a kept-alive connection.
      keepAliveTimeout: 5_000,
      // How often Node checks the two timeouts above: a slow caller is cut within a second of them.
      connectionsCheckingInterval: 1_000,
    };
    const onRequest = (request: IncomingMessage, response: ServerResponse) =>
      this.#onRequest(request, response, false);
    let server: http.Server;
    if (config.tls === undefined) {
      server = http.createServer(options, onRequest);
    } else {
      const tls = await this.#tlsOptions(config.tls);
      try {
        server = https.createServer({ ...options, ...tls }, onRequest);
      } catch (error) {
        throw this.#listenError(`its TLS files are not usable: ${describeError(error)}`, error);
      }
      server.on('tlsClientError', (error) => {
        logger.debug({ err: error }, 'TLS handshake failed on the egress listener');
      });
    }
    // Node does not refuse a request with many header fields: past maxHeadersCount it drops the
    // rest silently, Host and routing headers among them. #handle counts them and answers 431.
    server.maxHeadersCount = keptHeaderFields;
    // `expect: 100-continue` is answered only once the request passed every check, so a caller
    // that is refused (401, 413 …) never sends its body.
    server.on('checkContinue', (request: IncomingMessage, response: ServerResponse) =>
      this.#onRequest(request, response, true),
    );
    server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => {
      answerClientError(error, socket, config.max_header_bytes);
      logger.debug({ err: error }, 'malformed or late request on the egress listener');
    });
    // Errors while listening reach listen(), which turns them into one clear RevtunError.
    server.on('error', (error) => {
      if (server.listening) logger.error({ err: error }, 'egress listener error');
    });
    return server;
  }

  /**
   * HTTPS options. With `client_ca_file` the listener asks every client for a certificate; it
   * requires one at the TLS layer only when no caller is known by a token. With token callers a
   * client without a certificate (or with one that does not verify) still completes the handshake
   * and authenticates by token, or gets a 401 that says why, instead of a bare TLS alert.
   */
  async #tlsOptions(tls: NonNullable<EgressListenerConfig['tls']>): Promise<https.ServerOptions> {
    const loaded = await loadServerTls(tls, `egress_listeners[${this.#options.index}].tls`);
    if (!loaded.requireClientCertificate) return loaded.options;
    return {
      ...loaded.options,
      requestCert: true,
      rejectUnauthorized: !(this.#callers?.hasTokenCallers ?? false),
    };
  }

  #listenError(why: string, cause: unknown): RevtunError {
    const { config, index } = this.#options;
    return new RevtunError(
      'ERR_LISTEN',
      `cannot listen on ${formatHostPort(config.address)} for egress listener ${index}: ${why}`,
      { cause },
    );
  }

  #onRequest(request: IncomingMessage, response: ServerResponse, expectsContinue: boolean): void {
    this.#handle(request, response, expectsContinue).catch((error: unknown) => {
      this.#options.logger.error({ err: error }, 'egress request failed unexpectedly');
      response.destroy();
    });
  }

  async #handle(
    request: IncomingMessage,
    response: ServerResponse,
    expectsContinue: boolean,
  ): Promise<void> {
    const { config, registry, stats, logger } = this.#options;
    // First, as Envoy's codec does: nothing (authentication, the script) works on such a request.
    const receivedFields = request.rawHeaders.length / 2;
    if (receivedFields > maxRequestHeaderFields) {
      tooManyHeaderFields(
        response,
        receivedFields < keptHeaderFields ? `${receivedFields}` : `at least ${keptHeaderFields}`,
      );
      return;
    }
    // What requireHostHeader would do (RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400).
    if (
      request.httpVersionMajor === 1 &&
      request.httpVersionMinor === 1 &&
      request.headers.host === undefined
    ) {
      response.shouldKeepAlive = false;
      reply(response, 400, 'no host header: an HTTP/1.1 request must carry one');
      return;
    }
    if (this.#draining) {
      response.shouldKeepAlive = false;
      reply(response, 503, 'the responder is shutting down');
      return;
    }
    let caller: CallerConfig | undefined;
    if (this.#callers !== undefined) {
      const authentication = this.#callers.authenticate(request);
      if (!authentication.ok) {
        stats.counter(`http.${config.stat_prefix}.callers.unauthorized`).inc();
        unauthorized(response, authentication);
        return;
      }
      caller = authentication.caller;
    }
    const declared = declaredLength(request);
    if (config.max_body_bytes !== undefined && declared > config.max_body_bytes) {
      bodyTooLarge(response, config.max_body_bytes);
      return;
    }
    // The script sees the request first and may change its headers or answer it (Envoy runs the
    // HTTP filters before the router).
    const headers = new RequestHeaders(request.headers, {
      ':method': request.method ?? 'GET',
      ':path': request.url ?? '/',
      ':authority': request.headers.host ?? '',
      ':scheme': config.tls === undefined ? 'http' : 'https',
    });
    // The caller's credential is this listener's: neither the script nor the service sees it.
    if (this.#callers !== undefined) headers.remove('authorization');
    const local = this.#runScript(headers, request);
    if (local !== undefined) {
      localReply(response, local);
      return;
    }
    const pathOnly = pathOf(request.url ?? '/');
    const route = findRoute(config.routes, pathOnly);
    if (route === undefined) {
      reply(response, 404, `no route for path ${pathOnly}`);
      return;
    }
    const plan = this.#routePlans.get(route) ?? routePlan(route, config, this.#identityHeaders);
    const { hostIdHeaders, tenantHeaders, routingHeaders } = plan;
    const repeated = repeatedHeader(request, headers, routingHeaders);
    if (repeated !== undefined) {
      reply(response, 400, `duplicate routing header ${repeated}`);
      return;
    }
    const hostId = firstHeader(headers, hostIdHeaders);
    if (hostId === undefined) {
      const status = config.no_host_id_status;
      if (status === 503) stats.counter(plan.stats.noneHealthy).inc();
      reply(response, status, `no routing header: send one of ${hostIdHeaders.join(', ')}`);
      return;
    }
    let tenantId = '';
    if (this.#options.tenantIsolation) {
      const tenant = firstHeader(headers, tenantHeaders);
      // Envoy resolves an empty or "-" tenant to no host; revtun says what is missing.
      if (tenant === undefined || tenant === '-') {
        reply(response, 400, `no tenant header: send one of ${tenantHeaders.join(', ')}`);
        return;
      }
      tenantId = tenant;
    }
    const cluster = plan.cluster;
    const allowed = caller === undefined ? undefined : (node: NodeEntry) => mayReach(caller, node);
    const node = registry.resolve(hostId, tenantId, allowed);
    if (node === undefined) {
      this.#noNode(response, { cluster, hostId, tenantId, caller });
      return;
    }
    const forwarded = forwardedHeaders(request, headers, plan.dropped, node);
    const fields = countFields(forwarded);
    if (fields > maxHeaderListPairs) {
      tooManyHeaderFields(response, `${fields - pseudoHeaderCount}`);
      return;
    }
    // One retry, on another tunnel, and only where it cannot repeat anything: an idempotent
    // request without a body whose stream the initiator never processed (see `forward`).
    const mayRetry = idempotentMethods.has(request.method ?? '') && !hasBody(request);
    let failed: TunnelSession | undefined;
    for (let attempt = 0; attempt < 2; attempt += 1) {
      let session: TunnelSession;
      try {
        session = await registry.acquire(node, failed);
      } catch (error) {
        if (!isRevtunError(error)) throw error;
        if (failed !== undefined) {
          reply(
            response,
            502,
            `the tunnel to node ${failed.identity.nodeId} refused the request, and no other tunnel to it is free`,
          );
          return;
        }
        stats.counter(plan.stats.connectFailures).inc();
        // Busy is a moment's overload: say when to come back, as a 503 should (RFC 9110 §10.2.3).
        const retry = isRevtunError(error, 'ERR_TUNNEL_BUSY') ? { 'retry-after': '1' } : {};
        reply(response, error.status, `${error.message} (host id ${hostId})`, retry);
        return;
      }
      if (attempt === 0) {
        stats.counter(plan.stats.requests).inc();
        if (expectsContinue) response.writeContinue();
      } else {
        stats.counter(plan.stats.retries).inc();
      }
      const outcome = await forward({
        request,
        response,
        headers: forwarded,
        session,
        logger,
        maxBodyBytes: config.max_body_bytes,
        responseTimeoutMs: config.response_timeout,
        retryable: mayRetry && attempt === 0,
      });
      if (outcome === 'done') return;
      failed = session;
    }
  }

  /** The request script's own reply, if it gave one. */
  #runScript(headers: RequestHeaders, request: IncomingMessage): LocalReply | undefined {
    if (this.#script === undefined) return undefined;
    const { config, stats, logger } = this.#options;
    try {
      return this.#script.onRequest(headers);
    } catch (error) {
      // As Envoy's Lua filter: the failure is logged and counted, and the request goes on with
      // the headers as the script left them.
      stats.counter(`http.${config.stat_prefix}.lua.errors`).inc();
      logger.error({ err: error, path: request.url }, 'request script failed; the request goes on');
      return undefined;
    }
  }

  /**
   * No node the caller may reach: 503 if none by that id is connected. A caller refused with 404
   * gets exactly the answer it would get for an id nobody uses, so it cannot tell the two apart;
   * 403 says the node exists and the caller may not reach it.
   */
  #noNode(
    response: ServerResponse,
    what: { cluster: string; hostId: string; tenantId: string; caller: CallerConfig | undefined },
  ): void {
    const { config, registry, stats } = this.#options;
    const { cluster, hostId, tenantId, caller } = what;
    const known = registry.knows(hostId, tenantId);
    if (known && caller !== undefined)
      stats.counter(`http.${config.stat_prefix}.callers.refused`).inc();
    else stats.counter(`${cluster}.upstream_cx_none_healthy`).inc();
    if (caller !== undefined && config.refused_status === 404) {
      reply(response, 404, `no route for host id ${hostId}`);
    } else if (caller !== undefined && known) {
      reply(response, 403, `caller ${caller.name} may not reach host id ${hostId}`);
    } else {
      reply(
        response,
        503,
        `no tunnel for host id ${hostId}: no node or cluster by that id is connected`,
      );
    }
  }
}

function routePlan(
  route: EgressRouteConfig,
  config: EgressListenerConfig,
  identityHeaders: readonly string[],
): RoutePlan {
  const hostIdHeaders = route.host_id_headers ?? config.host_id_headers;
  const tenantHeaders = route.tenant_id_headers ?? config.tenant_id_headers ?? [];
  const routingHeaders = [...new Set([...hostIdHeaders, ...tenantHeaders])];
  const cluster = `cluster.${route.cluster}`;
  return {
    hostIdHeaders,
    tenantHeaders,
    routingHeaders,
    dropped: new Set(['host', ...routingHeaders, ...identityHeaders]),
    cluster,
    stats: {
      requests: `${cluster}.upstream_rq_total`,
      retries: `${cluster}.upstream_rq_retry`,
      connectFailures: `${cluster}.upstream_cx_connect_fail`,
      noneHealthy: `${cluster}.upstream_cx_none_healthy`,
    },
  };
}

/** The HTTP/2 request headers: the request's end-to-end headers less the `dropped` ones. */
function forwardedHeaders(
  request: IncomingMessage,
  headers: RequestHeaders,
  dropped: ReadonlySet<string>,
  node: NodeEntry,
): OutgoingHttpHeaders {
  const fields = headers.view();
  const host = fields['host'];
  const out: OutgoingHttpHeaders = {
    ':method': request.method ?? 'GET',
    ':path': request.url ?? '/',
    ':scheme': 'http',
    ':authority': (Array.isArray(host) ? host[0] : host) ?? node.nodeId,
  };
  forEachEndToEndHeader(fields, (name, value) => {
    if (!dropped.has(name)) out[name] = value;
  });
  return out;
}

/**
 * The first routing header that came on more than one line (Node joins most repeated headers with
 * ", " and keeps only the first of some) or holds a list: ids never contain a comma, so "a, b" is
 * two values however it arrived. Either way, which one routes would be a guess. The lines are
 * counted in `rawHeaders` (what `headersDistinct` holds, without building it for every header).
 */
function repeatedHeader(
  request: IncomingMessage,
  headers: RequestHeaders,
  names: readonly string[],
): string | undefined {
  for (const name of names) {
    if (headers.get(name)?.includes(',') === true || receivedLines(request, name) > 1) return name;
  }
  return undefined;
}

/** How many lines of the request's head carry this (lower-case) header. */
function receivedLines(request: IncomingMessage, name: string): number {
  const raw = request.rawHeaders;
  let lines = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const field = raw[i] as string;
    if (field.length === name.length && field.toLowerCase() === name) lines += 1;
  }
  return lines;
}

/** Header fields as the HTTP/2 stream sends them: each value of a list is a field. */
function countFields(headers: OutgoingHttpHeaders): number {
  let count = 0;
  for (const value of Object.values(headers)) {
    if (value !== undefined) count += Array.isArray(value) ? value.length : 1;
  }
  return count;
}

/** The declared content-length, 0 when absent (Node has already rejected a malformed one). */
function declaredLength(request: IncomingMessage): number {
  const length = request.headers['content-length'];
  return length === undefined ? 0 : Number(length);
}

/** The first of the headers that is present with a non-empty value. */
function firstHeader(headers: RequestHeaders, names: readonly string[]): string | undefined {
  for (const name of names) {
    const text = headers.get(name)?.trim();
    if (text !== undefined && text !== '') return text;
  }
  return undefined;
}

function localReply(response: ServerResponse, local: LocalReply): void {
  const body = Buffer.from(local.body, 'utf8');
  response.writeHead(local.status, { ...local.headers, 'content-length': body.length });
  response.end(body);
}

function reply(
  response: ServerResponse,
  status: number,
  message: string,
  headers: http.OutgoingHttpHeaders = {},
): void {
  if (response.headersSent) {
    response.destroy();
    return;
  }
  const body = `${message}\n`;
  response.writeHead(status, {
    ...headers,
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(body),
  });
  response.end(body);
}

/** 401 with the challenge RFC 9110 §11.6.1 requires, and RFC 6750 §3.1's error for a bad token. */
function unauthorized(response: ServerResponse, failure: Authentication & { ok: false }): void {
  const challenge = failure.error === undefined ? 'Bearer' : `Bearer error="${failure.error}"`;
  reply(response, 401, failure.reason, { 'www-authenticate': challenge });
}

/**
 * 431 (RFC 6585 §5), and the connection closes, as after Node's own 431 for a head past
 * max_header_bytes: a caller that sends bad input gets a clear answer, not a kept-alive connection
 * (which would stay open for keepAliveTimeout) or the rest of its body read.
 */
function tooManyHeaderFields(response: ServerResponse, fields: string): void {
  response.shouldKeepAlive = false;
  reply(
    response,
    431,
    `too many header fields: ${fields}, a tunnel stream carries at most ${maxRequestHeaderFields}`,
  );
}

/** 413, and the connection closes: the rest of the body is not read (RFC 9110 §15.5.14). */
function bodyTooLarge(response: ServerResponse, maxBytes: number): void {
  response.shouldKeepAlive = false;
  reply(response, 413, `the request body is larger than ${maxBytes} bytes (max_body_bytes)`);
}

function hasBody(request: IncomingMessage): boolean {
  const length = request.headers['content-length'];
  return (
    request.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0')
  );
}

/**
 * Passes a request body on and fails once more than `maxBytes` went through. `onExceeded` runs at
 * once, before the failure reaches anything downstream, so the response side knows why the stream
 * died by the time it hears of it.
 */
class BodyLimit extends Transform {
  readonly #maxBytes: number;
  readonly #onExceeded: () => void;
  #bytes = 0;

  constructor(maxBytes: number, onExceeded: () => void) {
    super();
    this.#maxBytes = maxBytes;
    this.#onExceeded = onExceeded;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.#bytes += chunk.length;
    if (this.#bytes <= this.#maxBytes) {
      done(null, chunk);
      return;
    }
    this.#onExceeded();
    done(
      new RevtunError(
        'ERR_BODY_TOO_LARGE',
        `the request body passed ${this.#maxBytes} bytes (max_body_bytes)`,
      ),
    );
  }
}

/**
 * Sends the request body on the stream. With a limit, the body goes through a BodyLimit that the
 * request is piped into rather than pumped from: pump() (pipeline's semantics) would destroy the request, and with
 * it the caller's connection, before a 413 could be written. Past the limit, the BodyLimit fails
 * and pump() destroys the stream, which resets it without END_STREAM (http2-stream.ts): the
 * initiator aborts the upload to its local service rather than finishing a truncated one.
 */
function sendBody(
  request: IncomingMessage,
  stream: ClientHttp2Stream,
  limit: { maxBytes: number | undefined; onExceeded: () => void },
  logger: Logger,
): Promise<void> {
  const done = (error: unknown) => {
    if (!isRevtunError(error, 'ERR_BODY_TOO_LARGE')) {
      logger.debug({ err: error }, 'request body not fully forwarded');
    }
  };
  if (limit.maxBytes === undefined) return pump(request, stream).catch(done);
  const counted = new BodyLimit(limit.maxBytes, limit.onExceeded);
  const onClose = () => {
    // The caller went away mid-upload: fail the stream, never end it.
    if (!request.complete) counted.destroy(new Error('the caller aborted the upload'));
  };
  request.once('close', onClose);
  request.pipe(counted);
  return pump(counted, stream)
    .catch(done)
    .finally(() => {
      request.removeListener('close', onClose);
      request.unpipe(counted);
    });
}

interface ForwardOptions {
  readonly request: IncomingMessage;
  readonly response: ServerResponse;
  readonly headers: OutgoingHttpHeaders;
  readonly session: TunnelSession;
  readonly logger: Logger;
  readonly maxBodyBytes: number | undefined;
  /** The deadline for the response headers (504 after it). */
  readonly responseTimeoutMs: number;
  /**
   * The request may be sent again: instead of answering a failure that left the request
   * unprocessed, `forward` returns 'retry' with nothing written to the caller.
   */
  readonly retryable: boolean;
}

/** Methods that may be retried (RFC 9110 §9.2.2), when they carry no body. */
const idempotentMethods = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * The initiator never saw the stream: it was never given an id, or the initiator refused it
 * (REFUSED_STREAM, also what nghttp2 reports for streams above a GOAWAY's last stream id), which
 * RFC 9113 §8.7 guarantees was not processed.
 */
function unprocessed(stream: ClientHttp2Stream): boolean {
  return stream.pending || stream.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM;
}

/**
 * HTTP/1.1 request → HTTP/2 stream on the tunnel, and the response back. 'retry' when the request
 * is `retryable` and failed unprocessed, with nothing written to the caller; 'done' otherwise.
 */
async function forward(options: ForwardOptions): Promise<'done' | 'retry'> {
  const { request, response, headers, session, logger } = options;
  const withBody = hasBody(request);
  let stream: ClientHttp2Stream;
  try {
    stream = session.request(headers, { endStream: !withBody });
  } catch (error) {
    if (options.retryable) return 'retry';
    reply(
      response,
      502,
      `the tunnel to node ${session.identity.nodeId} failed: ${describeError(error)}`,
    );
    return 'done';
  }
  // What the response says its body is, once its headers are in: a HEAD, 204 or 304 has none.
  let declaredLength: number | undefined;
  const receivedEndStream = watchEndStream(stream, () => declaredLength);
  let responded = false;
  let tooLarge = false;
  let timedOut = false;
  // The response headers are due within response_timeout; the reset makes responseOf reject.
  const responseDeadline = setTimeout(() => {
    timedOut = true;
    resetStream(stream, http2.constants.NGHTTP2_CANCEL, 'no response within response_timeout');
  }, options.responseTimeoutMs);
  stream.once('response', () => clearTimeout(responseDeadline));
  stream.once('close', () => clearTimeout(responseDeadline));
  // The caller went away, or its upload is still going when the response is complete: reset the
  // stream so the initiator stops too, without ever marking a partial upload complete. A complete
  // exchange is left alone: nghttp2 closes the stream by itself, and a reset for every request
  // would trip the peer's rapid-reset guard (nghttp2 ends the session after ~1000 of them).
  response.on('close', () => {
    if (stream.closed || (responded && stream.writableEnded)) return;
    resetStream(
      stream,
      http2.constants.NGHTTP2_CANCEL,
      responded ? 'the rest of the upload is not needed' : 'the caller went away',
    );
  });
  const upload = withBody
    ? sendBody(
        request,
        stream,
        {
          maxBytes: options.maxBodyBytes,
          onExceeded: () => {
            tooLarge = true;
          },
        },
        logger,
      )
    : undefined;
  try {
    const responseHeaders = await responseOf(stream);
    const status = Number(responseHeaders[':status']);
    declaredLength =
      request.method === 'HEAD' || status === 204 || status === 304
        ? 0
        : contentLength(responseHeaders['content-length']);
    const out: Record<string, string | string[]> = {};
    forEachEndToEndHeader(responseHeaders, (name, value) => {
      out[name] = value;
    });
    response.writeHead(status, out);
    await pump(stream, response, { end: false });
    if (!receivedEndStream()) {
      throw new RevtunError(
        'ERR_TUNNEL_FAILED',
        `stream closed with code ${stream.rstCode} before END_STREAM`,
      );
    }
    responded = true;
    response.end();
  } catch (error) {
    if (options.retryable && !response.headersSent && !timedOut && unprocessed(stream)) {
      logger.debug(
        { node_id: session.identity.nodeId, err: error },
        'the initiator did not process the request; retrying it on another tunnel',
      );
      return 'retry';
    }
    if (response.headersSent) {
      logger.info(
        { node_id: session.identity.nodeId, err: error },
        tooLarge
          ? 'request body passed max_body_bytes mid-response; caller aborted'
          : 'tunnel failed mid-response; caller aborted',
      );
      response.destroy();
    } else if (tooLarge) {
      bodyTooLarge(response, options.maxBodyBytes ?? 0);
    } else if (timedOut) {
      reply(
        response,
        504,
        `node ${session.identity.nodeId} did not answer within ${options.responseTimeoutMs} ms (response_timeout)`,
      );
    } else {
      reply(
        response,
        502,
        `the tunnel to node ${session.identity.nodeId} failed before the response: ${describeError(error)}`,
      );
    }
    resetStream(stream, http2.constants.NGHTTP2_CANCEL, 'the response failed');
  }
  await upload;
  return 'done';
}

/**
 * Node's answers to a request it cannot take (lib/_http_server.js `socketOnError`), each with a
 * one-line reason; anything else is a 400.
 */
const clientErrorAnswers: Readonly<Record<string, readonly [status: string, reason: string]>> = {
  HPE_HEADER_OVERFLOW: ['431 Request Header Fields Too Large', 'the request head is larger than'],
  HPE_CHUNK_EXTENSIONS_OVERFLOW: ['413 Content Too Large', 'the chunk extensions are too long'],
  ERR_HTTP_REQUEST_TIMEOUT: [
    '408 Request Timeout',
    'the request did not arrive within headers_timeout or request_timeout',
  ],
};

/**
 * Answers a request Node could not parse or that came too slowly, then closes the connection (the
 * parser cannot go on after an error). A connection reset by the caller is just closed.
 */
function answerClientError(
  error: NodeJS.ErrnoException,
  socket: Duplex,
  maxHeaderBytes: number,
): void {
  if (error.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const [status, reason] = clientErrorAnswers[error.code ?? ''] ?? [
    '400 Bad Request',
    'malformed request',
  ];
  const text =
    error.code === 'HPE_HEADER_OVERFLOW'
      ? `${reason} ${maxHeaderBytes} bytes (max_header_bytes)\n`
      : `${reason}\n`;
  socket.end(
    `HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\n` +
      `content-length: ${Buffer.byteLength(text)}\r\n\r\n${text}`,
    () => socket.destroy(),
  );
}

/** The stream's response headers, or a rejection if it closes or fails first. */
function responseOf(
  stream: ClientHttp2Stream,
): Promise<http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader> {
  return new Promise((resolve, reject) => {
    const onResponse = (headers: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader) => {
      cleanup();
      resolve(headers);
    };
    const onError = (error: Error) => {
      cleanup();
      reject(error);
    };
    const onClose = () => {
      cleanup();
      reject(
        new RevtunError(
          'ERR_TUNNEL_FAILED',
          `stream closed with code ${stream.rstCode} before a response`,
        ),
      );
    };
    const cleanup = () => {
      stream.removeListener('response', onResponse);
      stream.removeListener('error', onError);
      stream.removeListener('close', onClose);
    };
    stream.on('response', onResponse);
    stream.on('error', onError);
    stream.on('close', onClose);
  });
}
