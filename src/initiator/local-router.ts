/**
 * The initiator's local router: every stream the responder opens on a tunnel is one of the three
 * kinds of docs/streams.md, and goes to its handler:
 *
 * - An HTTP request: matched against the local routes (local-routes.ts, first match wins, as
 *   Envoy's route table) and sent to an endpoint of the route's service, over HTTP/1.1
 *   (local-http1.ts, an undici Pool per endpoint) or HTTP/2 (local-http2.ts, for gRPC). Unmatched
 *   paths get 404.
 * - An RFC 8441 extended CONNECT with `:protocol websocket`: matched the same way, and opened on
 *   the (HTTP/1.1) service as a WebSocket upgrade (local-websocket.ts).
 * - A plain CONNECT: a TCP connection to the configured TCP target `:authority` names
 *   (local-tcp.ts).
 *
 * The initiator is never an open relay: the only places it connects to are the configured targets.
 * `:authority` is passed on as `host` and never picks a destination except as a TCP target's name,
 * and a `:path` that is not origin-form (RFC 9112 §3.2.1: `*` or an absolute URL) gets 400, so
 * nothing but a path on a local service is ever requested.
 */
import http2, { type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { Pool } from 'undici';
import type { LocalRouteConfig, TcpTargetConfig } from '../config/schema.ts';
import { pathOf } from '../shared/route-match.ts';
import type { Logger } from '../shared/logger.ts';
import { respondText } from './local-common.ts';
import { forwardHttp1 } from './local-http1.ts';
import { forwardHttp2, Http2Endpoint } from './local-http2.ts';
import { LocalRouteTable, type LocalEndpoint } from './local-routes.ts';
import { TcpTargets } from './local-tcp.ts';
import { forwardWebSocket } from './local-websocket.ts';

/** The client of one endpoint, by the protocol of the route that made it. */
type LocalClient =
  | { readonly protocol: 'http1'; readonly pool: Pool; readonly connectTimeoutMs: number }
  | { readonly protocol: 'http2'; readonly session: Http2Endpoint };

export class LocalRouter {
  readonly #routes: LocalRouteTable<LocalClient>;
  readonly #tcpTargets: TcpTargets;
  readonly #logger: Logger;

  constructor(
    routes: readonly LocalRouteConfig[],
    logger: Logger,
    tcpTargets: readonly TcpTargetConfig[] = [],
  ) {
    this.#logger = logger;
    this.#tcpTargets = new TcpTargets(tcpTargets, logger);
    this.#routes = new LocalRouteTable<LocalClient>(routes, {
      createClient: (origin, route) =>
        route.protocol === 'http2'
          ? { protocol: 'http2', session: new Http2Endpoint(origin, route.connect_timeout, logger) }
          : {
              protocol: 'http1',
              pool: new Pool(origin, {
                connections: route.max_connections,
                connect: { timeout: route.connect_timeout },
                // The wait for the response headers is the route's timeout and the responder's
                // response_timeout, not undici's own 300 s default (which would answer 502 first).
                headersTimeout: 0,
              }),
              connectTimeoutMs: route.connect_timeout,
            },
      closeClient: (client) =>
        client.protocol === 'http2' ? client.session.close() : client.pool.close(),
      destroyClient: (client) => {
        if (client.protocol === 'http2') client.session.destroy();
        else void client.pool.destroy().catch(() => {});
      },
      logger,
    });
  }

  /** Serves one stream the responder opened. */
  handle(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number): void {
    stream.on('error', (error) => this.#logger.debug({ err: error }, 'tunnel stream error'));
    try {
      this.#serve(stream, headers, flags);
    } catch (error) {
      this.#logger.error({ err: error }, 'local route failed unexpectedly');
      stream.destroy();
    }
  }

  /** Closes the connections to local services once their requests are done. */
  async close(): Promise<void> {
    await this.#routes.close();
  }

  destroy(): void {
    this.#routes.destroy();
    this.#tcpTargets.destroy();
  }

  /**
   * A route's `timeout`: the local service's response headers are due within it, counted from
   * now (a wait for a connection included). Past it the stream is answered 504, which counts as a
   * failure of the endpoint; the exchange then finds the stream answered and gives up its request,
   * which the stream's close aborts too.
   */
  #answerLate(
    stream: ServerHttp2Stream,
    late: { ms: number; endpoint: LocalEndpoint<LocalClient>; hasBody: boolean },
  ): void {
    const timer = setTimeout(() => {
      if (stream.headersSent || stream.closed || stream.destroyed) return;
      late.endpoint.failed();
      this.#logger.info(
        { target: late.endpoint.origin, timeout_ms: late.ms },
        'local service did not answer within the route timeout',
      );
      respondText(
        stream,
        504,
        `local service ${late.endpoint.origin} did not answer within ${late.ms} ms (the route's timeout)`,
        late.hasBody,
      );
    }, late.ms);
    stream.once('close', () => clearTimeout(timer));
  }

  #serve(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number): void {
    const method = headers[':method'] ?? 'GET';
    const hasBody = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) === 0;
    const protocol = headers[':protocol'];
    if (method === 'CONNECT' && protocol === undefined) {
      this.#tcpTargets.handle(stream, headers, hasBody);
      return;
    }
    if (protocol !== undefined && protocol !== 'websocket') {
      respondText(
        stream,
        501,
        `extended CONNECT for ${JSON.stringify(String(protocol).slice(0, 100))} is not served: only websocket is`,
        hasBody,
      );
      return;
    }
    const path = headers[':path'] ?? '/';
    if (!path.startsWith('/')) {
      respondText(
        stream,
        400,
        `the request target must be a path starting with "/", not ${JSON.stringify(path.slice(0, 100))}`,
        hasBody,
      );
      return;
    }
    const choice = this.#routes.match(path, headers[':authority']);
    if (choice === undefined) {
      respondText(stream, 404, `no local route for path ${pathOf(path)}`, hasBody);
      return;
    }
    const endpoint = choice.pick();
    if (endpoint === undefined) {
      respondText(
        stream,
        503,
        `no healthy endpoint for local route ${choice.route.description}`,
        hasBody,
      );
      return;
    }
    const client = endpoint.client;
    if (choice.timeoutMs !== undefined && protocol === undefined) {
      this.#answerLate(stream, { ms: choice.timeoutMs, endpoint, hasBody });
    }
    if (protocol !== undefined) {
      if (client.protocol !== 'http1') {
        respondText(
          stream,
          501,
          `WebSocket is not served by local route ${choice.route.description}: its service speaks HTTP/2`,
          hasBody,
        );
        return;
      }
      const target = { path: choice.path, endpoint, connectTimeoutMs: client.connectTimeoutMs };
      forwardWebSocket(stream, headers, target, this.#logger);
      return;
    }
    if (client.protocol === 'http2') {
      const target = { path: choice.path, endpoint, client: client.session };
      forwardHttp2(stream, headers, hasBody, target, this.#logger);
      return;
    }
    forwardHttp1(
      stream,
      headers,
      hasBody,
      { path: choice.path, endpoint, pool: client.pool },
      this.#logger,
    );
  }
}
