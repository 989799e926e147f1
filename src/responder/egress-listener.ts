/**
 * An egress listener: callers send HTTP requests (over TLS with `tls`) naming a node or a cluster
 * in a header; each request goes to that node as an HTTP/2 stream on one of its tunnels
 * (docs/streams.md §1, user docs in docs/egress.md).
 *
 * Protocols: HTTP/1.1 always, and HTTP/2 unless `http2.enabled` is false. A cleartext listener
 * takes h2c with prior knowledge on the same port: the first bytes of each connection are
 * compared with the HTTP/2 connection preface (egress-sniff.ts), bounded by headers_timeout. The
 * h2c Upgrade from HTTP/1.1 (RFC 7540 §3.2, removed by RFC 9113) is not offered: such a request
 * is served as HTTP/1.1. A TLS listener offers `h2` and `http/1.1` by ALPN. Both protocols go
 * through the same checks and forwarding (egress-exchange.ts, egress-forward.ts); an HTTP/1.1
 * `Upgrade: websocket` or an HTTP/2 extended CONNECT (RFC 8441, announced with
 * SETTINGS_ENABLE_CONNECT_PROTOCOL) goes through the same checks and then to egress-upgrade.ts.
 *
 * The steps, in order: the header fields are counted (431 past the cap of a tunnel stream) and
 * `host` is required (400), the caller authenticates (`callers`: 401 without valid credentials), a
 * declared body larger than `max_body_bytes` is refused (413), the request script runs, the route
 * is matched (404), the routing headers are read (400 if none, or if one is repeated), the node is
 * resolved among those the caller may reach (503 none connected; `refused_status` when the caller
 * may not reach it), the forwarding headers are added (`forwarded_headers`), and the request is
 * sent on a session borrowed from the registry.
 *
 * Failure answers are one line of plain text. Once the response has begun, a failure aborts the
 * caller's side: the HTTP/1.1 connection is destroyed, the HTTP/2 stream reset (RST_STREAM), so a
 * truncated body never looks complete. A chunked upload that grows past `max_body_bytes` resets
 * the stream to the initiator (never END_STREAM), and is answered 413 if the response has not
 * begun.
 *
 * Header hygiene: the local service never sees how it was reached. The route's host id and tenant
 * headers and the tunnel identity headers (`<header_prefix>-reverse-tunnel-*`) are not forwarded,
 * nor, on a listener with callers, `authorization`. A header a request script reads to compute a
 * host id (the sandbox's x-node-id → x-computed-host-id) is the script's to remove.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import http2, {
  type Http2Server,
  type OutgoingHttpHeaders,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2';
import https from 'node:https';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { EgressListenerConfig } from '../config/schema.ts';
import { handshakeHeaderNames } from '../protocol/handshake.ts';
import { AccessRecord, type AccessProtocol } from '../shared/access-format.ts';
import { formatHostPort, type HostPort } from '../shared/address.ts';
import { describeError, RevtunError, isRevtunError } from '../shared/errors.ts';
import { forEachEndToEndHeader } from '../shared/hop-by-hop.ts';
import { maxHeaderListPairs } from '../shared/http2-limits.ts';
import { findRoute, pathOf } from '../shared/route-match.ts';
import { closeServer, listen } from '../shared/listen.ts';
import type { Logger } from '../shared/logger.ts';
import type { Counter, Histogram, StatsRegistry } from '../shared/stats.ts';
import { loadServerTls } from '../shared/tls-files.ts';
import {
  EgressCallers,
  mayReach,
  type Authentication,
  type CallerConfig,
} from './egress-callers.ts';
import {
  Http1Exchange,
  Http2Exchange,
  UpgradeRequest,
  type CallerExchange,
  type CallerReply,
  type CallerRequest,
} from './egress-exchange.ts';
import { AccessLog } from './access-log.ts';
import { addForwardedHeaders } from './egress-forwarded.ts';
import { bodyTooLarge, forward, idempotentMethods, reply } from './egress-forward.ts';
import { sniffProtocol } from './egress-sniff.ts';
import { forwardExtendedConnect, forwardWebSocketUpgrade } from './egress-upgrade.ts';
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
 * The HTTP/2 server takes as many (maxHeaderListPairs) so that it too answers 431 rather than
 * resetting the stream; past them Node resets it (ENHANCE_YOUR_CALM).
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

/** A request that passed every check: where it goes and what goes on the tunnel. */
interface Admitted {
  readonly node: NodeEntry;
  readonly hostId: string;
  readonly plan: RoutePlan;
  readonly headers: OutgoingHttpHeaders;
}

/** Fields of an HTTP/1.1 WebSocket handshake that belong to its hop (docs/streams.md §2). */
const webSocketHopFields = ['sec-websocket-key', 'sec-websocket-accept'] as const;

export class EgressListener {
  readonly #options: EgressListenerOptions;
  readonly #callers: EgressCallers | undefined;
  readonly #identityHeaders: readonly string[];
  readonly #routePlans: ReadonlyMap<EgressRouteConfig, RoutePlan>;
  #server: http.Server | undefined;
  #http2: Http2Server | undefined;
  readonly #sessions = new Set<ServerHttp2Session>();
  /** Cleartext connections whose first bytes are still awaited (egress-sniff.ts). */
  readonly #sniffing = new Set<Socket>();
  #script: RequestScript | undefined;
  #draining = false;
  /** The access log, if configured (opened by listen()). */
  #accessLog: AccessLog | undefined;
  /** http.<stat_prefix>.downstream_rq_time: from the request's arrival to its response's end. */
  readonly #requestTime: Histogram;
  /** http.<stat_prefix>.downstream_rq_total, counted as a request arrives (Envoy's HCM). */
  readonly #requests: Counter;
  /** http.<stat_prefix>.downstream_rq_{1xx…5xx}, by the class of the status sent to the caller. */
  readonly #byClass: readonly Counter[];

  constructor(options: EgressListenerOptions) {
    this.#options = options;
    const { callers } = options.config;
    this.#callers = callers === undefined ? undefined : new EgressCallers(callers);
    const identityHeaders = Object.values(handshakeHeaderNames(options.identityHeaderPrefix));
    this.#identityHeaders = identityHeaders;
    const prefix = `http.${options.config.stat_prefix}`;
    this.#requestTime = options.stats.histogram(`${prefix}.downstream_rq_time`);
    this.#requests = options.stats.counter(`${prefix}.downstream_rq_total`);
    this.#byClass = [1, 2, 3, 4, 5].map((n) =>
      options.stats.counter(`${prefix}.downstream_rq_${n}xx`),
    );
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
    if (config.access_log !== undefined) {
      this.#accessLog = new AccessLog(
        config.access_log,
        this.#options.stats.counter(`http.${config.stat_prefix}.access_log.dropped`),
      );
    }
    if (config.http2.enabled) this.#http2 = this.#createHttp2Server();
    this.#dispatchConnections(this.#server);
    return listen(this.#server, config.address, `egress listener ${index}`);
  }

  /**
   * Stops accepting connections; requests that arrive on kept-alive HTTP/1.1 connections get 503,
   * HTTP/2 sessions get GOAWAY and close once their streams are done.
   */
  async drain(): Promise<void> {
    this.#draining = true;
    for (const session of this.#sessions) closeSession(session);
    if (this.#server === undefined) return;
    const closed = closeServer(this.#server);
    this.#server.closeIdleConnections();
    await closed;
  }

  destroy(): void {
    this.#server?.closeAllConnections();
    for (const session of this.#sessions) session.destroy();
    for (const socket of this.#sniffing) socket.destroy();
    this.#script?.close();
    const accessLog = this.#accessLog;
    // On the next turn: a record that comes later still (a destroyed socket's 'close' can) is
    // counted in access_log.dropped, never written to a closed file (lifecycle-log.ts).
    if (accessLog !== undefined) setImmediate(() => void accessLog.close());
  }

  /**
   * Where a request's end is seen: its access record (if any) is started here, and when the
   * caller's side closes, downstream_rq_time is observed and the record written.
   */
  #track(exchange: CallerExchange, protocol?: AccessProtocol): void {
    this.#requests.inc();
    if (this.#accessLog !== undefined) {
      const access = new AccessRecord(exchange);
      if (protocol !== undefined) access.protocol = protocol;
      exchange.access = access;
    }
    exchange.onClose(() => {
      this.#finish(exchange, exchange.status, exchange.completed);
    });
  }

  #finish(exchange: CallerRequest, status: number, completed: boolean): void {
    if (status > 0) {
      this.#requestTime.observe(performance.now() - exchange.startedAt);
      this.#byClass[Math.floor(status / 100) - 1]?.inc();
    }
    const access = exchange.access;
    if (access === undefined || this.#accessLog === undefined) return;
    if (access.status === 0) access.status = status;
    // Cut off with nobody to blame on the tunnel side: the caller went away.
    if (!completed && !access.flags.includes('UC') && !access.flags.includes('UT'))
      access.flag('DC');
    this.#accessLog.write(access);
  }

  async #createServer(): Promise<http.Server> {
    const { config, logger } = this.#options;
    const options: http.ServerOptions = {
      requestTimeout: config.request_timeout,
      // Node refuses a headers timeout above the request timeout; the smaller one binds anyway.
      headersTimeout: Math.min(config.headers_timeout, config.request_timeout),
      // Node answers a longer head with 431 (the 'clientError' below writes it).
      maxHeaderSize: config.max_header_bytes,
      // #admit checks Host itself, after the field count: with maxHeadersCount (below), Node's
      // own check would answer 400 for a Host it dropped, where the answer is 431.
      requireHostHeader: false,
      // Node's default, stated: 5 s idle between requests on a kept-alive connection.
      keepAliveTimeout: 5_000,
      // How often Node checks the two timeouts above: a slow caller is cut within a second of them.
      connectionsCheckingInterval: 1_000,
    };
    const onRequest = (request: IncomingMessage, response: ServerResponse) =>
      this.#onRequest(new Http1Exchange(request, response, false));
    let server: http.Server;
    if (config.tls === undefined) {
      server = http.createServer(options, onRequest);
    } else {
      const tls = await this.#tlsOptions(config.tls);
      try {
        server = https.createServer(
          {
            ...options,
            ...tls,
            // RFC 7301; RFC 9113 §3.2: `h2` is HTTP/2 over TLS. Without a match, HTTP/1.1.
            ALPNProtocols: config.http2.enabled ? ['h2', 'http/1.1'] : ['http/1.1'],
          },
          onRequest,
        );
      } catch (error) {
        throw this.#listenError(`its TLS files are not usable: ${describeError(error)}`, error);
      }
      server.on('tlsClientError', (error) => {
        logger.debug({ err: error }, 'TLS handshake failed on the egress listener');
      });
    }
    // Node does not refuse a request with many header fields: past maxHeadersCount it drops the
    // rest silently, Host and routing headers among them. #admit counts them and answers 431.
    server.maxHeadersCount = keptHeaderFields;
    // `expect: 100-continue` is answered only once the request passed every check, so a caller
    // that is refused (401, 413 …) never sends its body.
    server.on('checkContinue', (request: IncomingMessage, response: ServerResponse) =>
      this.#onRequest(new Http1Exchange(request, response, true)),
    );
    server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
      this.#onUpgrade(request, socket, head);
    });
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
   * The HTTP/2 server for callers. It never listens: the HTTP/1.1 server's connections that speak
   * HTTP/2 are handed to it (#dispatchConnections). Its limits are the tunnels' where they apply
   * (shared/http2-limits.ts), tighter where a caller has not authenticated yet: this is an
   * internet-facing, pre-authentication surface.
   */
  #createHttp2Server(): Http2Server {
    const { config, logger } = this.#options;
    const limits = config.http2;
    const server = http2.createServer({
      maxHeaderListPairs: keptHeaderFields + pseudoHeaderCount,
      maxSessionMemory: limits.max_session_memory,
      maxSessionInvalidFrames: limits.max_invalid_frames,
      maxSessionRejectedStreams: limits.max_rejected_streams,
      settings: {
        enablePush: false,
        maxConcurrentStreams: limits.max_concurrent_streams,
        // The same bound as an HTTP/1.1 head (RFC 9113 §6.5.2 counts 32 bytes more per field).
        maxHeaderListSize: config.max_header_bytes,
        initialWindowSize: limits.stream_window,
        // RFC 8441 §3: callers may open WebSockets with extended CONNECT.
        enableConnectProtocol: true,
      },
    });
    // A session with no frame at all for this long is destroyed (Node's default on 'timeout').
    server.setTimeout(limits.idle_timeout);
    server.on('session', (session: ServerHttp2Session) => {
      session.on('error', (error) => {
        logger.debug({ err: error }, 'HTTP/2 caller session failed');
      });
      this.#sessions.add(session);
      // The session's own window starts at 65 535 bytes whatever SETTINGS say (RFC 9113 §6.9.2):
      // opened as a tunnel's is, or an upload would move one such window per round trip.
      const openWindow = () => {
        if (!session.destroyed) session.setLocalWindowSize(limits.connection_window);
      };
      if (session.connecting) session.once('connect', openWindow);
      else openWindow();
      session.once('close', () => this.#sessions.delete(session));
      if (this.#draining) closeSession(session);
    });
    server.on(
      'stream',
      (
        stream: ServerHttp2Stream,
        headers: http2.IncomingHttpHeaders,
        _flags: number,
        rawHeaders: string[],
      ) => {
        stream.on('error', (error: Error) => {
          logger.debug({ err: error }, 'HTTP/2 caller stream failed');
        });
        this.#onStream(stream, headers, rawHeaders);
      },
    );
    return server;
  }

  /**
   * Gives each accepted connection to the server of its protocol. A TLS connection's ALPN
   * decides; a cleartext one's first bytes (egress-sniff.ts), read within headers_timeout. The
   * HTTP/1.1 server's own connection handler is taken off and called for HTTP/1.1 connections,
   * so its connection tracking (request and headers timeouts, closeIdleConnections) works as if
   * it had accepted them itself; Node's allowHTTP1 does the same the other way round.
   */
  #dispatchConnections(server: http.Server): void {
    const h2 = this.#http2;
    if (h2 === undefined) return;
    const { config, logger } = this.#options;
    const event = config.tls === undefined ? 'connection' : 'secureConnection';
    const http1 = server.listeners(event) as Array<(socket: Socket) => void>;
    server.removeAllListeners(event);
    const toHttp1 = (socket: Socket) => {
      for (const listener of http1) listener.call(server, socket);
    };
    if (config.tls !== undefined) {
      server.on(event, (socket: TLSSocket) => {
        if (socket.alpnProtocol === 'h2') h2.emit('connection', socket);
        else toHttp1(socket);
      });
      return;
    }
    server.on(event, (socket: Socket) => {
      this.#sniffing.add(socket);
      sniffProtocol(socket, {
        timeoutMs: config.headers_timeout,
        onProtocol: (protocol) => {
          this.#sniffing.delete(socket);
          if (protocol === 'h2') {
            h2.emit('connection', socket);
            return;
          }
          toHttp1(socket);
          // Paused by the sniffing so that no byte is lost; Node's parser takes 'data' now.
          socket.resume();
        },
        onGiveUp: (why) => {
          this.#sniffing.delete(socket);
          logger.debug({ why }, 'egress connection closed before its protocol was known');
        },
      });
    });
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

  #onRequest(exchange: CallerExchange): void {
    this.#track(exchange);
    this.#handle(exchange).catch((error: unknown) => {
      this.#options.logger.error({ err: error }, 'egress request failed unexpectedly');
      exchange.abort('the request failed unexpectedly');
    });
  }

  #onStream(
    stream: ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    rawHeaders: readonly string[],
  ): void {
    const exchange = new Http2Exchange(stream, headers, rawHeaders);
    if (!stream.endAfterHeaders && headers[':method'] !== 'CONNECT') this.#uploadDeadline(exchange);
    if (headers[':method'] !== 'CONNECT') {
      this.#onRequest(exchange);
      return;
    }
    this.#track(exchange, headers[':protocol'] === 'websocket' ? 'websocket' : undefined);
    if (headers[':protocol'] !== 'websocket') {
      // A plain CONNECT asks for a TCP tunnel to an address: an egress listener is no such proxy
      // (a responder's tcp_listeners carry TCP to named targets).
      reply(exchange, 501, 'CONNECT is not carried by an egress listener');
      return;
    }
    this.#upgrade(exchange, (session, admitted) =>
      forwardExtendedConnect(stream, this.#upgradeTarget(session, admitted)),
    ).catch((error: unknown) => {
      this.#options.logger.error({ err: error }, 'egress extended CONNECT failed unexpectedly');
      exchange.abort('the request failed unexpectedly');
    });
  }

  /**
   * request_timeout for an HTTP/2 caller's body, as Node's requestTimeout bounds an HTTP/1.1
   * request: an upload still open after it gets 408, or its stream reset if the response has
   * begun, so a slow upload cannot hold a stream (and a tunnel stream) for ever.
   */
  #uploadDeadline(exchange: Http2Exchange): void {
    const { config } = this.#options;
    const stream = exchange.stream;
    const timer = setTimeout(() => {
      if (stream.readableEnded || stream.destroyed) return;
      if (stream.headersSent) exchange.abort('no whole request within request_timeout');
      else reply(exchange, 408, 'the request did not arrive within request_timeout');
    }, config.request_timeout);
    stream.once('end', () => clearTimeout(timer));
    stream.once('close', () => clearTimeout(timer));
  }

  /**
   * An HTTP/1.1 request with `Upgrade`. A WebSocket goes through the checks and on to
   * egress-upgrade.ts; any other token (h2c among them: not offered, see the file's comment) is
   * answered as the plain request it also is, when it has no body.
   */
  #onUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', (error) => {
      this.#options.logger.debug({ err: error }, 'egress upgrade connection failed');
    });
    const upgrade = new UpgradeRequest(request, socket);
    const tokens = String(request.headers.upgrade ?? '').toLowerCase();
    if (!tokens.split(',').some((token) => token.trim() === 'websocket')) {
      if (upgrade.hasBody) {
        this.#trackUpgrade(upgrade, false);
        reply(upgrade, 501, `an Upgrade to ${tokens} is not offered`);
        return;
      }
      this.#onRequest(new Http1Exchange(request, plainResponse(request, socket), false));
      return;
    }
    this.#trackUpgrade(upgrade);
    this.#upgrade(upgrade, (session, admitted) =>
      forwardWebSocketUpgrade(request, socket, head, {
        ...this.#upgradeTarget(session, admitted),
        onStatus: (status) => upgrade.answered(status),
      }),
    ).catch((error: unknown) => {
      this.#options.logger.error({ err: error }, 'egress upgrade failed unexpectedly');
      socket.destroy();
    });
  }

  /**
   * #track for an HTTP/1.1 WebSocket: the connection is the exchange, so its byte counts are the
   * request's, and it is over when the socket closes.
   */
  #trackUpgrade(upgrade: UpgradeRequest, websocket = true): void {
    const socket = upgrade.upgradeSocket as Socket;
    this.#requests.inc();
    if (this.#accessLog !== undefined) {
      const access = new AccessRecord(upgrade);
      if (websocket) access.protocol = 'websocket';
      upgrade.access = access;
    }
    socket.once('close', () => {
      const access = upgrade.access;
      if (access !== undefined) {
        access.bytesReceived = socket.bytesRead;
        access.bytesSent = socket.bytesWritten;
      }
      // A WebSocket ends when either side closes it: only one never answered is cut off.
      this.#finish(upgrade, upgrade.status, upgrade.status !== 0);
    });
  }

  #upgradeTarget(session: TunnelSession, admitted: Admitted) {
    const { config, logger } = this.#options;
    const headers: OutgoingHttpHeaders = {
      ...admitted.headers,
      ':method': 'CONNECT',
      ':protocol': 'websocket',
    };
    for (const name of webSocketHopFields) delete headers[name];
    headers['sec-websocket-version'] = '13';
    return {
      session,
      headers,
      logger,
      responseTimeoutMs: config.response_timeout,
      idleTimeoutMs: config.websocket_idle_timeout,
    };
  }

  /** A WebSocket: the checks, one session, and the rest is egress-upgrade.ts's. */
  async #upgrade(
    request: CallerRequest & CallerReply,
    hand: (session: TunnelSession, admitted: Admitted) => void,
  ): Promise<void> {
    const admitted = this.#admit(request);
    if (admitted === undefined) return;
    const session = await this.#acquire(request, admitted, undefined);
    if (session === undefined) return;
    this.#options.stats.counter(admitted.plan.stats.requests).inc();
    hand(session, admitted);
  }

  async #handle(exchange: CallerExchange): Promise<void> {
    const { config, stats, logger } = this.#options;
    const admitted = this.#admit(exchange);
    if (admitted === undefined) return;
    // One retry, on another tunnel, and only where it cannot repeat anything: an idempotent
    // request without a body whose stream the initiator never processed (see `forward`).
    const mayRetry = idempotentMethods.has(exchange.method) && !exchange.hasBody;
    let failed: TunnelSession | undefined;
    for (let attempt = 0; attempt < 2; attempt += 1) {
      const session = await this.#acquire(exchange, admitted, failed);
      if (session === undefined) return;
      // The caller may have gone while the request waited for a place on a tunnel.
      if (exchange.gone) return;
      if (attempt === 0) {
        stats.counter(admitted.plan.stats.requests).inc();
        if (exchange.expectsContinue) exchange.sendContinue();
      } else {
        stats.counter(admitted.plan.stats.retries).inc();
      }
      const outcome = await forward({
        exchange,
        headers: admitted.headers,
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

  /** A session to the admitted node, or undefined after answering why there is none. */
  async #acquire(
    to: CallerRequest & CallerReply,
    admitted: Admitted,
    failed: TunnelSession | undefined,
  ): Promise<TunnelSession | undefined> {
    const { registry, stats } = this.#options;
    try {
      return await registry.acquire(admitted.node, failed);
    } catch (error) {
      if (!isRevtunError(error)) throw error;
      to.access?.flag('UF');
      if (failed !== undefined) {
        reply(
          to,
          502,
          `the tunnel to node ${failed.identity.nodeId} refused the request, and no other tunnel to it is free`,
        );
        return undefined;
      }
      stats.counter(admitted.plan.stats.connectFailures).inc();
      // Busy is a moment's overload: say when to come back, as a 503 should (RFC 9110 §10.2.3).
      const retry = isRevtunError(error, 'ERR_TUNNEL_BUSY') ? { 'retry-after': '1' } : {};
      reply(to, error.status, `${error.message} (host id ${admitted.hostId})`, retry);
      return undefined;
    }
  }

  /**
   * Every check from the request's head to its node, the same for every protocol: the admitted
   * request and what goes on the tunnel, or undefined once the caller has been answered.
   */
  #admit(request: CallerRequest & CallerReply): Admitted | undefined {
    const { config, registry, stats } = this.#options;
    // First, as Envoy's codec does: nothing (authentication, the script) works on such a request.
    const receivedFields = request.receivedFields;
    if (receivedFields > maxRequestHeaderFields) {
      request.access?.flag('DPE');
      tooManyHeaderFields(
        request,
        receivedFields < keptHeaderFields ? `${receivedFields}` : `at least ${keptHeaderFields}`,
      );
      return undefined;
    }
    // What requireHostHeader would do (RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400;
    // RFC 9113 §8.3.1: an HTTP/2 request has :authority or host).
    if ((request.version === '1.1' || request.version === '2') && request.authority === undefined) {
      request.access?.flag('DPE');
      request.closeAfter();
      reply(
        request,
        400,
        'no host header: an HTTP/1.1 request must carry one (HTTP/2: :authority)',
      );
      return undefined;
    }
    if (this.#draining) {
      request.closeAfter();
      reply(request, 503, 'the responder is shutting down');
      return undefined;
    }
    let caller: CallerConfig | undefined;
    if (this.#callers !== undefined) {
      const authentication = this.#callers.authenticate(request);
      if (!authentication.ok) {
        stats.counter(`http.${config.stat_prefix}.callers.unauthorized`).inc();
        request.access?.flag('UAEX');
        unauthorized(request, authentication);
        return undefined;
      }
      caller = authentication.caller;
      if (request.access !== undefined) request.access.caller = caller.name;
    }
    const declared = declaredLength(request);
    if (config.max_body_bytes !== undefined && declared > config.max_body_bytes) {
      bodyTooLarge(request, config.max_body_bytes);
      return undefined;
    }
    // The script sees the request first and may change its headers or answer it (Envoy runs the
    // HTTP filters before the router).
    const headers = new RequestHeaders(request.headers, {
      ':method': request.method,
      ':path': request.path,
      ':authority': request.authority ?? '',
      ':scheme': config.tls === undefined ? 'http' : 'https',
    });
    // The caller's credential is this listener's: neither the script nor the service sees it.
    if (this.#callers !== undefined) headers.remove('authorization');
    const local = this.#runScript(headers, request.path);
    if (local !== undefined) {
      localReply(request, local);
      return undefined;
    }
    const pathOnly = pathOf(request.path);
    const route = findRoute(config.routes, pathOnly);
    if (route === undefined) {
      request.access?.flag('NR');
      reply(request, 404, `no route for path ${pathOnly}`);
      return undefined;
    }
    const plan = this.#routePlans.get(route) ?? routePlan(route, config, this.#identityHeaders);
    const { hostIdHeaders, tenantHeaders, routingHeaders } = plan;
    const repeated = repeatedHeader(request, headers, routingHeaders);
    if (repeated !== undefined) {
      reply(request, 400, `duplicate routing header ${repeated}`);
      return undefined;
    }
    const hostId = firstHeader(headers, hostIdHeaders);
    if (hostId === undefined) {
      const status = config.no_host_id_status;
      if (status === 503) {
        stats.counter(plan.stats.noneHealthy).inc();
        request.access?.flag('UH');
      }
      reply(request, status, `no routing header: send one of ${hostIdHeaders.join(', ')}`);
      return undefined;
    }
    let tenantId = '';
    if (this.#options.tenantIsolation) {
      const tenant = firstHeader(headers, tenantHeaders);
      // Envoy resolves an empty or "-" tenant to no host; revtun says what is missing.
      if (tenant === undefined || tenant === '-') {
        reply(request, 400, `no tenant header: send one of ${tenantHeaders.join(', ')}`);
        return undefined;
      }
      tenantId = tenant;
    }
    const access = request.access;
    if (access !== undefined) {
      access.hostId = hostId;
      access.hostIdHeader = hostIdHeaders.find((name) => headers.get(name)?.trim() === hostId);
      access.tenant = tenantId === '' ? undefined : tenantId;
    }
    const cluster = plan.cluster;
    const allowed = caller === undefined ? undefined : (node: NodeEntry) => mayReach(caller, node);
    const node = registry.resolve(hostId, tenantId, allowed);
    if (node === undefined) {
      this.#noNode(request, { cluster, hostId, tenantId, caller });
      return undefined;
    }
    if (access !== undefined) {
      access.nodeId = node.nodeId;
      access.tenant = node.tenantId;
    }
    const forwarded = forwardedHeaders(request, headers, plan.dropped, node);
    addForwardedHeaders(
      forwarded,
      {
        address: request.socket.remoteAddress,
        proto: config.tls === undefined ? 'http' : 'https',
        host: request.authority,
        version: request.version,
      },
      config.forwarded_headers,
    );
    const fields = countFields(forwarded);
    if (fields > maxHeaderListPairs) {
      tooManyHeaderFields(request, `${fields - pseudoHeaderCount}`);
      return undefined;
    }
    return { node, hostId, plan, headers: forwarded };
  }

  /** The request script's own reply, if it gave one. */
  #runScript(headers: RequestHeaders, path: string): LocalReply | undefined {
    if (this.#script === undefined) return undefined;
    const { config, stats, logger } = this.#options;
    try {
      return this.#script.onRequest(headers);
    } catch (error) {
      // As Envoy's Lua filter: the failure is logged and counted, and the request goes on with
      // the headers as the script left them.
      stats.counter(`http.${config.stat_prefix}.lua.errors`).inc();
      logger.error({ err: error, path }, 'request script failed; the request goes on');
      return undefined;
    }
  }

  /**
   * No node the caller may reach: 503 if none by that id is connected. A caller refused with 404
   * gets exactly the answer it would get for an id nobody uses, so it cannot tell the two apart;
   * 403 says the node exists and the caller may not reach it.
   */
  #noNode(
    to: CallerRequest & CallerReply,
    what: { cluster: string; hostId: string; tenantId: string; caller: CallerConfig | undefined },
  ): void {
    const { config, registry, stats } = this.#options;
    const { cluster, hostId, tenantId, caller } = what;
    const known = registry.knows(hostId, tenantId);
    if (known && caller !== undefined)
      stats.counter(`http.${config.stat_prefix}.callers.refused`).inc();
    else stats.counter(`${cluster}.upstream_cx_none_healthy`).inc();
    to.access?.flag(known && caller !== undefined ? 'UAEX' : 'UH');
    if (caller !== undefined && config.refused_status === 404) {
      reply(to, 404, `no route for host id ${hostId}`);
    } else if (caller !== undefined && known) {
      reply(to, 403, `caller ${caller.name} may not reach host id ${hostId}`);
    } else {
      reply(to, 503, `no tunnel for host id ${hostId}: no node or cluster by that id is connected`);
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
  request: CallerRequest,
  headers: RequestHeaders,
  dropped: ReadonlySet<string>,
  node: NodeEntry,
): OutgoingHttpHeaders {
  const fields = headers.view();
  const host = fields['host'];
  const out: OutgoingHttpHeaders = {
    ':method': request.method,
    ':path': request.path,
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
 * two values however it arrived. Either way, which one routes would be a guess.
 */
function repeatedHeader(
  request: CallerRequest,
  headers: RequestHeaders,
  names: readonly string[],
): string | undefined {
  for (const name of names) {
    if (headers.get(name)?.includes(',') === true || request.receivedLines(name) > 1) return name;
  }
  return undefined;
}

/** Header fields as the HTTP/2 stream sends them: each value of a list is a field. */
function countFields(headers: OutgoingHttpHeaders): number {
  let count = 0;
  for (const value of Object.values(headers)) {
    if (value !== undefined) count += Array.isArray(value) ? value.length : 1;
  }
  return count;
}

/**
 * The declared content-length, 0 when absent (Node has already rejected a malformed one: its
 * HTTP/1.1 parser, and nghttp2 for HTTP/2, RFC 9113 §8.1.1).
 */
function declaredLength(request: CallerRequest): number {
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

function localReply(to: CallerReply, local: LocalReply): void {
  to.reply(local.status, local.headers, Buffer.from(local.body, 'utf8'));
}

/** 401 with the challenge RFC 9110 §11.6.1 requires, and RFC 6750 §3.1's error for a bad token. */
function unauthorized(to: CallerReply, failure: Authentication & { ok: false }): void {
  const challenge = failure.error === undefined ? 'Bearer' : `Bearer error="${failure.error}"`;
  reply(to, 401, failure.reason, { 'www-authenticate': challenge });
}

/**
 * 431 (RFC 6585 §5), and the connection closes, as after Node's own 431 for a head past
 * max_header_bytes: a caller that sends bad input gets a clear answer, not a kept-alive connection
 * (which would stay open for keepAliveTimeout) or the rest of its body read.
 */
function tooManyHeaderFields(to: CallerReply, fields: string): void {
  to.closeAfter();
  reply(
    to,
    431,
    `too many header fields: ${fields}, a tunnel stream carries at most ${maxRequestHeaderFields}`,
  );
}

/** GOAWAY: the caller's open streams finish, new ones are refused, then the session closes. */
function closeSession(session: ServerHttp2Session): void {
  if (!session.closed && !session.destroyed) session.close();
}

/**
 * A response for an HTTP/1.1 request Node handed over as an upgrade whose protocol is not offered:
 * written on the socket as Node's server would, and the connection closed after it.
 */
function plainResponse(request: IncomingMessage, socket: Duplex): ServerResponse {
  const response = new http.ServerResponse(request);
  response.shouldKeepAlive = false;
  response.assignSocket(socket as Socket);
  response.once('finish', () => {
    response.detachSocket(socket as Socket);
    socket.end();
  });
  return response;
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
