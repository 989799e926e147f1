/**
 * A stream forwarded to an HTTP/2 local service (a route with `protocol: http2`, typically gRPC):
 * h2c with prior knowledge (RFC 9113 §3.3), one session per endpoint, made again when it closes or
 * is told to go away. HTTP/2 on both sides, so the stream is passed on nearly frame for frame
 * (docs/streams.md §1):
 *
 * - Request: `:method`, `:path` (the route's), `:authority` (the tunnel stream's), `:scheme http`
 *   and the end-to-end fields (`te: trailers`, `content-type`, `grpc-timeout`, `*-bin` metadata);
 *   its body streamed with backpressure, its trailers as trailers.
 * - Response: a 103, the final HEADERS (a trailers-only response, END_STREAM on its HEADERS, stays
 *   one), DATA, and the trailers (`grpc-status`, `grpc-message`).
 * - Resets: the tunnel stream reset (the caller cancelled, or its deadline passed) resets the local
 *   stream with CANCEL, which grpc-js reports as a cancelled call; the local stream reset resets the
 *   tunnel stream with the same code. A failure before the response is a 502.
 */
import http2, {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  type IncomingHttpHeaders,
  type ServerHttp2Stream,
} from 'node:http2';
import { describeError } from '../shared/errors.ts';
import { forEachEndToEndHeader } from '../shared/hop-by-hop.ts';
import {
  contentLength,
  resetStreamWith,
  stopUpload,
  watchEndStream,
} from '../shared/http2-stream.ts';
import type { Logger } from '../shared/logger.ts';
import { respondText, type EndpointOutcome } from './local-common.ts';

const { NGHTTP2_CANCEL, NGHTTP2_NO_ERROR, NGHTTP2_FLAG_END_STREAM } = http2.constants;

/**
 * Streams one endpoint may carry at once when its SETTINGS are not known yet, and the cap on what
 * they announce: beyond it, new streams get 503 rather than wait in nghttp2's queue without bound.
 */
const defaultMaxStreams = 100;
const maxStreamsCap = 10_000;

/** The session to one HTTP/2 endpoint, made on first use and again after it is gone. */
export class Http2Endpoint {
  readonly origin: string;
  readonly #connectTimeoutMs: number;
  readonly #logger: Logger;
  #session: ClientHttp2Session | undefined;
  #active = 0;
  #closed = false;

  constructor(origin: string, connectTimeoutMs: number, logger: Logger) {
    this.origin = origin;
    this.#connectTimeoutMs = connectTimeoutMs;
    this.#logger = logger;
  }

  /** Opens a stream, or returns why it cannot. */
  request(
    headers: http2.OutgoingHttpHeaders,
    options: http2.ClientSessionRequestOptions,
  ): ClientHttp2Stream | Error {
    if (this.#closed) return new Error('the initiator is shutting down');
    const session = this.#usableSession();
    const limit = Math.min(
      session.remoteSettings.maxConcurrentStreams ?? defaultMaxStreams,
      maxStreamsCap,
    );
    if (this.#active >= limit) {
      return new Error(`${this.#active} streams are open, the most it accepts`);
    }
    let local: ClientHttp2Stream;
    try {
      local = session.request(headers, options);
    } catch (error) {
      return error as Error;
    }
    this.#active += 1;
    local.once('close', () => {
      this.#active -= 1;
    });
    return local;
  }

  /** GOAWAY: streams already open finish. */
  close(): Promise<void> {
    this.#closed = true;
    const session = this.#session;
    if (session === undefined || session.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      // Not close(callback): on a session already closing, that callback is never called.
      session.once('close', () => resolve());
      session.close();
    });
  }

  destroy(): void {
    this.#closed = true;
    this.#session?.destroy();
  }

  #usableSession(): ClientHttp2Session {
    const current = this.#session;
    if (current !== undefined && !current.closed && !current.destroyed) return current;
    const session = http2.connect(this.origin);
    this.#session = session;
    const forget = () => {
      if (this.#session === session) this.#session = undefined;
    };
    session.on('error', (error) => {
      this.#logger.debug({ target: this.origin, err: error }, 'local HTTP/2 session error');
    });
    session.once('goaway', forget);
    session.once('close', forget);
    const timer = setTimeout(() => {
      session.destroy(new Error(`not connected within ${this.#connectTimeoutMs} ms`));
    }, this.#connectTimeoutMs);
    timer.unref();
    session.once('connect', () => clearTimeout(timer));
    session.once('close', () => clearTimeout(timer));
    return session;
  }
}

/** Sends one tunnel stream to an HTTP/2 local service and its response back. */
export function forwardHttp2(
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
  hasBody: boolean,
  target: {
    readonly path: string;
    readonly endpoint: EndpointOutcome;
    readonly client: Http2Endpoint;
  },
  logger: Logger,
): void {
  const { path, endpoint, client } = target;
  const outgoing: http2.OutgoingHttpHeaders = {
    ':method': headers[':method'] ?? 'GET',
    ':path': path,
    ':scheme': 'http',
    ':authority': headers[':authority'] ?? new URL(endpoint.origin).host,
  };
  forEachEndToEndHeader(headers, (name, value) => {
    // The responder answered any 100-continue itself (as for HTTP/1.1 services).
    if (name !== 'expect') outgoing[name] = value;
  });
  const local = client.request(outgoing, { endStream: !hasBody, waitForTrailers: hasBody });
  if (local instanceof Error) {
    // The initiator's own limits (the service's stream limit reached, shutting down) are not the
    // service failing: they are not charged to the endpoint (Envoy's circuit breakers are not).
    logger.warn({ target: endpoint.origin, path, err: local }, 'local service request failed');
    respondText(stream, 503, `local service ${endpoint.origin}: ${local.message}`, hasBody);
    return;
  }
  new Http2Exchange(stream, local, { endpoint, path, hasBody, logger }).start(headers);
}

interface ExchangeOptions {
  readonly endpoint: EndpointOutcome;
  readonly path: string;
  readonly hasBody: boolean;
  readonly logger: Logger;
}

/** One tunnel stream and the local stream it was sent on. */
class Http2Exchange {
  readonly #stream: ServerHttp2Stream;
  readonly #local: ClientHttp2Stream;
  readonly #options: ExchangeOptions;
  #requestTrailers: http2.OutgoingHttpHeaders = {};
  #responseTrailers: http2.OutgoingHttpHeaders = {};
  #responded = false;
  /** The whole response, END_STREAM included, came and was ended on the tunnel stream. */
  #responseEnded = false;
  #reported = false;
  /** The local stream's error (its session's, when that failed to connect). */
  #localError: Error | undefined;

  constructor(stream: ServerHttp2Stream, local: ClientHttp2Stream, options: ExchangeOptions) {
    this.#stream = stream;
    this.#local = local;
    this.#options = options;
  }

  start(headers: IncomingHttpHeaders): void {
    const stream = this.#stream;
    const local = this.#local;
    local.on('error', (error: Error) => {
      this.#localError = error;
    });
    // Request body: piped (backpressure both ways under flow control), ended only at END_STREAM.
    if (this.#options.hasBody) {
      const receivedEndStream = watchEndStream(stream, () =>
        contentLength(headers['content-length']),
      );
      stream.on('trailers', (trailers: IncomingHttpHeaders) => {
        this.#requestTrailers = endToEnd(trailers);
      });
      local.once('wantTrailers', () => {
        if (!local.destroyed) local.sendTrailers(this.#requestTrailers);
      });
      stream.pipe(local, { end: false });
      stream.once('end', () => {
        if (receivedEndStream()) local.end();
        else resetStreamWith(local, NGHTTP2_CANCEL);
      });
    }
    local.on('headers', (informational: IncomingHttpHeaders) => {
      if (Number(informational[':status']) === 103 && !stream.destroyed && !stream.headersSent) {
        stream.additionalHeaders({ ...endToEnd(informational), ':status': 103 });
      }
    });
    local.once('response', this.#onResponse);
    local.on('trailers', (trailers: IncomingHttpHeaders) => {
      this.#responseTrailers = endToEnd(trailers);
    });
    local.once('close', this.#onLocalClose);
    stream.once('close', this.#onStreamClose);
  }

  readonly #onResponse = (headers: IncomingHttpHeaders, flags: number): void => {
    const stream = this.#stream;
    const local = this.#local;
    const status = Number(headers[':status']);
    // Answered already (the route's timeout sent 504) or gone: the local stream is not needed.
    if (stream.destroyed || stream.closed || stream.headersSent) {
      resetStreamWith(local, NGHTTP2_CANCEL);
      return;
    }
    if (status > 599) {
      // RFC 9110 §15 ends at 599, and Node's respond() throws past it (outside any handler).
      resetStreamWith(local, NGHTTP2_CANCEL);
      this.#report('failed');
      const { endpoint, hasBody } = this.#options;
      respondText(
        stream,
        502,
        `local service ${endpoint.origin} answered with status ${status}`,
        hasBody,
      );
      return;
    }
    this.#report(status >= 500 ? 'failed' : 'succeeded');
    const response: http2.OutgoingHttpHeaders = { ...endToEnd(headers), ':status': status };
    this.#responded = true;
    // Trailers-only (gRPC's way to fail a call at once): END_STREAM on the HEADERS, as it came.
    if ((flags & NGHTTP2_FLAG_END_STREAM) !== 0) {
      stream.respond(response, { endStream: true });
      this.#responseEnded = true;
      this.#afterResponse();
      return;
    }
    stream.respond(response, { waitForTrailers: true });
    stream.once('wantTrailers', () => {
      if (!stream.destroyed) stream.sendTrailers(this.#responseTrailers);
    });
    const receivedEndStream = watchEndStream(local, () => contentLength(headers['content-length']));
    local.pipe(stream, { end: false });
    local.once('end', () => {
      if (!receivedEndStream()) return; // the local stream's close resets the tunnel stream
      this.#responseEnded = true;
      stream.end();
      this.#afterResponse();
    });
  };

  /** The response is complete: a request body still coming is not needed (RFC 9113 §8.1). */
  #afterResponse(): void {
    if (this.#options.hasBody) stopUpload(this.#stream);
  }

  readonly #onLocalClose = (): void => {
    const stream = this.#stream;
    const code = this.#local.rstCode ?? NGHTTP2_NO_ERROR;
    if (stream.destroyed || stream.closed) return;
    if (!this.#responded && stream.headersSent) return; // the route's timeout answered
    if (!this.#responded) {
      // No response at all: the service or its connection failed.
      this.#report('failed');
      const { endpoint, path, hasBody, logger } = this.#options;
      const reason =
        this.#localError !== undefined
          ? describeError(this.#localError)
          : code === NGHTTP2_NO_ERROR
            ? 'the stream closed before a response'
            : `the stream was reset (code ${code})`;
      logger.warn({ target: endpoint.origin, path, rstCode: code }, 'local service request failed');
      respondText(stream, 502, `local service ${endpoint.origin} failed: ${reason}`, hasBody);
      return;
    }
    if (!this.#responseEnded) {
      // Cut off (a reset, or a close without END_STREAM): reset with the local service's own code,
      // so that what was sent does not look complete.
      resetStreamWith(
        stream,
        code === NGHTTP2_NO_ERROR ? http2.constants.NGHTTP2_INTERNAL_ERROR : code,
      );
    }
  };

  readonly #onStreamClose = (): void => {
    const local = this.#local;
    if (local.destroyed || local.closed) return;
    // The responder reset the stream (the caller cancelled, or its deadline passed), or the tunnel
    // went away: the local service is told the call is cancelled, with no END_STREAM before it
    // that would end a client-streaming call's input as if it were complete.
    resetStreamWith(local, NGHTTP2_CANCEL);
  };

  #report(outcome: 'succeeded' | 'failed'): void {
    if (this.#reported) return;
    this.#reported = true;
    this.#options.endpoint[outcome]();
  }
}

function endToEnd(headers: IncomingHttpHeaders): http2.OutgoingHttpHeaders {
  const fields: http2.OutgoingHttpHeaders = {};
  forEachEndToEndHeader(headers, (name, value) => {
    fields[name] = value;
  });
  return fields;
}
