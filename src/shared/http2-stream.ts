/**
 * Two facts about Node's HTTP/2 streams (lib/internal/http2/core.js) that a proxy must work around
 * to never pass a truncated body off as complete.
 */
import type { Http2Stream } from 'node:http2';

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
 */
export function watchEndStream(stream: Http2Stream): () => boolean {
  let endStream = false;
  const push = stream.push.bind(stream);
  stream.push = (chunk: unknown, encoding?: BufferEncoding): boolean => {
    if (chunk === null && !endStream && !stream.closed) endStream = true;
    return push(chunk, encoding);
  };
  return () => endStream;
}
