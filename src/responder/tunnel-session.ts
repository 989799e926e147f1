/**
 * A checked-out tunnel: the responder is the HTTP/2 client on the socket the initiator dialled
 * (protocol reference §6, reversed roles). One session carries many concurrent streams; a socket
 * that carried HTTP/2 never returns to the idle pool.
 */
import http2, {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  type OutgoingHttpHeaders,
} from 'node:http2';
import type { Socket } from 'node:net';
import type { Identity } from '../protocol/handshake.ts';
import { keepAlive } from '../shared/http2-keepalive.ts';
import {
  http2SessionOptions,
  openConnectionWindow,
  type Http2LimitsConfig,
} from '../shared/http2-limits.ts';

export interface TunnelSessionOptions {
  readonly identity: Identity;
  /** The session's HTTP/2 limits (the responder's `http2` config). */
  readonly limits: Http2LimitsConfig;
  /** Called each time one of its streams closes (a place for another stream). */
  readonly onStreamClosed?: () => void;
  /** Called with the round trip of each acknowledged keepalive PING, ms. */
  readonly onPingAck?: (ms: number) => void;
  /** Called once when the session and its socket are gone; `closedLocally` if revtun closed it. */
  readonly onClose: (
    session: TunnelSession,
    error: Error | undefined,
    closedLocally: boolean,
  ) => void;
}

/**
 * Streams a session may carry before the initiator's SETTINGS arrive: RFC 9113 §6.5.2 recommends
 * that a peer allow at least 100.
 */
const streamsBeforeSettings = 100;

export class TunnelSession {
  readonly identity: Identity;
  readonly openedAt = Date.now();
  readonly #session: ClientHttp2Session;
  readonly #socket: Socket;
  readonly #options: TunnelSessionOptions;
  #inFlight = 0;
  /** No new streams: GOAWAY sent or received, or the session is gone. */
  #draining = false;
  #closedLocally = false;
  #closed = false;
  #error: Error | undefined;
  #peerLimit: number | undefined;
  #keepaliveTimedOut = false;
  #settingsReceived = false;
  #lastPingRttMs: number | null = null;

  constructor(socket: Socket, options: TunnelSessionOptions) {
    this.identity = options.identity;
    this.#options = options;
    this.#socket = socket;
    socket.on('error', () => {
      // The session sees the same error and reports it through its own 'error'/'close'.
    });
    socket.setNoDelay(true);
    // The URL only names the session: the socket is given and every stream sets its :authority.
    // Not the node id, which the URL parser refuses when its last label is a number ("edge.1"
    // reads as a malformed IPv4 address).
    this.#session = http2.connect('http://reverse-tunnel', {
      ...http2SessionOptions(options.limits),
      // The initiator is the HTTP/2 server: with push off, it may reserve no streams at all.
      maxReservedRemoteStreams: 0,
      createConnection: () => socket,
    });
    this.#session.on('error', (error: Error) => {
      this.#error = error;
    });
    openConnectionWindow(this.#session, options.limits);
    this.#session.on('remoteSettings', (settings: http2.Settings) => {
      this.#peerLimit = settings.maxConcurrentStreams;
      this.#settingsReceived = true;
    });
    this.#session.on('goaway', () => {
      // The initiator drains this tunnel (Envoy's drain-aware HCM sends GOAWAY): no new streams,
      // and the tunnel goes once its streams are done, which frees the node's place.
      this.#draining = true;
      this.#closeWhenIdle();
    });
    keepAlive(this.#session, {
      intervalMs: options.limits.ping_interval,
      timeoutMs: options.limits.ping_timeout,
      onRoundTrip: (ms) => {
        this.#lastPingRttMs = ms;
        options.onPingAck?.(ms);
      },
      onTimeout: () => {
        // The initiator or the link is gone: fail the streams now rather than when TCP gives up.
        this.#keepaliveTimedOut = true;
        this.#draining = true;
        this.#session.destroy(
          new Error(`no HTTP/2 PING acknowledgement within ${options.limits.ping_timeout} ms`),
        );
        socket.destroy();
      },
    });
    this.#session.on('close', () => {
      this.#draining = true;
      if (this.#closed) return;
      this.#closed = true;
      this.#options.onClose(this, this.#error, this.#closedLocally);
    });
  }

  /** The tunnel's TCP (or TLS) socket, for listings: addresses and byte counts. */
  get socket(): Socket {
    return this.#socket;
  }

  /** Round trip of the last acknowledged keepalive PING, ms, or null before the first. */
  get lastPingRttMs(): number | null {
    return this.#lastPingRttMs;
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  /** True while the session takes new streams: not draining, and below the peer's stream limit. */
  get available(): boolean {
    return !this.#draining && this.#inFlight < (this.#peerLimit ?? streamsBeforeSettings);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** No new streams: GOAWAY sent or received, or the session is gone. */
  get draining(): boolean {
    return this.#draining;
  }

  /**
   * Whether the initiator advertised SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 (RFC 8441 §3): only then
   * may an extended CONNECT (a WebSocket, docs/streams.md §2) go on this tunnel. A session just
   * checked out may not have the initiator's SETTINGS yet, so this waits for them, at most
   * `timeoutMs`; false if they do not come in time or the session closes first.
   */
  connectProtocol(timeoutMs: number): Promise<boolean> {
    const session = this.#session;
    if (this.#settingsReceived) {
      return Promise.resolve(session.remoteSettings.enableConnectProtocol === true);
    }
    if (this.#closed) return Promise.resolve(false);
    return new Promise((resolve) => {
      const finish = () => {
        clearTimeout(timer);
        session.removeListener('remoteSettings', finish);
        session.removeListener('close', finish);
        resolve(this.#settingsReceived && session.remoteSettings.enableConnectProtocol === true);
      };
      const timer = setTimeout(finish, timeoutMs);
      session.once('remoteSettings', finish);
      session.once('close', finish);
    });
  }

  /** True if the session was closed because a PING went unacknowledged. */
  get keepaliveTimedOut(): boolean {
    return this.#keepaliveTimedOut;
  }

  /**
   * Opens a stream; the session counts it until it closes. With `waitForTrailers` the request's
   * end is the caller's to send on 'wantTrailers' (`sendTrailers`, docs/streams.md §1).
   */
  request(
    headers: OutgoingHttpHeaders,
    options: { endStream: boolean; waitForTrailers?: boolean },
  ): ClientHttp2Stream {
    const stream = this.#session.request(headers, {
      endStream: options.endStream,
      waitForTrailers: options.waitForTrailers ?? false,
    });
    // The caller observes failures through its own listeners; this one only keeps an unobserved
    // stream error from becoming an uncaught exception.
    stream.on('error', () => {});
    this.#inFlight += 1;
    stream.once('close', () => {
      this.#inFlight -= 1;
      if (this.#draining) this.#closeWhenIdle();
      else this.#options.onStreamClosed?.();
    });
    return stream;
  }

  /** Graceful: GOAWAY, then the tunnel closes once its in-flight streams finish. */
  close(): void {
    this.#draining = true;
    this.#closedLocally = true;
    if (!this.#session.closed && !this.#session.destroyed) this.#session.close();
    this.#closeWhenIdle();
  }

  /**
   * Closes the socket once no stream is left. Node's session, closed after a GOAWAY, only ends
   * its side of the socket and then waits for the peer's FIN, which a peer that drains but keeps
   * the connection open never sends: the tunnel would hold its node's place for ever.
   */
  #closeWhenIdle(): void {
    if (this.#inFlight > 0) return;
    // On the next turn, so that the GOAWAY Node writes as it closes still goes out.
    setImmediate(() => {
      if (this.#inFlight === 0 && !this.#socket.destroyed) this.#socket.destroy();
    });
  }

  destroy(): void {
    this.#draining = true;
    this.#closedLocally = true;
    this.#session.destroy();
  }
}
