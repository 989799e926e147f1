/**
 * What the initiator's stream handlers (local-http1.ts, local-http2.ts, local-websocket.ts,
 * local-tcp.ts) share: the plain-text answers the initiator gives itself, and how a stream's
 * byte stream is spliced to a socket (WebSocket and TCP, docs/streams.md §2 and §3).
 */
import http2, { type ServerHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import { resetStreamWith, stopUpload, watchEndStream } from '../shared/http2-stream.ts';

/** The part of a local endpoint a handler reports to (local-routes.ts `LocalEndpoint`). */
export interface EndpointOutcome {
  readonly origin: string;
  succeeded(): void;
  failed(): void;
}

/** An answer of the initiator's own, as plain text; a request body still coming is stopped. */
export function respondText(
  stream: ServerHttp2Stream,
  status: number,
  message: string,
  hasBody: boolean,
  headers: http2.OutgoingHttpHeaders = {},
): void {
  if (stream.destroyed || stream.closed || stream.headersSent) return;
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

/**
 * Splices an answered tunnel stream (`:status 200` already sent) to a connected socket, both
 * directions with backpressure (pipe pauses a side whose sink is full: HTTP/2 flow control one way,
 * TCP the other) and half-close:
 *
 * - END_STREAM from the responder ends the socket's writable side (a FIN); the socket's end ends
 *   the stream (END_STREAM); the other direction keeps flowing until it ends too.
 * - The stream's read side ending without END_STREAM, or the stream closing before both directions
 *   ended, is an abort: the socket is reset (TCP RST) and destroyed.
 * - An error or an early close of the socket resets the stream with `resetCode`, never an
 *   END_STREAM that would pass a cut-off byte stream off as complete.
 *
 * The socket must be `allowHalfOpen`, or Node ends its writable side at the peer's FIN.
 */
export function spliceStream(
  stream: ServerHttp2Stream,
  socket: Socket,
  resetCode: number,
  onDone: (error?: Error) => void = () => {},
): void {
  const receivedEndStream = watchEndStream(stream);
  let socketEnded = false;
  // An abort is a TCP RST, so that the other side cannot take a cut-off stream for a whole one.
  const abort = () => {
    if (!socket.destroyed) socket.resetAndDestroy();
  };
  let done = false;
  const finish = (error?: Error) => {
    if (done) return;
    done = true;
    onDone(error);
  };
  socket.on('error', (error) => {
    resetStreamWith(stream, resetCode);
    finish(error);
  });
  socket.on('end', () => {
    socketEnded = true;
    if (!stream.destroyed) stream.end();
  });
  socket.on('close', () => {
    if (!socketEnded && !stream.destroyed) {
      // Closed without a FIN: the byte stream was cut off.
      resetStreamWith(stream, resetCode);
    }
    finish();
  });
  stream.on('end', () => {
    if (receivedEndStream()) socket.end();
    else abort();
  });
  stream.on('close', () => {
    if (stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR || !stream.readableEnded) abort();
  });
  stream.pipe(socket, { end: false });
  socket.pipe(stream, { end: false });
}
