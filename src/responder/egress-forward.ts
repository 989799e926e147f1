/**
 * A caller's request on a tunnel stream, and the response back (docs/streams.md §1), for every
 * caller protocol (egress-exchange.ts): the request body streams under HTTP/2 flow control with
 * its trailers as a trailing HEADERS frame, a 103 is passed on, the response body streams back
 * with its trailers, and a failure after the response head aborts the caller's side (connection
 * destroyed for HTTP/1.1, RST_STREAM for HTTP/2): a truncated body never looks complete.
 */
import http2, { type ClientHttp2Stream, type OutgoingHttpHeaders } from 'node:http2';
import { Transform, type TransformCallback } from 'node:stream';
import type { AccessRecord } from '../shared/access-format.ts';
import { describeError, isRevtunError, RevtunError } from '../shared/errors.ts';
import { forEachEndToEndHeader } from '../shared/hop-by-hop.ts';
import { contentLength, resetStream, watchEndStream } from '../shared/http2-stream.ts';
import type { Logger } from '../shared/logger.ts';
import { pump } from '../shared/pump.ts';
import type { CallerExchange, CallerReply } from './egress-exchange.ts';
import type { TunnelSession } from './tunnel-session.ts';

export interface ForwardOptions {
  readonly exchange: CallerExchange;
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
export const idempotentMethods = new Set(['GET', 'HEAD', 'OPTIONS']);

/** A one-line plain-text answer. */
export function reply(
  to: CallerReply,
  status: number,
  message: string,
  headers: OutgoingHttpHeaders = {},
): void {
  to.reply(
    status,
    { ...headers, 'content-type': 'text/plain; charset=utf-8' },
    Buffer.from(`${message}\n`, 'utf8'),
  );
}

/** 413, and the connection closes: the rest of the body is not read (RFC 9110 §15.5.14). */
export function bodyTooLarge(to: CallerReply, maxBytes: number): void {
  to.closeAfter();
  reply(to, 413, `the request body is larger than ${maxBytes} bytes (max_body_bytes)`);
}

/**
 * The initiator never saw the stream: it was never given an id, or the initiator refused it
 * (REFUSED_STREAM, also what nghttp2 reports for streams above a GOAWAY's last stream id), which
 * RFC 9113 §8.7 guarantees was not processed.
 */
function unprocessed(stream: ClientHttp2Stream): boolean {
  return stream.pending || stream.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM;
}

/**
 * The caller's request → HTTP/2 stream on the tunnel, and the response back. 'retry' when the
 * request is `retryable` and failed unprocessed, with nothing written to the caller; 'done'
 * otherwise.
 */
export async function forward(options: ForwardOptions): Promise<'done' | 'retry'> {
  const { exchange, headers, session, logger } = options;
  const withBody = exchange.hasBody;
  let stream: ClientHttp2Stream;
  try {
    // With a body, its end is a trailing HEADERS frame when the caller sent trailers ('wantTrailers'
    // below); without, END_STREAM is on the HEADERS.
    stream = session.request(headers, { endStream: !withBody, waitForTrailers: withBody });
  } catch (error) {
    if (options.retryable) return 'retry';
    exchange.access?.flag('UF');
    reply(
      exchange,
      502,
      `the tunnel to node ${session.identity.nodeId} failed: ${describeError(error)}`,
    );
    return 'done';
  }
  if (withBody) {
    stream.once('wantTrailers', () => {
      const trailers = exchange.trailers;
      // No trailers: Node ends the stream with an empty DATA frame carrying END_STREAM.
      if (!stream.destroyed) stream.sendTrailers(trailers === undefined ? {} : endToEnd(trailers));
    });
  }
  // What the response says its body is, once its headers are in: a HEAD, 204 or 304 has none.
  let declaredLength: number | undefined;
  const receivedEndStream = watchEndStream(stream, () => declaredLength);
  let responded = false;
  let tooLarge = false;
  let timedOut = false;
  let responseTrailers: OutgoingHttpHeaders | undefined;
  stream.once('trailers', (trailers: http2.IncomingHttpHeaders) => {
    responseTrailers = endToEnd(trailers);
  });
  // 1xx before the response: a 103 goes on to the caller; a 100 was the responder's own business.
  stream.on(
    'headers',
    (informational: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader) => {
      if (Number(informational[':status']) === 103)
        exchange.sendEarlyHints(endToEnd(informational));
    },
  );
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
  exchange.onClose(() => {
    if (stream.closed || (responded && stream.writableEnded)) return;
    resetStream(
      stream,
      http2.constants.NGHTTP2_CANCEL,
      responded ? 'the rest of the upload is not needed' : 'the caller went away',
    );
  });
  const upload = withBody
    ? sendBody(exchange, stream, {
        maxBytes: options.maxBodyBytes,
        onExceeded: () => {
          tooLarge = true;
        },
        logger,
      })
    : undefined;
  try {
    const { headers: responseHeaders, endStream } = await responseOf(stream);
    const status = Number(responseHeaders[':status']);
    const noBody = exchange.method === 'HEAD' || status === 204 || status === 304 || endStream;
    declaredLength = noBody ? 0 : contentLength(responseHeaders['content-length']);
    const sink = exchange.respond(status, endToEnd(responseHeaders), noBody);
    if (noBody) {
      // A trailers-only response (gRPC's) or a bodiless one: drained, so the stream can close.
      stream.resume();
      await ended(stream);
    } else {
      const pumped = pump(stream, sink, { end: false });
      // After pump's own 'data' listener: a listener added before it would start the flow early.
      if (exchange.access !== undefined) stream.on('data', exchange.access.countSent);
      await pumped;
    }
    if (!receivedEndStream()) {
      throw new RevtunError(
        'ERR_TUNNEL_FAILED',
        `stream closed with code ${stream.rstCode} before END_STREAM`,
      );
    }
    responded = true;
    if (!noBody && !exchange.end(responseTrailers)) {
      logger.debug(
        { node_id: session.identity.nodeId },
        'response trailers dropped: an HTTP/1.1 response with content-length cannot carry them',
      );
    }
  } catch (error) {
    if (options.retryable && !exchange.headersSent && !timedOut && unprocessed(stream)) {
      logger.debug(
        { node_id: session.identity.nodeId, err: error },
        'the initiator did not process the request; retrying it on another tunnel',
      );
      return 'retry';
    }
    const access = exchange.access;
    if (access !== undefined && !tooLarge) access.flag(timedOut ? 'UT' : 'UC');
    if (exchange.headersSent) {
      logger.info(
        { node_id: session.identity.nodeId, err: error },
        tooLarge
          ? 'request body passed max_body_bytes mid-response; caller aborted'
          : 'tunnel failed mid-response; caller aborted',
      );
      exchange.abort('the tunnel failed mid-response');
    } else if (tooLarge) {
      bodyTooLarge(exchange, options.maxBodyBytes ?? 0);
    } else if (timedOut) {
      reply(
        exchange,
        504,
        `node ${session.identity.nodeId} did not answer within ${options.responseTimeoutMs} ms (response_timeout)`,
      );
    } else {
      reply(
        exchange,
        502,
        `the tunnel to node ${session.identity.nodeId} failed before the response: ${describeError(error)}`,
      );
    }
    resetStream(stream, http2.constants.NGHTTP2_CANCEL, 'the response failed');
  }
  await upload;
  return 'done';
}

/** A message's end-to-end fields (pseudo-headers and hop-by-hop fields left out). */
function endToEnd(headers: Readonly<Record<string, string | string[] | number | undefined>>) {
  const out: Record<string, string | string[]> = {};
  forEachEndToEndHeader(headers, (name, value) => {
    out[name] = value;
  });
  return out;
}

/** Resolves at the stream's 'end', rejects if it closes or fails first. */
function ended(stream: ClientHttp2Stream): Promise<void> {
  if (stream.readableEnded) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onEnd = () => {
      cleanup();
      resolve();
    };
    const onClose = () => {
      cleanup();
      if (stream.readableEnded) resolve();
      else
        reject(new RevtunError('ERR_TUNNEL_FAILED', `stream closed with code ${stream.rstCode}`));
    };
    const cleanup = () => {
      stream.removeListener('end', onEnd);
      stream.removeListener('close', onClose);
    };
    stream.on('end', onEnd);
    stream.on('close', onClose);
  });
}

/**
 * Passes a request body on and fails once more than `maxBytes` went through. `onExceeded` runs at
 * once, before the failure reaches anything downstream, so the response side knows why the stream
 * died by the time it hears of it.
 */
class BodyLimit extends Transform {
  readonly #maxBytes: number;
  readonly #onExceeded: () => void;
  /** Where the bytes received from the caller are counted, with an access log. */
  readonly #access: AccessRecord | undefined;
  #bytes = 0;

  constructor(maxBytes: number, onExceeded: () => void, access: AccessRecord | undefined) {
    super();
    this.#maxBytes = maxBytes;
    this.#onExceeded = onExceeded;
    this.#access = access;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.#bytes += chunk.length;
    if (this.#access !== undefined) this.#access.bytesReceived = this.#bytes;
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
 * request is piped into rather than pumped from: pump() (pipeline's semantics) would destroy the
 * request, and with it the caller's connection, before a 413 could be written. Past the limit, the
 * BodyLimit fails and pump() destroys the stream, which resets it without END_STREAM
 * (http2-stream.ts): the initiator aborts the upload to its local service rather than finishing a
 * truncated one. The stream's end (END_STREAM, or the trailers) is sent on its 'wantTrailers'.
 */
function sendBody(
  exchange: CallerExchange,
  stream: ClientHttp2Stream,
  limit: { maxBytes: number | undefined; onExceeded: () => void; logger: Logger },
): Promise<void> {
  const done = (error: unknown) => {
    if (!isRevtunError(error, 'ERR_BODY_TOO_LARGE')) {
      limit.logger.debug({ err: error }, 'request body not fully forwarded');
    }
  };
  const body = exchange.body;
  // Piped, not pumped: pump() would destroy the caller's body on a tunnel failure, and with it
  // the HTTP/1.1 connection or the HTTP/2 stream that is to carry the 502 or 504.
  const counted = new BodyLimit(
    limit.maxBytes ?? Number.POSITIVE_INFINITY,
    limit.onExceeded,
    exchange.access,
  );
  const onClose = () => {
    // The caller went away mid-upload: fail the stream, never end it.
    if (!exchange.bodyComplete) counted.destroy(new Error('the caller aborted the upload'));
  };
  // The body's end is an end only when the caller really ended it: Node also ends an HTTP/2
  // stream's readable side at a reset (http2-stream.ts watchEndStream), and a cut-off upload must
  // reach the initiator as a reset, never as END_STREAM.
  const onEnd = () => {
    if (exchange.bodyComplete) counted.end();
    else counted.destroy(new Error('the caller reset its upload'));
  };
  body.once('close', onClose);
  body.once('end', onEnd);
  body.pipe(counted, { end: false });
  return pump(counted, stream)
    .catch(done)
    .finally(() => {
      body.removeListener('close', onClose);
      body.removeListener('end', onEnd);
      body.unpipe(counted);
    });
}

/**
 * The stream's response headers, and whether END_STREAM came on them (a client stream's
 * `endAfterHeaders` is not set: Node gives it as the 'response' event's flags); a rejection if the
 * stream closes or fails first.
 */
function responseOf(stream: ClientHttp2Stream): Promise<{
  headers: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader;
  endStream: boolean;
}> {
  return new Promise((resolve, reject) => {
    const onResponse = (
      headers: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader,
      flags: number,
    ) => {
      cleanup();
      resolve({ headers, endStream: (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0 });
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
