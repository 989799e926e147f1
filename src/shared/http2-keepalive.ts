/**
 * HTTP/2 PING keepalive for a tunnel that carries HTTP/2, on either role (architecture decision 5):
 * RPING covers the idle phase only, so without this a link that dies under a checked-out tunnel
 * would go unnoticed until TCP gives up, minutes later, and its requests would hang.
 *
 * A PING goes out every interval (plus 0–15 % jitter, as RPING, so that tunnels opened together do
 * not ping together); the next is scheduled once it is acknowledged. One not acknowledged within
 * the timeout ends the session through `onTimeout`. Node answers a peer's PING by itself, so an
 * Envoy peer needs nothing.
 */
import type { Http2Session } from 'node:http2';

export interface KeepaliveOptions {
  readonly intervalMs: number;
  readonly timeoutMs: number;
  /** Called once, when a PING went unanswered for `timeoutMs`. */
  readonly onTimeout: () => void;
  /** Called with each round trip, ms (for stats). */
  readonly onRoundTrip?: (ms: number) => void;
}

const jitter = 0.15;

/** Starts the keepalive; it stops by itself when the session closes. Returns a stop function. */
export function keepAlive(session: Http2Session, options: KeepaliveOptions): () => void {
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const stop = () => {
    stopped = true;
    clearTimeout(timer);
  };
  const schedule = () => {
    if (stopped) return;
    const delay = options.intervalMs * (1 + Math.random() * jitter);
    timer = setTimeout(ping, delay);
    timer.unref();
  };
  const ping = () => {
    if (stopped || session.closed || session.destroyed) return;
    timer = setTimeout(() => {
      if (stopped) return;
      stop();
      options.onTimeout();
    }, options.timeoutMs);
    timer.unref();
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
