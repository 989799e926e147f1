/**
 * Keeps `tunnels` tunnels open to one responder host (protocol reference §4, §7). Each slot dials,
 * handshakes under a deadline that runs from TCP connect to the end of the response, and on success
 * becomes an InitiatorTunnel. A failure puts the host in backoff (1, 2, 4 … s up to
 * `max_reconnect_backoff`, with jitter, or the responder's Retry-After on 429/503) and the slots
 * that are not connected wait for it; a success resets it. A tunnel that closes is re-dialled at
 * once, event-driven, not on Envoy's 10 s tick (reference §12 #4).
 *
 * With `tls`, the dial is TLS (CA, SNI, client certificate, SPKI pins, minimum version) and the
 * handshake asks to keep the TLS session for the whole tunnel; a 200 that does not confirm it is a
 * failure (`tls_not_kept`), since the tunnel would otherwise carry the data path in cleartext.
 */
import { readFile } from 'node:fs/promises';
import net, { type Socket } from 'node:net';
import tls from 'node:tls';
import type { InitiatorConfig } from '../config/schema.ts';
import {
  buildHandshakeRequest,
  confirmsKeptTls,
  evaluateHandshakeResponse,
  handshakeHeaderNames,
  type Identity,
} from '../protocol/handshake.ts';
import { ResponseHeadParser } from '../protocol/http1-head.ts';
import type { TunnelRow } from '../admin/tunnels.ts';
import { formatHostPort, type HostPort } from '../shared/address.ts';
import { Backoff } from '../shared/backoff.ts';
import { describeError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import type { Histogram, StatsRegistry } from '../shared/stats.ts';
import type { ClientTls } from '../shared/tls-files.ts';
import { StateGauges, type SlotState } from './state-gauges.ts';
import { InitiatorTunnel, type InitiatorTunnelOptions, type TunnelCloseReason } from './tunnel.ts';

/**
 * Where the initiator's stats that Envoy's reverse-tunnel extension does not have live
 * (tunnel_setup_time, ping_rtt, tunnel_closed): outside the stat prefix, so that the sandbox's
 * `curl …/stats | grep reverse_connection` prints exactly the lines of the seed page.
 */
export const initiatorStats = 'reverse_tunnel.initiator';

/** Envoy's initiator lifecycle events (reference §10), for one host of one remote cluster. */
export type DiallerEvent =
  | { readonly event: 'handshake_success'; readonly connectionId: number }
  | {
      readonly event: 'handshake_failure';
      readonly connectionId: number;
      readonly error: string;
      readonly detail: string | undefined;
    }
  | {
      readonly event: 'connection_closed';
      readonly connectionId: number;
      readonly reason: TunnelCloseReason;
    };

export interface HostDiallerOptions {
  readonly cluster: string;
  /** Where to dial; its `host:port` names the host in stats, logs and the `host` header. */
  readonly host: HostPort;
  /**
   * The configured name `host` was resolved from (HostResolver), for TLS: SNI and the certificate
   * check use it. Absent when `host` is the configured entry itself.
   */
  readonly serverName?: string | undefined;
  readonly tunnels: number;
  readonly identity: Identity;
  readonly handshake: InitiatorConfig['handshake'];
  readonly maxBackoffMs: number;
  readonly statPrefix: string;
  readonly detailedStats: boolean;
  readonly stats: StatsRegistry;
  readonly logger: Logger;
  readonly tunnel: Omit<InitiatorTunnelOptions, 'onDraining' | 'onClose'>;
  /** The remote cluster's `tls`, loaded once for all its hosts (`loadClientTls`). */
  readonly tls?: ClientTls | undefined;
  /** Hands out connection ids, unique in the initiator. */
  readonly nextConnectionId: () => number;
  readonly onEvent: (dialler: HostDialler, event: DiallerEvent) => void;
}

/**
 * An idle tunnel the responder closes this soon after accepting it counts as a failed attempt, so
 * a responder that accepts and drops at once meets backoff instead of a hot re-dial loop.
 */
const stableAfterMs = 1000;

/**
 * After a tunnel that was up closes, failed dials to its host retry at the first backoff step
 * (1 s + jitter) for this long instead of doubling: a responder that restarts is back in a few
 * seconds, and its initiators should be back a moment after it (issue 5 "all back within 3 s"),
 * not at the 4 s or 8 s step. Past it, or for a host that never came up, the backoff doubles.
 */
const recoveryWindowMs = 60_000;

/** Cap on the handshake response head; Envoy's responses are a few dozen bytes. */
const maxResponseHeadBytes = 16 * 1024;

/** Cap on a header value read from a file (a bearer token). */
const maxHeaderFileBytes = 16 * 1024;

/** Connect errors that mean the attempt never reached a responder: Envoy's `cannot_connect`. */
const unresolved = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_FAIL', 'EAI_NONAME']);

interface Slot {
  state: SlotState | 'empty';
  /** When this slot's first attempt began; retries keep it (the initiation-time header). */
  initiatedAt: number | undefined;
  socket: Socket | undefined;
  tunnel: InitiatorTunnel | undefined;
}

export class HostDialler {
  readonly cluster: string;
  readonly hostText: string;
  readonly #options: HostDiallerOptions;
  readonly #gauges: StateGauges;
  /** From the connect call to the accepting answer, ms, successful handshakes only. */
  readonly #handshakeTime: Histogram;
  /** HTTP/2 PING round trips on this host's tunnels in use, ms (RPING is only echoed here). */
  readonly #pingRtt: Histogram;
  readonly #backoff: Backoff;
  readonly #slots: Slot[];
  #retryTimer: NodeJS.Timeout | undefined;
  /** When the pending retry fires (epoch ms), to tell whether a Retry-After asks for later. */
  #retryAt = 0;
  /** Tunnels the responder is draining (GOAWAY): still open, no longer holding a slot. */
  readonly #draining = new Set<InitiatorTunnel>();
  #closed = false;
  #closeWaiters: Array<() => void> = [];
  /** Until then, failures retry at the first backoff step (see recoveryWindowMs). */
  #recoveringUntil = 0;

  constructor(options: HostDiallerOptions) {
    this.#options = options;
    this.cluster = options.cluster;
    this.hostText = formatHostPort(options.host);
    this.#gauges = new StateGauges(
      options.stats,
      options.statPrefix,
      options.cluster,
      this.hostText,
    );
    this.#handshakeTime = options.stats.histogram(`${initiatorStats}.tunnel_setup_time`);
    this.#pingRtt = options.stats.histogram(`${initiatorStats}.ping_rtt`);
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
    this.#retryTimer = undefined;
    this.#gauges.setHost('backoff', 0);
    for (const slot of this.#slots) {
      if (slot.state === 'connecting') slot.socket?.destroy();
      else if (slot.state !== 'connected') this.#set(slot, 'empty');
      slot.tunnel?.close();
    }
    for (const tunnel of this.#draining) tunnel.close();
    if (this.#allEmpty()) return Promise.resolve();
    return new Promise((resolve) => this.#closeWaiters.push(resolve));
  }

  destroy(): void {
    this.#closed = true;
    for (const slot of this.#slots) {
      slot.socket?.destroy();
      slot.tunnel?.destroy();
    }
    for (const tunnel of this.#draining) tunnel.destroy();
  }

  /**
   * One row per tunnel of this host (`GET /tunnels`): slots dialling or handshaking, established
   * tunnels, and tunnels the responder drains that still finish their streams.
   */
  tunnelRows(): TunnelRow[] {
    const { identity } = this.#options;
    const row = (socket: Socket | undefined, tunnel: InitiatorTunnel | undefined): TunnelRow => ({
      node: identity.nodeId,
      cluster: identity.clusterId,
      tenant: identity.tenantId,
      remote_address:
        socket?.remoteAddress === undefined
          ? this.hostText
          : formatHostPort({ host: socket.remoteAddress, port: socket.remotePort ?? 0 }),
      responder: this.hostText,
      state:
        tunnel === undefined
          ? 'connecting'
          : tunnel.draining || this.#draining.has(tunnel)
            ? 'draining'
            : tunnel.streamsInFlight > 0
              ? 'in_use'
              : 'idle',
      established_at: tunnel === undefined ? null : new Date(tunnel.establishedAt).toISOString(),
      streams_in_flight: tunnel?.streamsInFlight ?? 0,
      bytes_sent: socket?.bytesWritten ?? 0,
      bytes_received: socket?.bytesRead ?? 0,
      last_ping_rtt_ms: tunnel?.lastPingRttMs ?? null,
    });
    const rows: TunnelRow[] = [];
    for (const slot of this.#slots) {
      if (slot.state === 'connecting') rows.push(row(slot.socket, undefined));
      else if (slot.tunnel !== undefined) rows.push(row(slot.tunnel.socket, slot.tunnel));
    }
    for (const tunnel of this.#draining) rows.push(row(tunnel.socket, tunnel));
    return rows;
  }

  #fill(): void {
    if (this.#closed || this.#retryTimer !== undefined) return;
    for (const slot of this.#slots) {
      if (slot.state === 'connecting' || slot.state === 'connected') continue;
      this.#dial(slot).catch((error: unknown) => {
        this.#options.logger.error({ err: error }, 'dialling failed unexpectedly');
      });
    }
  }

  #set(slot: Slot, state: Slot['state']): void {
    if (slot.state !== 'empty') this.#gauges.add(slot.state, -1);
    if (state !== 'empty') this.#gauges.add(state, 1);
    slot.state = state;
  }

  async #dial(slot: Slot): Promise<void> {
    const { host, handshake, logger } = this.#options;
    this.#set(slot, 'connecting');
    slot.initiatedAt ??= Date.now();
    const connectionId = this.#options.nextConnectionId();
    // Header values from files are read at every dial, so a rotated token is picked up.
    let extraHeaders: Array<[string, string]>;
    try {
      extraHeaders = await Promise.all(handshake.headers.map(readHeader));
      if (handshake.bearer_token_file !== undefined) {
        extraHeaders.push(await readBearer(handshake.bearer_token_file));
      }
    } catch (error) {
      this.#set(slot, 'cannot_connect');
      this.#failed(connectionId, 'header_file_error', describeError(error), undefined);
      return;
    }
    if (this.#closed) {
      this.#set(slot, 'empty');
      this.#notifyIfEmpty();
      return;
    }
    const secure = this.#options.tls;
    if (secure !== undefined) {
      extraHeaders.push([handshakeHeaderNames(handshake.header_prefix).keepTls, 'true']);
    }
    const dialledAt = performance.now();
    const socket =
      secure === undefined
        ? net.connect({ host: host.host, port: host.port, noDelay: true })
        : tls
            .connect(secure.connectOptions(host.host, host.port, this.#options.serverName))
            .setNoDelay(true);
    const ready = secure === undefined ? 'connect' : 'secureConnect';
    let connected = false;
    slot.socket = socket;
    const parser = new ResponseHeadParser({ maxHeadBytes: maxResponseHeadBytes, maxHeaders: 100 });
    let settled = false;
    const settle = () => {
      if (settled) return false;
      settled = true;
      clearTimeout(timer);
      socket.removeListener('connect', onTcpConnect);
      socket.removeListener(ready, onConnect);
      socket.removeListener('data', onData);
      socket.removeListener('error', onError);
      socket.removeListener('close', onClose);
      return true;
    };
    const fail = (
      reason: string,
      detail: string | undefined,
      state: SlotState = 'failed',
      retryAfterSeconds?: number,
    ) => {
      if (!settle()) return;
      socket.on('error', () => {});
      socket.destroy();
      slot.socket = undefined;
      this.#set(slot, this.#closed ? 'empty' : state);
      this.#failed(connectionId, reason, detail, retryAfterSeconds);
    };
    const timer = setTimeout(
      () => fail('timeout', `no complete answer within ${handshake.timeout} ms`),
      handshake.timeout,
    );
    const onConnect = () => {
      socket.write(
        buildHandshakeRequest({
          identity: this.#options.identity,
          host: this.hostText,
          path: handshake.request_path,
          headerPrefix: handshake.header_prefix,
          upgrade: handshake.use_http_upgrade,
          upstreamClusterName: this.#options.cluster,
          initiationTimeMs: slot.initiatedAt ?? Date.now(),
          extraHeaders,
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
      const outcome = evaluateHandshakeResponse(result.head, {
        upgrade: handshake.use_http_upgrade,
      });
      if (!outcome.ok) {
        const status = `${result.head.status} ${result.head.reason}`.trim();
        fail(outcome.reason, status, 'failed', outcome.retryAfterSeconds);
        return;
      }
      if (secure !== undefined && !confirmsKeptTls(result.head, handshake.header_prefix)) {
        fail(
          'tls_not_kept',
          'the responder accepted without confirming keep-tls: the data path would be cleartext',
        );
        return;
      }
      settle();
      this.#handshakeTime.observe(performance.now() - dialledAt);
      this.#established(slot, socket, result.rest, connectionId);
    };
    const onTcpConnect = () => {
      connected = true;
    };
    const onError = (error: NodeJS.ErrnoException) => {
      if (secure !== undefined && connected) {
        // TCP was up, so the TLS handshake failed: certificate, name, pin or protocol version.
        fail(
          error.code === 'ERR_SPKI_PIN_MISMATCH' ? 'tls_pin_mismatch' : 'tls_error',
          describeError(error),
        );
        return;
      }
      const never = error.code !== undefined && unresolved.has(error.code);
      fail(
        never ? 'cannot_connect' : 'connect_error',
        describeError(error),
        never ? 'cannot_connect' : 'failed',
      );
    };
    const onClose = () => fail('closed', 'the responder closed the connection before answering');
    socket.on('connect', onTcpConnect);
    socket.on(ready, onConnect);
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
    logger.debug(
      { cluster: this.#options.cluster, host: this.hostText, connection_id: connectionId },
      'dialling',
    );
  }

  #established(slot: Slot, socket: Socket, leftover: Buffer, connectionId: number): void {
    if (this.#backoff.failures > 0) {
      // Envoy's synthetic backoff entry becomes `recovered` when a success resets the backoff.
      this.#gauges.setHost('recovered', 1);
    }
    this.#backoff.reset();
    this.#set(slot, 'connected');
    this.#count('success');
    this.#options.onEvent(this, { event: 'handshake_success', connectionId });
    const tunnel = new InitiatorTunnel(socket, {
      ...this.#options.tunnel,
      onPingRtt: (ms) => this.#pingRtt.observe(ms),
      onDraining: () => {
        // The responder drains this tunnel: it keeps serving its streams, and a replacement is
        // dialled at once (Envoy #45875), so the node never runs short while the old one finishes.
        if (slot.tunnel !== tunnel) return;
        this.#draining.add(tunnel);
        slot.socket = undefined;
        slot.tunnel = undefined;
        slot.initiatedAt = undefined;
        slot.state = 'empty'; // its `connected` entry now belongs to the draining tunnel
        this.#fill();
      },
      onClose: (reason, error) => {
        // By reason (a short fixed list), so that keepalive timeouts can be alerted on.
        const { stats } = this.#options;
        stats
          .counter(`${initiatorStats}.tunnel_closed.${reason}`, {
            name: `${initiatorStats}.tunnel_closed`,
            labels: { reason },
          })
          .inc();
        if (this.#draining.delete(tunnel)) {
          this.#gauges.add('connected', -1);
          this.#options.onEvent(this, { event: 'connection_closed', connectionId, reason });
          if (this.#closed) this.#notifyIfEmpty();
          return;
        }
        slot.socket = undefined;
        slot.tunnel = undefined;
        slot.initiatedAt = undefined;
        this.#set(slot, 'empty');
        this.#options.onEvent(this, { event: 'connection_closed', connectionId, reason });
        if (error !== undefined) this.#options.logger.debug({ err: error }, 'tunnel socket error');
        if (this.#closed) {
          this.#notifyIfEmpty();
          return;
        }
        const early = Date.now() - tunnel.establishedAt < stableAfterMs;
        if (!tunnel.active && early && reason !== 'local_close') {
          this.#set(slot, 'failed');
          this.#failed(
            connectionId,
            'closed_early',
            `the responder closed an idle tunnel within ${stableAfterMs} ms`,
            undefined,
          );
          return;
        }
        this.#recoveringUntil = Date.now() + recoveryWindowMs;
        this.#fill();
      },
    });
    slot.socket = socket;
    slot.tunnel = tunnel;
    tunnel.start(leftover);
  }

  #failed(
    connectionId: number,
    reason: string,
    detail: string | undefined,
    retryAfterSeconds: number | undefined,
  ): void {
    const { cluster, logger } = this.#options;
    if (this.#closed) {
      // A handshake cut short by close() is not a failure of the responder.
      this.#notifyIfEmpty();
      return;
    }
    this.#count('failed', reason);
    this.#options.onEvent(this, {
      event: 'handshake_failure',
      connectionId,
      error: reason,
      detail,
    });
    // Retry-After replaces the computed delay, capped by max_reconnect_backoff (reference §4).
    const retryAfterMs =
      retryAfterSeconds === undefined
        ? undefined
        : Math.min(retryAfterSeconds * 1000, this.#options.maxBackoffMs);
    // Slots failing together are one failure: the first starts the wait, the others join it; a
    // Retry-After that asks for a later retry than the one pending moves it.
    if (this.#retryTimer !== undefined) {
      if (retryAfterMs !== undefined && Date.now() + retryAfterMs > this.#retryAt) {
        clearTimeout(this.#retryTimer);
        this.#schedule(retryAfterMs);
      }
      return;
    }
    const computed = this.#backoff.fail({ atBase: Date.now() < this.#recoveringUntil });
    const delayMs = retryAfterMs ?? computed;
    this.#gauges.setHost('recovered', 0);
    this.#gauges.setHost('backoff', 1);
    logger.warn(
      {
        cluster,
        host: this.hostText,
        reason,
        detail,
        retry_in_ms: delayMs,
        retry_after_s: retryAfterSeconds,
        failures: this.#backoff.failures,
      },
      'tunnel handshake failed',
    );
    this.#schedule(delayMs);
  }

  #schedule(delayMs: number): void {
    this.#retryAt = Date.now() + delayMs;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#gauges.setHost('backoff', 0);
      this.#fill();
    }, delayMs);
  }

  /** `<prefix>.handshake` by result and failure reason, with detailed stats (reference §9). */
  #count(result: 'success' | 'failed', reason?: string): void {
    if (!this.#options.detailedStats) return;
    const { stats, statPrefix, cluster } = this.#options;
    const base = `${statPrefix}.handshake.worker.worker_0.cluster.${cluster}.result.${result}`;
    // Envoy's tags, also as Prometheus labels: one `<prefix>_handshake` family.
    const labels = { worker: 'worker_0', cluster, result };
    const tags = {
      name: `${statPrefix}.handshake`,
      labels: reason === undefined ? labels : { ...labels, failure_reason: reason },
    };
    stats.counter(reason === undefined ? base : `${base}.failure_reason.${reason}`, tags).inc();
  }

  #allEmpty(): boolean {
    return this.#draining.size === 0 && this.#slots.every((slot) => slot.state === 'empty');
  }

  #notifyIfEmpty(): void {
    if (!this.#allEmpty()) return;
    const waiters = this.#closeWaiters;
    this.#closeWaiters = [];
    for (const waiter of waiters) waiter();
  }
}

/** `authorization: Bearer <token>`, the token read from its file (trimmed). */
async function readBearer(file: string): Promise<[string, string]> {
  const [, token] = await readHeader({ name: 'authorization', value_file: file });
  if (token === '') throw new Error(`${file} is empty: no bearer token to send`);
  return ['authorization', `Bearer ${token}`];
}

/** A configured handshake header's value, read from its file when it has one. */
async function readHeader(
  header: InitiatorConfig['handshake']['headers'][number],
): Promise<[string, string]> {
  if (header.value_file === undefined) return [header.name, header.value ?? ''];
  const content = await readFile(header.value_file, 'utf8');
  if (content.length > maxHeaderFileBytes) {
    throw new Error(`${header.value_file} is larger than ${maxHeaderFileBytes} bytes`);
  }
  const value = content.trim();
  if (!/^[\t\x20-\x7e\x80-\xff]*$/.test(value)) {
    throw new Error(`${header.value_file} holds characters a header value cannot carry`);
  }
  return [header.name, value];
}
