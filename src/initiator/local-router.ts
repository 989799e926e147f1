/**
 * The initiator's local routes: each stream the responder opens on a tunnel is matched by path
 * prefix or exact path (first match wins, as Envoy's route table) and forwarded to a local service over HTTP/1.1
 * with an undici Pool per service. Unmatched paths get 404. Bodies stream both ways with
 * HTTP/2 flow control and backpressure, never buffered whole.
 *
 * The initiator is never an open relay: the only places it connects to are the configured targets.
 * `:authority` is passed on as `host` and never picks a destination; CONNECT and extended CONNECT
 * (RFC 9113 §8.5, RFC 8441) get 405, and a `:path` that is not origin-form (RFC 9112 §3.2.1:
 * `*` or an absolute URL) gets 400, so nothing but a path on a local service is ever requested.
 */
import http2, { type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { PassThrough } from 'node:stream';
import { Pool, type Dispatcher } from 'undici';
import type { LocalRouteConfig } from '../config/schema.ts';
import { describeError } from '../shared/errors.ts';
import { forEachEndToEndHeader } from '../shared/hop-by-hop.ts';
import { contentLength, stopUpload, watchEndStream } from '../shared/http2-stream.ts';
import { pathOf } from '../shared/route-match.ts';
import type { Logger } from '../shared/logger.ts';
import { LocalRouteTable, type LocalEndpoint } from './local-routes.ts';

/** The `allow` of a 405 (RFC 9110 §15.5.6): every method but CONNECT is forwarded. */
const allowedMethods = 'GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE';

export class LocalRouter {
  readonly #routes: LocalRouteTable<Pool>;
  readonly #logger: Logger;

  constructor(routes: readonly LocalRouteConfig[], logger: Logger) {
    this.#logger = logger;
    this.#routes = new LocalRouteTable(routes, {
      createClient: (origin, route) =>
        new Pool(origin, {
          connections: route.max_connections,
          connect: { timeout: route.connect_timeout },
        }),
      closeClient: (pool) => pool.close(),
      destroyClient: (pool) => void pool.destroy().catch(() => {}),
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
  }

  #serve(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number): void {
    const method = headers[':method'] ?? 'GET';
    const hasBody = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) === 0;
    if (method === 'CONNECT' || headers[':protocol'] !== undefined) {
      respondText(stream, 405, 'CONNECT is not served: the initiator is not a relay', hasBody, {
        allow: allowedMethods,
      });
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
    const authority = headers[':authority'];
    const choice = this.#routes.match(path, authority);
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
    const forwarded: Record<string, string | string[]> = {};
    forEachEndToEndHeader(headers, (name, value) => {
      // The responder's HTTP/1.1 server already answered any 100-continue; undici refuses expect.
      if (name !== 'expect') forwarded[name] = value;
    });
    if (authority !== undefined) forwarded['host'] = authority;
    const body = hasBody ? requestBody(stream, contentLength(headers['content-length'])) : null;
    endpoint.client.dispatch(
      { path: choice.path, method, headers: forwarded, body },
      new LocalExchange({ stream, endpoint, path: choice.path, hasBody, logger: this.#logger }),
    );
  }
}

interface ExchangeOptions {
  readonly stream: ServerHttp2Stream;
  readonly endpoint: LocalEndpoint<Pool>;
  readonly path: string;
  readonly hasBody: boolean;
  readonly logger: Logger;
}

/**
 * One request to a local service, as an undici dispatch handler: the response goes onto the tunnel
 * stream as it arrives, with no response body stream, pump or AbortController in between (undici's
 * `request()` makes all three for every request, which showed in profiles). The semantics are
 * those of `request()` piped into the stream:
 *
 * - The tunnel stream closing (the responder reset it, or its caller went away) aborts the request,
 *   also one still queued for a connection, and the local service's connection with it.
 * - Backpressure: while the tunnel stream's buffer is full the local response is paused, and
 *   resumed at 'drain' (HTTP/2 flow control reaches the local service through TCP).
 * - The response ends the stream only when the local service completed it. A failure before the
 *   response is a 502; after it, the stream is destroyed, which resets it without END_STREAM
 *   (http2-stream.ts): the responder aborts its caller instead of ending a truncated body cleanly.
 */
class LocalExchange implements Dispatcher.DispatchHandler {
  readonly #options: ExchangeOptions;
  #controller: Dispatcher.DispatchController | undefined;
  /** Why the request was given up before undici started it, if it was. */
  #abortedEarly: Error | undefined;
  #responded = false;
  #ended = false;

  constructor(options: ExchangeOptions) {
    this.#options = options;
    options.stream.once('close', this.#onStreamClose);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller;
    if (this.#abortedEarly !== undefined) controller.abort(this.#abortedEarly);
  }

  onResponseStart(
    controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: IncomingHttpHeaders,
  ): void {
    // 1xx: informational, the response is still to come (as undici's request() skips them).
    if (statusCode < 200) return;
    const { stream, endpoint } = this.#options;
    // Passive failure detection counts what Envoy's outlier detection does: 5xx and failures.
    if (statusCode >= 500) endpoint.failed();
    else endpoint.succeeded();
    if (stream.destroyed || stream.closed) {
      controller.abort(new Error('the tunnel stream closed before the response'));
      return;
    }
    const response: http2.OutgoingHttpHeaders = { ':status': statusCode };
    forEachEndToEndHeader(headers, (name, value) => {
      response[name] = value;
    });
    this.#responded = true;
    stream.on('drain', this.#onDrain);
    stream.respond(response);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.#options.stream.write(chunk)) controller.pause();
  }

  onResponseEnd(): void {
    const { stream } = this.#options;
    this.#ended = true;
    stream.removeListener('drain', this.#onDrain);
    stream.once('finish', this.#onFinish);
    stream.end();
  }

  /** The whole response is on the stream. */
  readonly #onFinish = (): void => {
    const { stream, hasBody } = this.#options;
    stream.removeListener('close', this.#onStreamClose);
    // A complete response while the request body is still coming: ask the responder to stop
    // sending it (RST_STREAM NO_ERROR after END_STREAM, RFC 9113 §8.1). Only then: a reset per
    // request would trip the peer's rapid-reset guard.
    if (hasBody) stopUpload(stream);
  };

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    const { stream, endpoint, path, hasBody, logger } = this.#options;
    stream.removeListener('close', this.#onStreamClose);
    stream.removeListener('drain', this.#onDrain);
    if (this.#responded) {
      logger.info(
        { target: endpoint.origin, path, err: error },
        'local response not fully forwarded',
      );
      // Resets the stream (RST_STREAM) rather than ending a truncated body.
      if (!stream.destroyed) stream.destroy(error);
      return;
    }
    // The stream closed first: nobody is left to answer.
    if (stream.destroyed || stream.closed) return;
    endpoint.failed();
    logger.warn({ target: endpoint.origin, path, err: error }, 'local service request failed');
    respondText(
      stream,
      502,
      `local service ${endpoint.origin} failed: ${describeError(error)}`,
      hasBody,
    );
  }

  readonly #onDrain = (): void => {
    this.#controller?.resume();
  };

  readonly #onStreamClose = (): void => {
    if (this.#ended) {
      // Closed with the end of the response still buffered: it never went out whole.
      const { stream, endpoint, path, logger } = this.#options;
      stream.removeListener('finish', this.#onFinish);
      logger.info({ target: endpoint.origin, path }, 'local response not fully forwarded');
      return;
    }
    const reason = new Error('the tunnel stream closed before the local response was complete');
    if (this.#controller === undefined) this.#abortedEarly = reason;
    else this.#controller.abort(reason);
  };
}

/**
 * The request body as undici's `body`. Not the stream itself: undici destroys its body stream once
 * it has sent it, and destroying an HTTP/2 stream resets both directions, which would cut off the
 * response. A pipe (no destroy propagation) keeps HTTP/2 flow control as the backpressure. The body
 * ends only at END_STREAM; a reset fails it, so the local service never takes a cut-off upload for
 * a whole one.
 */
function requestBody(stream: ServerHttp2Stream, declaredLength: number | undefined): PassThrough {
  const body = new PassThrough();
  const receivedEndStream = watchEndStream(stream, () => declaredLength);
  stream.pipe(body, { end: false });
  stream.once('end', () => {
    if (receivedEndStream()) body.end();
    else body.destroy(new Error('the responder reset the request before its end'));
  });
  stream.once('error', (error) => body.destroy(error));
  return body;
}

function respondText(
  stream: ServerHttp2Stream,
  status: number,
  message: string,
  hasBody: boolean,
  headers: http2.OutgoingHttpHeaders = {},
): void {
  if (stream.destroyed || stream.closed) return;
  const body = `${message}\n`;
  stream.respond({
    ...headers,
    ':status': status,
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(body),
  });
  // A request body nobody will read: once the answer is out, ask the responder to stop sending it.
  stream.end(body, () => {
    if (hasBody) stopUpload(stream);
  });
}
