/**
 * Which protocol a cleartext egress connection speaks: HTTP/2 with prior knowledge starts with the
 * 24-byte client connection preface (RFC 9113 §3.4), and no HTTP/1.1 request line can begin with
 * `PRI * HTTP/2.0` (RFC 9113 §3.4 chose it so). The first bytes are read until they either differ
 * from the preface or make all of it, then put back (`unshift`) for the server that takes the
 * socket: Node's HTTP/1.1 parser reads them as its first 'data', its HTTP/2 session passes
 * buffered bytes to nghttp2 before reading the socket itself.
 */
import type { Socket } from 'node:net';

/** RFC 9113 §3.4. */
export const http2Preface = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export type SniffedProtocol = 'http/1.1' | 'h2';

export interface SniffOptions {
  /** How long the first bytes may take, ms; the socket is destroyed after it. */
  readonly timeoutMs: number;
  /** The socket is handed on with its first bytes put back. */
  readonly onProtocol: (protocol: SniffedProtocol, socket: Socket) => void;
  /** The socket closed, failed or timed out before a decision; it is destroyed. */
  readonly onGiveUp: (why: string) => void;
}

/**
 * Reads at most 24 bytes from a fresh socket and decides. Bounded in bytes (the preface's length)
 * and in time (`timeoutMs`, from the connection); a socket that sends nothing is destroyed then.
 */
export function sniffProtocol(socket: Socket, options: SniffOptions): void {
  let seen: Buffer = Buffer.alloc(0);
  let decided = false;
  const finish = (protocol: SniffedProtocol | undefined, why = '') => {
    if (decided) return;
    decided = true;
    clearTimeout(deadline);
    socket.removeListener('data', onData);
    socket.removeListener('end', onEnd);
    socket.removeListener('close', onClose);
    socket.removeListener('error', onError);
    if (protocol === undefined) {
      socket.destroy();
      options.onGiveUp(why);
      return;
    }
    socket.pause();
    if (seen.length > 0) socket.unshift(seen);
    options.onProtocol(protocol, socket);
  };
  const onData = (chunk: Buffer) => {
    seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
    const compared = Math.min(seen.length, http2Preface.length);
    if (seen.subarray(0, compared).compare(http2Preface, 0, compared) !== 0) {
      finish('http/1.1');
    } else if (compared === http2Preface.length) {
      finish('h2');
    }
  };
  // Too little to decide, and nothing more will come: no request to answer.
  const onEnd = () => finish(undefined, 'closed before a request');
  const onClose = () => finish(undefined, 'closed before a request');
  const onError = (error: Error) => finish(undefined, error.message);
  const deadline = setTimeout(
    () => finish(undefined, `no request within ${options.timeoutMs} ms (headers_timeout)`),
    options.timeoutMs,
  );
  socket.on('data', onData);
  socket.on('end', onEnd);
  socket.on('close', onClose);
  socket.on('error', onError);
}
