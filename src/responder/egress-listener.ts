/**
 * An egress listener: callers send ordinary HTTP/1.1 requests naming a node or a cluster in a
 * header; each request goes to that node as an HTTP/2 stream on one of its tunnels.
 *
 * Failure answers are one line of plain text: 404 no route, 400 no routing header, 503 no tunnel
 * or every tunnel busy, 502 the tunnel failed before the response began. Once the response has
 * begun, a failure aborts the caller's connection: a truncated body never looks complete.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import http2, { type ClientHttp2Stream, type OutgoingHttpHeaders } from 'node:http2';
import { pipeline } from 'node:stream/promises';
import type { EgressListenerConfig } from '../config/schema.ts';
import type { HostPort } from '../shared/address.ts';
import { describeError, RevtunError, isRevtunError } from '../shared/errors.ts';
import { forEachEndToEndHeader } from '../shared/hop-by-hop.ts';
import { resetStream, watchEndStream } from '../shared/http2-stream.ts';
import { findRoute, pathOf } from '../shared/route-match.ts';
import { closeServer, listen } from '../shared/listen.ts';
import type { Logger } from '../shared/logger.ts';
import type { StatsRegistry } from '../shared/stats.ts';
import type { TunnelRegistry } from './registry.ts';
import { RequestHeaders } from './request-headers.ts';
import type { LocalReply, RequestScript } from './request-script.ts';
import type { TunnelSession } from './tunnel-session.ts';

export interface EgressListenerOptions {
  readonly config: EgressListenerConfig;
  readonly registry: TunnelRegistry;
  /** Tenant isolation: every request names its tenant, and lookups are by tenant. */
  readonly tenantIsolation: boolean;
  readonly stats: StatsRegistry;
  readonly logger: Logger;
  readonly index: number;
}

export class EgressListener {
  readonly #options: EgressListenerOptions;
  readonly #server: http.Server;
  #script: RequestScript | undefined;
  #draining = false;

  constructor(options: EgressListenerOptions) {
    this.#options = options;
    this.#server = http.createServer(
      {
        requestTimeout: options.config.request_timeout,
        // Node's defaults, stated: a caller has 60 s for its headers and 5 s idle between requests.
        headersTimeout: 60_000,
        keepAliveTimeout: 5_000,
        connectionsCheckingInterval: 1_000,
      },
      (request, response) => {
        this.#handle(request, response).catch((error: unknown) => {
          options.logger.error({ err: error }, 'egress request failed unexpectedly');
          response.destroy();
        });
      },
    );
    this.#server.on('clientError', (error, socket) => {
      if (socket.writable && !socket.destroyed)
        socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
      else socket.destroy();
      options.logger.debug({ err: error }, 'malformed request on the egress listener');
    });
    // Errors while listening reach listen(), which turns them into one clear RevtunError.
    this.#server.on('error', (error) => {
      if (this.#server.listening) options.logger.error({ err: error }, 'egress listener error');
    });
  }

  /** Loads the request script, if any, then listens. */
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
    return listen(this.#server, config.address, `egress listener ${index}`);
  }

  /** Stops accepting connections; requests that arrive on kept-alive connections get 503. */
  async drain(): Promise<void> {
    this.#draining = true;
    const closed = closeServer(this.#server);
    this.#server.closeIdleConnections();
    await closed;
  }

  destroy(): void {
    this.#server.closeAllConnections();
    this.#script?.close();
  }

  async #handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const { config, registry, stats, logger } = this.#options;
    if (this.#draining) {
      response.shouldKeepAlive = false;
      reply(response, 503, 'the responder is shutting down');
      return;
    }
    // The script sees the request first and may change its headers or answer it (Envoy runs the
    // HTTP filters before the router).
    const headers = new RequestHeaders(request.headers, {
      ':method': request.method ?? 'GET',
      ':path': request.url ?? '/',
      ':authority': request.headers.host ?? '',
      ':scheme': 'http',
    });
    if (this.#script !== undefined) {
      let local: LocalReply | undefined;
      try {
        local = this.#script.onRequest(headers);
      } catch (error) {
        // As Envoy's Lua filter: the failure is logged and counted, and the request goes on with
        // the headers as the script left them.
        stats.counter(`http.${config.stat_prefix}.lua.errors`).inc();
        logger.error(
          { err: error, path: request.url },
          'request script failed; the request goes on',
        );
      }
      if (local !== undefined) {
        localReply(response, local);
        return;
      }
    }
    const pathOnly = pathOf(request.url ?? '/');
    const route = findRoute(config.routes, pathOnly);
    if (route === undefined) {
      reply(response, 404, `no route for path ${pathOnly}`);
      return;
    }
    const hostIdHeaders = route.host_id_headers ?? config.host_id_headers;
    const hostId = firstHeader(headers, hostIdHeaders);
    if (hostId === undefined) {
      const status = config.no_host_id_status;
      if (status === 503) stats.counter(`cluster.${route.cluster}.upstream_cx_none_healthy`).inc();
      reply(response, status, `no routing header: send one of ${hostIdHeaders.join(', ')}`);
      return;
    }
    let tenantId = '';
    if (this.#options.tenantIsolation) {
      const tenantHeaders = route.tenant_id_headers ?? config.tenant_id_headers ?? [];
      const tenant = firstHeader(headers, tenantHeaders);
      // Envoy resolves an empty or "-" tenant to no host; revtun says what is missing.
      if (tenant === undefined || tenant === '-') {
        reply(response, 400, `no tenant header: send one of ${tenantHeaders.join(', ')}`);
        return;
      }
      tenantId = tenant;
    }
    const cluster = `cluster.${route.cluster}`;
    const node = registry.resolve(hostId, tenantId);
    if (node === undefined) {
      stats.counter(`${cluster}.upstream_cx_none_healthy`).inc();
      reply(
        response,
        503,
        `no tunnel for host id ${hostId}: no node or cluster by that id is connected`,
      );
      return;
    }
    let session: TunnelSession;
    try {
      session = await registry.acquire(node);
    } catch (error) {
      if (!isRevtunError(error)) throw error;
      stats.counter(`${cluster}.upstream_cx_connect_fail`).inc();
      reply(response, error.status, `${error.message} (host id ${hostId})`);
      return;
    }
    stats.counter(`${cluster}.upstream_rq_total`).inc();
    await forward(request, response, headers.toObject(), session, logger);
  }
}

/** The first of the headers that is present with a non-empty value. */
function firstHeader(headers: RequestHeaders, names: readonly string[]): string | undefined {
  for (const name of names) {
    const text = headers.get(name)?.split(',', 1)[0]?.trim();
    if (text !== undefined && text !== '') return text;
  }
  return undefined;
}

function localReply(response: ServerResponse, local: LocalReply): void {
  const body = Buffer.from(local.body, 'utf8');
  response.writeHead(local.status, { ...local.headers, 'content-length': body.length });
  response.end(body);
}

function reply(response: ServerResponse, status: number, message: string): void {
  if (response.headersSent) {
    response.destroy();
    return;
  }
  const body = `${message}\n`;
  response.writeHead(status, {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(body),
  });
  response.end(body);
}

function hasBody(request: IncomingMessage): boolean {
  const length = request.headers['content-length'];
  return (
    request.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0')
  );
}

/** HTTP/1.1 request → HTTP/2 stream on the tunnel, and the response back. */
async function forward(
  request: IncomingMessage,
  response: ServerResponse,
  requestHeaders: Record<string, string | string[]>,
  session: TunnelSession,
  logger: Logger,
): Promise<void> {
  const host = requestHeaders['host'];
  const headers: OutgoingHttpHeaders = {
    ':method': request.method ?? 'GET',
    ':path': request.url ?? '/',
    ':scheme': 'http',
    ':authority': (Array.isArray(host) ? host[0] : host) ?? session.identity.nodeId,
  };
  forEachEndToEndHeader(requestHeaders, (name, value) => {
    if (name !== 'host') headers[name] = value;
  });
  const withBody = hasBody(request);
  let stream: ClientHttp2Stream;
  try {
    stream = session.request(headers, { endStream: !withBody });
  } catch (error) {
    reply(
      response,
      502,
      `the tunnel to node ${session.identity.nodeId} failed: ${describeError(error)}`,
    );
    return;
  }
  const receivedEndStream = watchEndStream(stream);
  let responded = false;
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
    ? pipeline(request, stream).catch((error: unknown) => {
        logger.debug({ err: error }, 'request body not fully forwarded');
      })
    : undefined;
  try {
    const responseHeaders = await responseOf(stream);
    const status = Number(responseHeaders[':status']);
    const out: Record<string, string | string[]> = {};
    forEachEndToEndHeader(responseHeaders, (name, value) => {
      out[name] = value;
    });
    response.writeHead(status, out);
    await pipeline(stream, response, { end: false });
    if (!receivedEndStream()) {
      throw new RevtunError(
        'ERR_TUNNEL_FAILED',
        `stream closed with code ${stream.rstCode} before END_STREAM`,
      );
    }
    responded = true;
    response.end();
  } catch (error) {
    if (response.headersSent) {
      logger.info(
        { node_id: session.identity.nodeId, err: error },
        'tunnel failed mid-response; caller aborted',
      );
      response.destroy();
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
