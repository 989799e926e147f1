/**
 * Keeps `tunnels` tunnels open to one responder host (protocol reference §4, §7). Each slot dials,
 * handshakes under a deadline that runs from TCP connect to the end of the response, and on success
 * becomes an InitiatorTunnel. A failure puts the host in backoff (1, 2, 4 … s up to
 * `max_reconnect_backoff`, with jitter) and the empty slots wait for it; a success resets it. A
 * tunnel that closes is re-dialled at once, event-driven, not on Envoy's 10 s tick (reference §12 #4).
 */
import net, { type Socket } from 'node:net';
import {
  buildHandshakeRequest,
  evaluateHandshakeResponse,
  type Identity,
} from '../protocol/handshake.ts';
import { ResponseHeadParser } from '../protocol/http1-head.ts';
import { formatHostPort, type HostPort } from '../shared/address.ts';
import { Backoff } from '../shared/backoff.ts';
import { describeError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import type { StatsRegistry } from '../shared/stats.ts';
import { StateGauges } from './state-gauges.ts';
import { InitiatorTunnel, type InitiatorTunnelOptions, type TunnelCloseReason } from './tunnel.ts';

export interface DiallerEvents {
  readonly handshake_success: (cluster: string, host: string) => void;
  readonly handshake_failure: (cluster: string, host: string, reason: string) => void;
  readonly connection_closed: (cluster: string, host: string, reason: TunnelCloseReason) => void;
}

export interface HostDiallerOptions {
  readonly cluster: string;
  readonly host: HostPort;
  readonly tunnels: number;
  readonly identity: Identity;
  readonly requestPath: string;
  readonly headerPrefix: string;
  readonly handshakeTimeoutMs: number;
  readonly maxBackoffMs: number;
  readonly statPrefix: string;
  readonly stats: StatsRegistry;
  readonly logger: Logger;
  readonly tunnel: Pick<InitiatorTunnelOptions, 'settings' | 'onStream'>;
  readonly events: DiallerEvents;
}

/**
 * An idle tunnel the responder closes this soon after accepting it counts as a failed attempt, so
 * a responder that accepts and drops at once meets backoff instead of a hot re-dial loop.
 */
const stableAfterMs = 1000;

/** Cap on the handshake response head; Envoy's responses are a few dozen bytes. */
const maxResponseHeadBytes = 16 * 1024;

interface Slot {
  state: 'empty' | 'connecting' | 'connected';
  /** When this slot's first attempt began; retries keep it (the initiation-time header). */
  initiatedAt: number | undefined;
  socket: Socket | undefined;
  tunnel: InitiatorTunnel | undefined;
}

export class HostDialler {
  readonly hostText: string;
  readonly #options: HostDiallerOptions;
  readonly #gauges: StateGauges;
  readonly #backoff: Backoff;
  readonly #slots: Slot[];
  #retryTimer: NodeJS.Timeout | undefined;
  #closed = false;
  #closeWaiters: Array<() => void> = [];

  constructor(options: HostDiallerOptions) {
    this.#options = options;
    this.hostText = formatHostPort(options.host);
    this.#gauges = new StateGauges(
      options.stats,
      options.statPrefix,
      options.cluster,
      this.hostText,
    );
    this.#backoff = new Backoff({ baseMs: 1000, maxMs: options.maxBackoffMs, jitter: 0.15 });
    this.#slots = Array.from({ length: options.tunnels }, () => ({
      state: 'empty',
      initiatedAt: undefined,
      socket: undefined,
      tunnel: undefined,
    }));
  }

  start(): void {
    this.#fill();
  }

  /** Stops dialling; idle tunnels close, active ones get GOAWAY. Resolves when all are gone. */
  close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    for (const slot of this.#slots) {
      if (slot.state === 'connecting') slot.socket?.destroy();
      slot.tunnel?.close();
    }
    if (this.#slots.every((slot) => slot.state === 'empty')) return Promise.resolve();
    return new Promise((resolve) => this.#closeWaiters.push(resolve));
  }

  destroy(): void {
    this.#closed = true;
    for (const slot of this.#slots) {
      slot.socket?.destroy();
      slot.tunnel?.destroy();
    }
  }

  #fill(): void {
    if (this.#closed || this.#retryTimer !== undefined) return;
    for (const slot of this.#slots) if (slot.state === 'empty') this.#dial(slot);
  }

  #dial(slot: Slot): void {
    const { host, logger } = this.#options;
    slot.state = 'connecting';
    slot.initiatedAt ??= Date.now();
    this.#gauges.add('connecting', 1);
    const socket = net.connect({ host: host.host, port: host.port, noDelay: true });
    slot.socket = socket;
    const parser = new ResponseHeadParser({ maxHeadBytes: maxResponseHeadBytes, maxHeaders: 100 });
    let settled = false;
    const settle = () => {
      if (settled) return false;
      settled = true;
      clearTimeout(timer);
      socket.removeListener('connect', onConnect);
      socket.removeListener('data', onData);
      socket.removeListener('error', onError);
      socket.removeListener('close', onClose);
      this.#gauges.add('connecting', -1);
      return true;
    };
    const fail = (reason: string, detail?: string) => {
      if (!settle()) return;
      socket.on('error', () => {});
      socket.destroy();
      slot.state = 'empty';
      slot.socket = undefined;
      this.#failed(reason, detail);
    };
    const timer = setTimeout(
      () => fail('timeout', `no complete answer within ${this.#options.handshakeTimeoutMs} ms`),
      this.#options.handshakeTimeoutMs,
    );
    const onConnect = () => {
      socket.write(
        buildHandshakeRequest({
          identity: this.#options.identity,
          host: this.hostText,
          path: this.#options.requestPath,
          headerPrefix: this.#options.headerPrefix,
          upstreamClusterName: this.#options.cluster,
          initiationTimeMs: slot.initiatedAt ?? Date.now(),
        }),
      );
    };
    const onData = (chunk: Buffer) => {
      const result = parser.push(chunk);
      if (result.state === 'incomplete') return;
      if (result.state === 'error') {
        fail('parse_error', result.reason);
        return;
      }
      const outcome = evaluateHandshakeResponse(result.head);
      if (!outcome.ok) {
        fail(outcome.reason, `${result.head.status} ${result.head.reason}`);
        return;
      }
      settle();
      this.#established(slot, socket, result.rest);
    };
    const onError = (error: Error) => fail('connect_error', describeError(error));
    const onClose = () => fail('closed', 'the responder closed the connection before answering');
    socket.on('connect', onConnect);
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
    logger.debug({ cluster: this.#options.cluster, host: this.hostText }, 'dialling');
  }

  #established(slot: Slot, socket: Socket, leftover: Buffer): void {
    const { cluster, events } = this.#options;
    this.#backoff.reset();
    this.#gauges.add('connected', 1);
    slot.state = 'connected';
    events.handshake_success(cluster, this.hostText);
    const tunnel = new InitiatorTunnel(socket, {
      ...this.#options.tunnel,
      onClose: (reason, error) => {
        this.#gauges.add('connected', -1);
        slot.state = 'empty';
        slot.socket = undefined;
        slot.tunnel = undefined;
        slot.initiatedAt = undefined;
        events.connection_closed(cluster, this.hostText, reason);
        if (error !== undefined) this.#options.logger.debug({ err: error }, 'tunnel socket error');
        if (this.#closed) {
          this.#notifyIfEmpty();
          return;
        }
        if (
          !tunnel.active &&
          Date.now() - tunnel.establishedAt < stableAfterMs &&
          reason !== 'local_close'
        ) {
          this.#failed(
            'closed_early',
            `the responder closed an idle tunnel within ${stableAfterMs} ms`,
          );
          return;
        }
        this.#fill();
      },
    });
    slot.socket = socket;
    slot.tunnel = tunnel;
    tunnel.start(leftover);
  }

  #failed(reason: string, detail: string | undefined): void {
    const { cluster, events, logger } = this.#options;
    if (this.#closed) {
      // A handshake cut short by close() is not a failure of the responder.
      this.#notifyIfEmpty();
      return;
    }
    events.handshake_failure(cluster, this.hostText, reason);
    // Slots failing together are one failure: the first starts the wait, the others join it.
    if (this.#retryTimer !== undefined) return;
    const delayMs = this.#backoff.fail();
    logger.warn(
      {
        cluster,
        host: this.hostText,
        reason,
        detail,
        retry_in_ms: delayMs,
        failures: this.#backoff.failures,
      },
      'tunnel handshake failed',
    );
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#fill();
    }, delayMs);
  }

  #notifyIfEmpty(): void {
    if (!this.#slots.every((slot) => slot.state === 'empty')) return;
    const waiters = this.#closeWaiters;
    this.#closeWaiters = [];
    for (const waiter of waiters) waiter();
  }
}
