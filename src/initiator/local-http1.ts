/**
 * A stream forwarded to an HTTP/1.1 local service (docs/streams.md §1), through the undici Pool of
 * the chosen endpoint. The response's 103 Early Hints go on as informational HEADERS and its
 * trailers (a chunked response's trailer section, RFC 9112 §7.1.2) as a trailing HEADERS frame.
 * Request trailers are not forwarded: undici has no way to send them on HTTP/1.1, so they are
 * dropped (an HTTP/2 local service gets them, local-http2.ts).
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import { PassThrough } from 'node:stream';
import type { Dispatcher, Pool } from 'undici';
import { describeError } from '../shared/errors.ts';
import { forEachEndToEndHeader } from '../shared/hop-by-hop.ts';
import { contentLength, stopUpload, watchEndStream } from '../shared/http2-stream.ts';
import type { Logger } from '../shared/logger.ts';
import { respondText, type EndpointOutcome } from './local-common.ts';

/** Sends one tunnel stream to an HTTP/1.1 local service and its response back. */
export function forwardHttp1(
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
  hasBody: boolean,
  target: { readonly path: string; readonly endpoint: EndpointOutcome; readonly pool: Pool },
  logger: Logger,
): void {
  const method = headers[':method'] ?? 'GET';
  const authority = headers[':authority'];
  const forwarded: Record<string, string | string[]> = {};
  forEachEndToEndHeader(headers, (name, value) => {
    // The responder's HTTP/1.1 server already answered any 100-continue; undici refuses expect.
    if (name !== 'expect') forwarded[name] = value;
  });
  if (authority !== undefined) forwarded['host'] = authority;
  const body = hasBody ? requestBody(stream, contentLength(headers['content-length'])) : null;
  const { path, endpoint, pool } = target;
  pool.dispatch(
    { path, method, headers: forwarded, body },
    new LocalExchange({ stream, endpoint, path, hasBody, head: method === 'HEAD', logger }),
  );
}

interface ExchangeOptions {
  readonly stream: ServerHttp2Stream;
  readonly endpoint: EndpointOutcome;
  /** A HEAD request: the response has no body, hence no trailers. */
  readonly head: boolean;
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
  /** The response was started with `waitForTrailers`: its end must call sendTrailers(). */
  #waitForTrailers = false;

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
    const { stream, endpoint } = this.#options;
    // 1xx: informational, the response is still to come. 103 Early Hints goes on (docs/streams.md
    // §1); 100 is each hop's own business, and undici fails a 100 nobody asked for anyway.
    if (statusCode < 200) {
      if (statusCode === 103 && !stream.destroyed && !stream.headersSent) {
        const hints: OutgoingHttpHeaders = { ':status': 103 };
        forEachEndToEndHeader(headers, (name, value) => {
          hints[name] = value;
        });
        stream.additionalHeaders(hints);
      }
      return;
    }
    // Answered already (the route's timeout sent 504) or gone: this response has nowhere to go.
    if (stream.destroyed || stream.closed || stream.headersSent) {
      controller.abort(new Error('the tunnel stream was answered or closed before the response'));
      return;
    }
    if (statusCode > 599) {
      // RFC 9110 §15 ends at 599, and respond() throws past it: a 502 (onResponseError) instead.
      controller.abort(new Error(`the local service answered with status ${statusCode}`));
      return;
    }
    // Passive failure detection counts what Envoy's outlier detection does: 5xx and failures.
    if (statusCode >= 500) endpoint.failed();
    else endpoint.succeeded();
    const response: OutgoingHttpHeaders = { ':status': statusCode };
    forEachEndToEndHeader(headers, (name, value) => {
      response[name] = value;
    });
    stream.on('drain', this.#onDrain);
    // Trailers can only follow a chunked body (RFC 9112 §7.1.2). Waiting for them means the stream
    // ends only at sendTrailers(), which onResponseEnd always calls, with {} when none came (Node
    // then sends an empty DATA frame with END_STREAM, not an empty HEADERS).
    this.#waitForTrailers =
      !this.#options.head &&
      String(headers['transfer-encoding'] ?? '')
        .toLowerCase()
        .includes('chunked');
    stream.respond(response, { waitForTrailers: this.#waitForTrailers });
    // Only once it is out: a respond() that throws leaves a 502 to onResponseError.
    this.#responded = true;
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.#options.stream.write(chunk)) controller.pause();
  }

  onResponseEnd(
    _controller: Dispatcher.DispatchController,
    trailers: IncomingHttpHeaders | undefined,
  ): void {
    const { stream } = this.#options;
    this.#ended = true;
    stream.removeListener('drain', this.#onDrain);
    if (this.#waitForTrailers) {
      const fields: OutgoingHttpHeaders = {};
      if (trailers !== undefined) {
        forEachEndToEndHeader(trailers, (name, value) => {
          fields[name] = value;
        });
      }
      stream.once('wantTrailers', () => stream.sendTrailers(fields));
    }
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
    // The stream closed, or was answered (the route's timeout), first: nobody is left to answer.
    if (stream.destroyed || stream.closed || stream.headersSent) return;
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
