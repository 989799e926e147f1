/**
 * Joins a connection and a tunnel stream that carries a byte stream (a TCP CONNECT or a WebSocket
 * after its 200, docs/streams.md §2 and §3), both ways, with the rules of RFC 9113 §8.5. Both
 * roles use it: the responder for its caller's connection (or an HTTP/2 caller's stream), the
 * initiator for its connection to the TCP target or the WebSocket service; "caller" below is that
 * connection, whichever role holds it.
 *
 * - Backpressure: a write that returns false pauses the other side until 'drain', so at most a
 *   highWaterMark (plus one chunk) is held per direction; HTTP/2 flow control does the rest.
 * - Half-close: the caller's FIN ends the stream (END_STREAM), and the stream's END_STREAM ends the
 *   connection (FIN), each direction on its own; the other keeps flowing until it ends too.
 * - Aborts: an error or a close without FIN on the caller's side resets the stream with
 *   CONNECT_ERROR; a reset stream, a stream whose end was not END_STREAM (RST_STREAM(NO_ERROR), a
 *   tunnel that died) or a stream error destroys the connection, so that a cut-off byte stream is
 *   never passed off as a closed one.
 *
 * Not `pump`: it destroys both sides with one error, which resets the stream as INTERNAL_ERROR,
 * and it cannot keep one direction going while the other has ended.
 */
import http2, { type Http2Stream } from 'node:http2';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { resetStreamWith, watchEndStream } from './http2-stream.ts';

export interface SpliceResult {
  /** Bytes from the caller to the stream. */
  readonly rxBytes: number;
  /** Bytes from the stream to the caller. */
  readonly txBytes: number;
  /** `closed` when both directions ended cleanly, else which side aborted. */
  readonly outcome: 'closed' | 'caller_reset' | 'stream_reset';
}

interface SpliceHooks {
  /** Each chunk from the caller to the stream (for live byte counters). */
  readonly onRx?: (bytes: number) => void;
  /** Each chunk from the stream to the caller. */
  readonly onTx?: (bytes: number) => void;
}

const { NGHTTP2_CONNECT_ERROR, NGHTTP2_NO_ERROR } = http2.constants;

/** One side of a splice: a caller's socket, or an HTTP/2 stream (the tunnel's, or a caller's). */
interface Side {
  readonly stream: Duplex;
  /** Whether the side's 'end' was a real end (FIN, END_STREAM), not a reset read as an end. */
  readonly endedByPeer: () => boolean;
  /** Whether the side, once closed, closed without an error code. */
  readonly closedCleanly: () => boolean;
  /** Aborts it: RST_STREAM with the splice's code for a stream, a destroy for a socket. */
  readonly abort: () => void;
}

export interface SpliceOptions extends SpliceHooks {
  /** Bytes to write to the tunnel stream first (what a caller sent after its upgrade request). */
  readonly head?: Buffer | undefined;
  /** The RST_STREAM code of an abort: CONNECT_ERROR for TCP (the default), CANCEL for WebSocket. */
  readonly resetCode?: number;
}

/** A socket, or any Duplex that is not an HTTP/2 stream. */
function socketSide(socket: Duplex): Side {
  return {
    stream: socket,
    endedByPeer: () => true,
    closedCleanly: () => socket.errored === null,
    abort: () => resetSocket(socket),
  };
}

/**
 * An HTTP/2 stream; `watched` says whether it is watched from before its first DATA (a client
 * stream just opened). A server stream handed over later relies on `watchEndStream`'s state read.
 */
function streamSide(stream: Http2Stream, resetCode: number): Side {
  const endedByPeer = watchEndStream(stream);
  return {
    stream,
    endedByPeer,
    closedCleanly: () => stream.rstCode === NGHTTP2_NO_ERROR,
    abort: () => resetStreamWith(stream, resetCode),
  };
}

/**
 * Splices a caller (`socket`, or an HTTP/2 caller's stream) and a tunnel stream until both are
 * done; resolves (never rejects) with the bytes each way and how it ended. Both must be given
 * before either is read from.
 */
export function splice(
  caller: Duplex | Http2Stream,
  tunnel: Http2Stream,
  options: SpliceOptions = {},
): Promise<SpliceResult> {
  const code = options.resetCode ?? NGHTTP2_CONNECT_ERROR;
  const callerSide = isHttp2Stream(caller) ? streamSide(caller, code) : socketSide(caller);
  const tunnelSide = streamSide(tunnel, code);
  return new Promise((resolve) => {
    let rxBytes = 0;
    let txBytes = 0;
    let outcome: SpliceResult['outcome'] = 'closed';
    let open = 2;
    /** Which directions have ended cleanly (a real FIN or END_STREAM passed on). */
    const ended = new Set<Side>();
    const abort = (why: 'caller_reset' | 'stream_reset') => {
      if (outcome === 'closed') outcome = why;
      callerSide.abort();
      tunnelSide.abort();
    };
    const done = () => {
      open -= 1;
      if (open === 0) resolve({ rxBytes, txBytes, outcome });
    };
    const head = options.head;
    if (head !== undefined && head.length > 0) {
      rxBytes += head.length;
      options.onRx?.(head.length);
      tunnel.write(head);
    }
    direction(callerSide, tunnelSide, 'caller_reset', (bytes) => {
      rxBytes += bytes;
      options.onRx?.(bytes);
    });
    direction(tunnelSide, callerSide, 'stream_reset', (bytes) => {
      txBytes += bytes;
      options.onTx?.(bytes);
    });

    /**
     * One direction, `from` → `to`, plus `from`'s own close: its real end ends `to`; a close
     * without that end, or with an error, aborts both sides.
     */
    function direction(
      from: Side,
      to: Side,
      why: 'caller_reset' | 'stream_reset',
      count: (bytes: number) => void,
    ): void {
      const source = from.stream;
      const sink = to.stream;
      source.on('data', (chunk: Buffer) => {
        count(chunk.length);
        if (!sink.write(chunk)) source.pause();
      });
      sink.on('drain', () => source.resume());
      source.on('end', () => {
        if (!from.endedByPeer()) {
          abort(why);
          return;
        }
        ended.add(from);
        if (!sink.destroyed) sink.end();
      });
      source.on('error', () => abort(why));
      const onClose = () => {
        // Closed before its end or with an error code (a reset, a lost tunnel), or closed while
        // the other side still sends to it (RST_STREAM(NO_ERROR) stopping what it no longer
        // reads, a socket closed in full): an abort, so that a cut-off byte stream never looks
        // closed.
        if (!ended.has(from) || !ended.has(to) || !from.closedCleanly()) abort(why);
        done();
      };
      if (source.destroyed) onClose();
      else source.on('close', onClose);
      // An upgraded socket may have been left paused by its HTTP parser.
      source.resume();
    }
  });
}

/**
 * Destroys a caller's connection with an RST where it can (a plain TCP socket), so the caller sees
 * an abort and not a FIN; a TLS socket (whose handle is not TCP) is just destroyed.
 */
export function resetSocket(socket: Duplex): void {
  if (socket.destroyed) return;
  if (socket instanceof net.Socket && !(socket instanceof tls.TLSSocket)) {
    try {
      socket.resetAndDestroy();
      return;
    } catch {
      // Not connected over TCP after all: destroyed below.
    }
  }
  socket.destroy();
}

function isHttp2Stream(stream: Duplex | Http2Stream): stream is Http2Stream {
  return 'rstCode' in stream;
}
