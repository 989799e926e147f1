/**
 * One registered tunnel socket while it is idle at the responder: it sends RPING every interval
 * (+0–15 % jitter), expects the echo within half the interval, and closes the socket after
 * `failureThreshold` consecutive misses (protocol reference §5; envoy brt/upstream_socket_interface/
 * upstream_socket_manager.cc). Checkout hands the raw socket over only when no echo is owed, so the
 * HTTP/2 client never sees a stray RPING (reference §5 "Late echoes after checkout", preference 1
 * and 2; architecture decision 4).
 */
import type { Socket } from 'node:net';
import { RPING, RpingEchoReader } from '../protocol/rping.ts';
import type { Identity } from '../protocol/handshake.ts';

export type IdleCloseReason =
  | 'idle_peer_close'
  | 'idle_read_error'
  | 'idle_ping_write_failure'
  | 'idle_ping_timeout'
  | 'idle_protocol_error'
  | 'local_close';

/** Envoy's idle-keepalive lifecycle events (reference §10). */
export type IdlePingEvent = 'idle_ping_sent' | 'idle_ping_ack' | 'idle_ping_miss';

export interface IdleTunnelOptions {
  readonly identity: Identity;
  readonly pingIntervalMs: number;
  readonly failureThreshold: number;
  /** Called for every ping written, echo received and echo missed, with the misses so far. */
  readonly onPing?: (event: IdlePingEvent, missCount: number) => void;
  /** The round trip of an RPING, when its echo is known to be its own (no older one owed). */
  readonly onRoundTrip?: (ms: number) => void;
  /** Called once when the tunnel closes while idle (never after a checkout). */
  readonly onClose: (
    tunnel: IdleTunnel,
    reason: IdleCloseReason,
    missCount: number,
    error?: Error,
  ) => void;
  readonly random?: () => number;
}

/** The echo deadline is half the interval (Envoy), but never below this floor (reference §12 #6). */
const echoDeadlineFloorMs = 50;
const pingJitter = 0.15;

export class IdleTunnel {
  readonly identity: Identity;
  readonly socket: Socket;
  readonly registeredAt = Date.now();
  readonly #options: IdleTunnelOptions;
  readonly #reader = new RpingEchoReader();
  #state: 'idle' | 'handed_off' | 'closed' = 'idle';
  #owed = 0;
  #misses = 0;
  #lastAckAt = Date.now();
  /** When the ping in flight was written, for its round trip. */
  #pingSentAt = 0;
  #lastPingRttMs: number | null = null;
  #pingTimer: NodeJS.Timeout | undefined;
  #deadlineTimer: NodeJS.Timeout | undefined;
  #cleanWaiters: Array<() => void> = [];

  constructor(socket: Socket, options: IdleTunnelOptions) {
    this.socket = socket;
    this.identity = options.identity;
    this.#options = options;
  }

  get state(): 'idle' | 'handed_off' | 'closed' {
    return this.#state;
  }

  /** True when no echo is owed, not even in part: the socket can go to HTTP/2 right now. */
  get clean(): boolean {
    return this.#owed === 0 && this.#reader.held === 0;
  }

  /** When the last echo arrived (or registration, before the first). */
  get lastAckAt(): number {
    return this.#lastAckAt;
  }

  /** Round trip of the last RPING echoed in time, ms, or null before the first. */
  get lastPingRttMs(): number | null {
    return this.#lastPingRttMs;
  }

  /**
   * Starts pinging. `leftover` holds bytes that arrived after the handshake request; an initiator
   * sends nothing before the first ping, so any byte there is a protocol violation.
   */
  start(leftover: Buffer): void {
    this.socket.on('data', this.#onData);
    this.socket.on('end', this.#onEnd);
    this.socket.on('error', this.#onError);
    this.socket.on('close', this.#onSocketClose);
    if (leftover.length > 0) this.#onData(leftover);
    if (this.#state === 'idle') this.#armPing();
    this.socket.resume();
  }

  /**
   * Takes the socket out of the idle phase for HTTP/2. Resolves with the socket, paused and with
   * every idle listener removed, once no echo is owed; or with null if the owed echo does not come
   * within one echo deadline, or the tunnel closes meanwhile.
   */
  checkout(): Promise<Socket | null> {
    if (this.#state !== 'idle') return Promise.resolve(null);
    if (this.clean) return Promise.resolve(this.#handOff());
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#cleanWaiters = this.#cleanWaiters.filter((waiter) => waiter !== onClean);
        // Echoes are owed that do not come: the peer has fallen out of step with its pings (it
        // skipped some). Its keepalive may still look healthy, but a late echo would corrupt
        // HTTP/2, so the tunnel is closed and the initiator dials a clean one.
        this.#close('idle_protocol_error');
        resolve(null);
      }, this.#echoDeadlineMs());
      const onClean = () => {
        clearTimeout(timer);
        resolve(this.#state === 'idle' && this.clean ? this.#handOff() : null);
      };
      this.#cleanWaiters.push(onClean);
    });
  }

  /** Closes an idle tunnel (responder shutdown). */
  close(): void {
    this.#close('local_close');
  }

  #handOff(): Socket {
    this.#state = 'handed_off';
    this.#clearTimers();
    this.socket.pause();
    this.socket.removeListener('data', this.#onData);
    this.socket.removeListener('end', this.#onEnd);
    this.socket.removeListener('error', this.#onError);
    this.socket.removeListener('close', this.#onSocketClose);
    return this.socket;
  }

  #echoDeadlineMs(): number {
    return Math.max(echoDeadlineFloorMs, Math.floor(this.#options.pingIntervalMs / 2));
  }

  #armPing(): void {
    const { pingIntervalMs, random = Math.random } = this.#options;
    const delay = pingIntervalMs + Math.floor(pingJitter * pingIntervalMs * random());
    this.#pingTimer = setTimeout(this.#sendPing, delay);
  }

  #sendPing = (): void => {
    this.#pingTimer = undefined;
    if (this.#state !== 'idle') return;
    this.#owed += 1;
    this.#pingSentAt = performance.now();
    this.socket.write(RPING, (error) => {
      if (error) this.#close('idle_ping_write_failure', error);
    });
    this.#deadlineTimer = setTimeout(this.#onDeadline, this.#echoDeadlineMs());
    this.#options.onPing?.('idle_ping_sent', this.#misses);
  };

  #onDeadline = (): void => {
    this.#deadlineTimer = undefined;
    this.#misses += 1;
    this.#options.onPing?.('idle_ping_miss', this.#misses);
    if (this.#misses >= this.#options.failureThreshold) {
      this.#close('idle_ping_timeout');
      return;
    }
    this.#armPing();
  };

  #onData = (chunk: Buffer): void => {
    const { echoes, violation } = this.#reader.feed(chunk);
    if (violation || echoes > this.#owed) {
      // Bytes that are not an echo, or more echoes than pings: whatever the peer is, it is not an
      // initiator in echo mode, and anything HTTP/2 later read from this socket would be corrupt.
      this.#close('idle_protocol_error');
      return;
    }
    if (echoes === 0) return;
    this.#owed -= echoes;
    this.#misses = 0;
    this.#lastAckAt = Date.now();
    for (let i = 0; i < echoes; i += 1) this.#options.onPing?.('idle_ping_ack', 0);
    // Any complete echo is an ack of the ping in flight (Envoy's upstream_socket_manager.cc): it
    // cancels the deadline and re-arms the send timer, whatever older pings are still owed. The
    // owed count stays exact for checkout, which needs no echo to be owed at all.
    if (this.#deadlineTimer !== undefined) {
      // With older echoes still owed, this one may be theirs: no round trip to tell.
      if (this.#owed === 0) {
        this.#lastPingRttMs = performance.now() - this.#pingSentAt;
        this.#options.onRoundTrip?.(this.#lastPingRttMs);
      }
      clearTimeout(this.#deadlineTimer);
      this.#deadlineTimer = undefined;
      this.#armPing();
    }
    if (this.clean) {
      const waiters = this.#cleanWaiters;
      this.#cleanWaiters = [];
      for (const waiter of waiters) waiter();
    }
  };

  #onEnd = (): void => this.#close('idle_peer_close');
  #onError = (error: Error): void => this.#close('idle_read_error', error);
  #onSocketClose = (): void => this.#close('idle_peer_close');

  #close(reason: IdleCloseReason, error?: Error): void {
    if (this.#state !== 'idle') return;
    this.#state = 'closed';
    this.#clearTimers();
    this.socket.destroy();
    const waiters = this.#cleanWaiters;
    this.#cleanWaiters = [];
    for (const waiter of waiters) waiter();
    this.#options.onClose(this, reason, this.#misses, error);
  }

  #clearTimers(): void {
    clearTimeout(this.#pingTimer);
    clearTimeout(this.#deadlineTimer);
    this.#pingTimer = undefined;
    this.#deadlineTimer = undefined;
  }
}
