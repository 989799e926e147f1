/**
 * One established tunnel at the initiator. While idle it echoes every RPING and sends nothing else
 * (protocol reference §5 "Silence rules"). At the first byte that is not part of an RPING it becomes
 * an HTTP/2 server on the same socket: Node's server session writes SETTINGS the moment it exists,
 * so it is created only then (architecture decision 3), with the bytes read so far handed back
 * through `socket.unshift()` so nghttp2 reads them first (nodejs/node#41185).
 *
 * Rapid reset (CVE-2023-44487): nghttp2's own guard answers a flood of streams the peer resets with
 * GOAWAY(INTERNAL_ERROR) but tells Node nothing, so the session and its socket would stay open,
 * holding the tunnel's slot, for as long as the peer likes. This tunnel keeps a smaller budget of its
 * own (streams the peer resets before any response) and closes the connection when it runs out.
 */
import http2, {
  type ServerHttp2Session,
  type ServerHttp2Stream,
  type IncomingHttpHeaders,
} from 'node:http2';
import type { Socket } from 'node:net';
import { RPING, RpingInterceptor } from '../protocol/rping.ts';
import { keepAlive } from '../shared/http2-keepalive.ts';
import {
  http2SessionOptions,
  openConnectionWindow,
  type Http2LimitsConfig,
} from '../shared/http2-limits.ts';

export type TunnelCloseReason =
  | 'peer_close'
  | 'read_error'
  | 'rping_flood'
  | 'rapid_reset'
  /** A PING on the HTTP/2 session went unacknowledged: the responder or the link is gone. */
  | 'http2_keepalive_timeout'
  | 'http2_closed'
  | 'local_close';

/**
 * Streams the responder may reset before they are answered: a burst, then a rate per second. Below
 * nghttp2's (1000, then 33 per second), so this one trips first.
 */
export const peerResetBurst = 500;
export const peerResetsPerSecond = 33;

export interface InitiatorTunnelOptions {
  /** SETTINGS_MAX_CONCURRENT_STREAMS the initiator announces as server. */
  readonly maxConcurrentStreams: number;
  /** The session's HTTP/2 limits (the initiator's `http2` config). */
  readonly limits: Http2LimitsConfig;
  readonly onStream: (
    stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    flags: number,
  ) => void;
  /** Called once when the responder sends GOAWAY: it drains this tunnel, so dial a replacement. */
  readonly onDraining?: () => void;
  /** Called once when the tunnel is gone. */
  readonly onClose: (reason: TunnelCloseReason, error?: Error) => void;
  /** Each acknowledged keepalive PING once HTTP/2 is up, with its round trip, ms (for stats). */
  readonly onPingRtt?: (ms: number) => void;
}

export class InitiatorTunnel {
  readonly socket: Socket;
  readonly establishedAt = Date.now();
  readonly #options: InitiatorTunnelOptions;
  readonly #interceptor = new RpingInterceptor();
  #session: ServerHttp2Session | undefined;
  #closed = false;
  /** What is left of the peer-reset budget, and when it was last refilled. */
  #resetTokens = peerResetBurst;
  #resetRefilledAt = Date.now();
  #streamsInFlight = 0;
  #lastPingRttMs: number | null = null;
  /** GOAWAY sent or received: the tunnel takes no new streams. */
  #draining = false;

  constructor(socket: Socket, options: InitiatorTunnelOptions) {
    this.socket = socket;
    this.#options = options;
  }

  /** True once HTTP/2 runs on the tunnel. */
  get active(): boolean {
    return this.#session !== undefined;
  }

  /** Streams open on the HTTP/2 session now. */
  get streamsInFlight(): number {
    return this.#streamsInFlight;
  }

  /** Round trip of the last acknowledged HTTP/2 PING, ms; null before the first (or while idle). */
  get lastPingRttMs(): number | null {
    return this.#lastPingRttMs;
  }

  /** True once either side sent GOAWAY. */
  get draining(): boolean {
    return this.#draining;
  }

  /** Starts echo mode with the bytes that followed the handshake response. */
  start(leftover: Buffer): void {
    this.socket.on('error', this.#onError);
    this.socket.on('close', this.#onSocketClose);
    this.socket.on('data', this.#onIdleData);
    if (leftover.length > 0) this.#onIdleData(leftover);
    if (!this.#closed && this.#session === undefined) this.socket.resume();
  }

  /** Graceful: GOAWAY on an active tunnel (streams finish), a plain close on an idle one. */
  close(): void {
    if (this.#session !== undefined) {
      this.#draining = true;
      if (!this.#session.closed) this.#session.close();
      return;
    }
    this.#finish('local_close');
  }

  destroy(): void {
    this.#session?.destroy();
    this.#finish('local_close');
  }

  #onIdleData = (chunk: Buffer): void => {
    const { echoes, data, flood } = this.#interceptor.feed(chunk, Date.now());
    if (flood) {
      // As Envoy's rping_interceptor.cc: the echo that trips the guard is written, then the
      // connection is reset (RST, not FIN) once those bytes have left.
      this.socket.removeListener('data', this.#onIdleData);
      this.socket.pause();
      this.socket.write(echoBytes(echoes), () => this.#finish('rping_flood', undefined, true));
      return;
    }
    if (echoes > 0) this.socket.write(echoBytes(echoes));
    if (data !== null) this.#startHttp2(data);
  };

  #startHttp2(data: Buffer): void {
    this.socket.removeListener('data', this.#onIdleData);
    this.socket.pause();
    this.socket.unshift(data);
    const options = http2SessionOptions(this.#options.limits);
    const session = http2.performServerHandshake(this.socket, {
      ...options,
      settings: {
        ...options.settings,
        maxConcurrentStreams: this.#options.maxConcurrentStreams,
        // RFC 8441 §3: the responder may open WebSockets as extended CONNECT (docs/streams.md §2).
        enableConnectProtocol: true,
      },
    });
    this.#session = session;
    session.on('error', () => {
      // Followed by 'close', which reports the end of the tunnel.
    });
    openConnectionWindow(session, this.#options.limits);
    session.on('stream', this.#options.onStream);
    keepAlive(session, {
      intervalMs: this.#options.limits.ping_interval,
      timeoutMs: this.#options.limits.ping_timeout,
      onRoundTrip: (ms) => {
        this.#lastPingRttMs = ms;
        this.#options.onPingRtt?.(ms);
      },
      onTimeout: () => {
        session.destroy();
        this.#finish('http2_keepalive_timeout');
      },
    });
    session.on('stream', (stream: ServerHttp2Stream) => {
      this.#streamsInFlight += 1;
      stream.once('close', () => {
        this.#streamsInFlight -= 1;
        if (stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR && !stream.headersSent) {
          this.#onPeerReset(session);
        }
      });
    });
    session.on('close', () => this.#finish('http2_closed'));
    session.once('goaway', () => {
      this.#draining = true;
      this.#options.onDraining?.();
    });
  }

  /** A stream the peer reset before it was answered: spends one token of the budget. */
  #onPeerReset(session: ServerHttp2Session): void {
    const now = Date.now();
    const refill = ((now - this.#resetRefilledAt) / 1000) * peerResetsPerSecond;
    this.#resetTokens = Math.min(peerResetBurst, this.#resetTokens + refill);
    this.#resetRefilledAt = now;
    this.#resetTokens -= 1;
    if (this.#resetTokens >= 0 || this.#closed) return;
    if (!session.destroyed) session.goaway(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
    // The GOAWAY is queued on the socket; end() flushes it, then the socket is destroyed.
    this.socket.end();
    this.#finish('rapid_reset');
  }

  #onError = (error: Error): void => {
    if (this.#session === undefined) this.#finish('read_error', error);
  };

  #onSocketClose = (): void => {
    if (this.#session === undefined) this.#finish('peer_close');
  };

  #finish(reason: TunnelCloseReason, error?: Error, reset = false): void {
    if (this.#closed) return;
    this.#closed = true;
    if (reset) this.socket.resetAndDestroy();
    else this.socket.destroy();
    this.#options.onClose(reason, error);
  }
}

/** `count` echoes in one write. */
function echoBytes(count: number): Buffer {
  return count === 1 ? RPING : Buffer.concat(Array.from({ length: count }, () => RPING));
}
