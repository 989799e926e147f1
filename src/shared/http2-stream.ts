/**
 * Two facts about Node's HTTP/2 streams (lib/internal/http2/core.js) that a proxy must work around
 * to never pass a truncated body off as complete.
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
 * Reports whether the peer really ended the stream with END_STREAM. Node ends a stream's readable
 * side in two ways: at END_STREAM (`onStreamRead` pushes EOF while the stream is still open) and
 * when the stream closes without it — RST_STREAM(NO_ERROR) or the session dying — where
 * `onStreamClose` marks it closed first and then pushes EOF. Both look like a normal 'end', and
 * `rstCode` is NO_ERROR in the first of those too, so the only difference is whether the stream
 * was already closed when EOF was pushed. This watches for that, once, on this stream only.
 *
 * That order is not enough on its own: when END_STREAM arrives while the stream is not being read
 * (in the same read as the headers, or under backpressure), Node queues the EOF, closes the stream
 * and only then pushes it, exactly as for a reset. So a message that declared its length
 * (`content-length`, which nghttp2 checks against the DATA it received: a mismatch is a stream
 * error, never NO_ERROR) is also complete when all of it arrived and the stream closed with
 * NO_ERROR. `declaredLength` gives that length once it is known (the response's headers come
 * later than the stream).
 */
export function watchEndStream(
  stream: Http2Stream,
  declaredLength: () => number | undefined = () => undefined,
): () => boolean {
  let endStream = false;
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

/** A `content-length` header as a byte count, or undefined when absent or not one number. */
export function contentLength(value: string | string[] | undefined): number | undefined {
  if (typeof value !== 'string' || !/^\d{1,15}$/.test(value)) return undefined;
  return Number(value);
}
