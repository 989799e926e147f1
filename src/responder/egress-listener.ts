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
import type { TunnelRegistry } from './registry.ts';
import type { TunnelSession } from './tunnel-session.ts';

export interface EgressListenerOptions {
  readonly config: EgressListenerConfig;
  readonly registry: TunnelRegistry;
  readonly logger: Logger;
  readonly index: number;
}

export class EgressListener {
  readonly #options: EgressListenerOptions;
  readonly #server: http.Server;
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

  listen(): Promise<HostPort> {
    return listen(
      this.#server,
      this.#options.config.address,
      `egress listener ${this.#options.index}`,
    );
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
  }

  async #handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const { config, registry } = this.#options;
    if (this.#draining) {
      response.shouldKeepAlive = false;
      reply(response, 503, 'the responder is shutting down');
      return;
    }
    const path = request.url ?? '/';
    const pathOnly = pathOf(path);
    const route = findRoute(config.routes, pathOnly);
    if (route === undefined) {
      reply(response, 404, `no route for path ${pathOnly}`);
      return;
    }
    const headerNames = route.host_id_headers ?? config.host_id_headers;
    const hostId = firstHeader(request, headerNames);
    if (hostId === undefined) {
      reply(response, 400, `no routing header: send one of ${headerNames.join(', ')}`);
      return;
    }
    const node = registry.resolve(hostId);
    if (node === undefined) {
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
      reply(response, error.status, `${error.message} (host id ${hostId})`);
      return;
    }
    await forward(request, response, session, this.#options.logger);
  }
}

/** The first of the headers that is present with a non-empty value. */
function firstHeader(request: IncomingMessage, names: readonly string[]): string | undefined {
  for (const name of names) {
    const value = request.headers[name];
    const text = (Array.isArray(value) ? value[0] : value)?.trim();
    if (text !== undefined && text !== '') return text;
  }
  return undefined;
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
  session: TunnelSession,
  logger: Logger,
): Promise<void> {
  const headers: OutgoingHttpHeaders = {
    ':method': request.method ?? 'GET',
    ':path': request.url ?? '/',
    ':scheme': 'http',
    ':authority': request.headers.host ?? session.identity.nodeId,
  };
  forEachEndToEndHeader(request.headers, (name, value) => {
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
