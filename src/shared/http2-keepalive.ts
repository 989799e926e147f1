/**
 * HTTP/2 PING keepalive for a tunnel that carries HTTP/2, on either role (architecture decision 5):
 * RPING covers the idle phase only, so without this a link that dies under a checked-out tunnel
 * would go unnoticed until TCP gives up, minutes later, and its requests would hang.
 *
 * A PING goes out every interval (plus 0–15 % jitter, as RPING, so that tunnels opened together do
 * not ping together); the next is scheduled once it is acknowledged. Node answers a peer's PING by
 * itself, so an Envoy peer needs nothing.
 *
 * The session ends through `onTimeout` when a PING has waited `timeoutMs` for its ACK *and* nothing
 * at all was read from the socket for `timeoutMs` (a read-idle watchdog). On a slow or saturated
 * link the ACK can queue behind megabytes of DATA, in either direction, while bytes keep arriving:
 * that link is alive, and closing it would fail every request on it. A dead link reads nothing, so
 * it is still found within interval + timeout (+ one read check).
 */
import type { Http2Session } from 'node:http2';

export interface KeepaliveOptions {
  readonly intervalMs: number;
  readonly timeoutMs: number;
  /** Called once, when a PING went unanswered and the socket read nothing for `timeoutMs`. */
  readonly onTimeout: () => void;
  /** Called with each round trip, ms (for stats). */
  readonly onRoundTrip?: (ms: number) => void;
}

const jitter = 0.15;
/** How often the socket's read count is checked while a PING waits: at most this late, ms. */
const maxReadCheckMs = 250;

/** Starts the keepalive; it stops by itself when the session closes. Returns a stop function. */
export function keepAlive(session: Http2Session, options: KeepaliveOptions): () => void {
  const { intervalMs, timeoutMs } = options;
  const readCheckMs = Math.min(maxReadCheckMs, Math.max(1, Math.floor(timeoutMs / 4)));
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const stop = () => {
    stopped = true;
    clearTimeout(timer);
  };
  const later = (fn: () => void, ms: number) => {
    timer = setTimeout(fn, ms);
    timer.unref();
  };
  // Node's proxy of the session's socket lets bytesRead through; the count lives in the handle,
  // which nghttp2 reads from, so it moves with every read, TLS or not.
  const bytesRead = () => session.socket?.bytesRead ?? 0;
  const schedule = () => {
    if (!stopped) later(ping, intervalMs * (1 + Math.random() * jitter));
  };
  const ping = () => {
    if (stopped || session.closed || session.destroyed) return;
    const sentAt = Date.now();
    let lastRead = bytesRead();
    let lastReadAt = sentAt;
    const check = () => {
      if (stopped) return;
      const now = Date.now();
      const read = bytesRead();
      if (read !== lastRead) {
        lastRead = read;
        lastReadAt = now;
      }
      if (now - sentAt >= timeoutMs && now - lastReadAt >= timeoutMs) {
        stop();
        options.onTimeout();
        return;
      }
      later(check, readCheckMs);
    };
    later(check, readCheckMs);
    const sent = session.ping((error, duration) => {
      if (stopped) return;
      clearTimeout(timer);
      // An error here means the session is going (ERR_HTTP2_PING_CANCEL): nothing to report.
      if (error !== null) return;
      options.onRoundTrip?.(duration);
      schedule();
    });
    // False: too many PINGs outstanding, which cannot happen with one at a time; keep the timer.
    void sent;
  };
  session.once('close', stop);
  schedule();
  return stop;
}
