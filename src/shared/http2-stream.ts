/**
 * Facts about Node's HTTP/2 streams (lib/internal/http2/core.js) that a proxy must work around to
 * never pass a truncated body off as complete, nor cut off a complete one.
 */
import http2, { type Http2Stream } from 'node:http2';

/**
 * Resets a stream so that the peer sees an error, never a clean end. Node's `close(code)` first
 * ends a still-open writable side (`closeStream` calls `stream.end()`), which puts END_STREAM on
 * the wire ahead of RST_STREAM: the peer then reads whatever was sent as a complete body.
 * `destroy(error)` resets without END_STREAM (as INTERNAL_ERROR), so it is used while the writable
 * side is open, and `close(code)` only once it has ended.
 */
export function resetStream(stream: Http2Stream, code: number, reason: string): void {
  if (stream.destroyed) return;
  if (stream.writableEnded) stream.close(code);
  else stream.destroy(new Error(reason));
}

/**
 * Resets a stream with `code` (RST_STREAM), never with an END_STREAM in front of it, for the
 * resets whose code matters: CONNECT_ERROR for a TCP or WebSocket tunnel (RFC 9113 §8.5), CANCEL,
 * or the code an HTTP/2 local service reset its own stream with. `close(code)` would end a
 * writable side still open first (`closeStream` calls `stream.end()`), which may put END_STREAM
 * on the wire, and `destroy()` cannot choose the code (it sends INTERNAL_ERROR); so while the
 * writable side is open, `close(code)` runs with `end` made a no-op for that one call, and Node's
 * own `finishCloseStream` submits the RST_STREAM with the stream's state kept consistent.
 */
export function resetStreamWith(stream: Http2Stream, code: number): void {
  if (stream.destroyed || stream.closed) return;
  if (stream.writableEnded) {
    stream.close(code);
    return;
  }
  const own = Object.getOwnPropertyDescriptor(stream, 'end');
  stream.end = () => stream;
  try {
    stream.close(code);
  } finally {
    if (own === undefined) delete (stream as { end?: unknown }).end;
    else Object.defineProperty(stream, 'end', own);
  }
}

/**
 * Reports whether the peer really ended the stream with END_STREAM. Node ends a stream's readable
 * side in two ways: at END_STREAM and when the stream closes without it — RST_STREAM(NO_ERROR) or
 * the session dying. Both look like a normal 'end', and `rstCode` is NO_ERROR in the first of those
 * too. This watches for the difference, once, on this stream only, with two signals:
 *
 * - The order of the EOF. For END_STREAM, nghttp2 calls `on_frame_recv` (Node's `HandleDataFrame`,
 *   src/node_http2.cc, or `onSessionHeaders` for a HEADERS frame) before it shuts the stream's read
 *   side and closes it, and Node pushes the EOF right there, synchronously, whether or not the
 *   stream is being read. Without END_STREAM the EOF comes from `onStreamClose`
 *   (lib/internal/http2/core.js), which marks the stream closed first. So EOF pushed while
 *   `!stream.closed` is END_STREAM.
 * - nghttp2's own record, `stream.state.remoteClose`: 1 once the peer's END_STREAM shut the read
 *   side (`nghttp2_session_get_stream_remote_close`). Only while the stream is open: closing shuts
 *   both sides before `onStreamClose` runs, so a reset reads 1 there too, and once the stream is
 *   gone `state` is empty. So it is read once, when watching starts, if the stream is not closed.
 *
 * The second is needed because whoever watches may come too late for the first: a server stream
 * is handed over in a 'stream' event queued with `process.nextTick`, and when a session's input is
 * fed from JavaScript (a non-native socket through JSStreamSocket, or the bytes the initiator
 * unshifts before the HTTP/2 handshake, which Node passes to `receive()`), those ticks run only
 * after the whole chunk: a request's HEADERS, DATA and END_STREAM may all have been handled, and
 * the EOF pushed, before the 'stream' handler can watch. A stream watched from its creation (a
 * client's request) needs only the first.
 *
 * Last, a message that declared its length (`content-length`, which nghttp2 checks against the
 * DATA it received: a mismatch is a stream error, never NO_ERROR) is also complete when all of it
 * arrived and the stream closed with NO_ERROR, with or without END_STREAM. Without it is what the
 * soak saw: a peer's RST_STREAM(NO_ERROR) sent just after its body can go out ahead of the queued
 * END_STREAM (the initiator's stop of an upload no longer needed did this until `stopUpload` waited
 * for END_STREAM to leave; on Node 22 an empty response's HEADERS were dropped too), so that
 * END_STREAM never comes. Another peer may still do it. A chunked message cut that
 * way is not complete on the wire either, and counts as incomplete. `declaredLength` gives that
 * length once it is known (the response's headers come later than the stream).
 */
export function watchEndStream(
  stream: Http2Stream,
  declaredLength: () => number | undefined = () => undefined,
): () => boolean {
  let endStream = !stream.closed && remoteClosed(stream);
  // Bytes already buffered: a stream whose HEADERS, DATA and END_STREAM came in one read may have
  // had its body pushed before whoever handles it could watch.
  let received = stream.readableLength;
  const push = stream.push.bind(stream);
  stream.push = (chunk: unknown, encoding?: BufferEncoding): boolean => {
    if (chunk === null) {
      if (!endStream && !stream.closed) endStream = true;
    } else if (Buffer.isBuffer(chunk)) {
      received += chunk.length;
    }
    return push(chunk, encoding);
  };
  return () => {
    // END_STREAM on the HEADERS frame itself (no body at all): Node records that flag as such.
    if (endStream || stream.endAfterHeaders) return true;
    const declared = declaredLength();
    return (
      declared !== undefined &&
      received === declared &&
      stream.rstCode === http2.constants.NGHTTP2_NO_ERROR
    );
  };
}

/**
 * Whether nghttp2 has shut the stream's read side; meaningful only while the stream is open (see
 * above). `state` is `{}` once the stream is destroyed and all zeros once nghttp2 freed it.
 */
function remoteClosed(stream: Http2Stream): boolean {
  return stream.state.remoteClose === 1;
}

/** First and longest wait between checks of whether END_STREAM has left, ms (see stopUpload). */
const stopUploadFirstWaitMs = 5;
const stopUploadMaxWaitMs = 500;

/**
 * After a complete response, asks the peer to stop sending a request body that is still coming:
 * RST_STREAM(NO_ERROR) after END_STREAM (RFC 9113 §8.1). The reset waits until nghttp2 has sent
 * END_STREAM (`state.localClose`): `close()` puts RST_STREAM ahead of HEADERS and DATA still queued
 * in nghttp2, which cuts the response off (an empty one loses its END_STREAM; on Node 22 even its
 * HEADERS go), and the caller of a complete answer gets a 502. Checked on the next turn of the
 * event loop, then at growing intervals for a response held back by flow control; nothing is done
 * once the upload has ended or the stream has closed.
 */
export function stopUpload(stream: Http2Stream): void {
  let waitMs = 0;
  const attempt = () => {
    if (stream.readableEnded || stream.closed || stream.destroyed) return;
    if (stream.state.localClose === 1) {
      stream.close(http2.constants.NGHTTP2_NO_ERROR);
      return;
    }
    waitMs = Math.min(stopUploadMaxWaitMs, Math.max(stopUploadFirstWaitMs, waitMs * 2));
    setTimeout(attempt, waitMs).unref();
  };
  setImmediate(attempt);
}

/** A `content-length` header as a byte count, or undefined when absent or not one number. */
export function contentLength(value: string | string[] | undefined): number | undefined {
  if (typeof value !== 'string' || !/^\d{1,15}$/.test(value)) return undefined;
  return Number(value);
}
