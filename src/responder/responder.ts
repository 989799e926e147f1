/**
 * The responder: a tunnel listener that accepts initiators, the registry of their tunnels, the
 * egress listeners that send callers' requests through them, and an optional admin server.
 */
import { EventEmitter } from 'node:events';
import { validateResponderConfig } from '../config/load.ts';
import { assertSecure } from '../config/security.ts';
import type { ResponderConfig, ResponderConfigInput } from '../config/schema.ts';
import type { Identity } from '../protocol/handshake.ts';
import type { TunnelRow } from '../admin/tunnels.ts';
import { formatHostPort, type HostPort } from '../shared/address.ts';
import {
  deadline,
  defaultGraceMs,
  onAbort,
  once,
  startOrClose,
  type CloseOptions,
  type StartOptions,
} from '../shared/lifecycle.ts';
import {
  openLifecycleLog,
  type LifecycleRecord,
  type LifecycleSink,
} from '../shared/lifecycle-log.ts';
import { silentLogger, type Logger } from '../shared/logger.ts';
import { StatsRegistry } from '../shared/stats.ts';
import { adminServerFor, type AdminServer } from '../admin/admin-server.ts';
import { EgressListener } from './egress-listener.ts';
import {
  TunnelRegistry,
  type TunnelCloseReason,
  type TunnelEvent,
  type TunnelInfo,
} from './registry.ts';
import { TcpListener } from './tcp-listener.ts';
import { TunnelListener } from './tunnel-listener.ts';

export interface ResponderAddresses {
  readonly tunnel: HostPort;
  readonly egress: readonly HostPort[];
  /** The `tcp_listeners`, in config order. */
  readonly tcp: readonly HostPort[];
  readonly admin: HostPort | undefined;
}

/**
 * Lifecycle events, named as Envoy's responder lifecycle log events (reference §10). `lifecycle`
 * carries every record the lifecycle log writes, with Envoy's field names.
 */
export interface ResponderEvents {
  tunnel_setup: [identity: Identity];
  socket_handoff: [identity: Identity];
  tunnel_closed: [identity: Identity, reason: TunnelCloseReason];
  /** A keepalive PING on a tunnel in use was acknowledged after `ms`. */
  http2_ping_ack: [identity: Identity, ms: number];
  lifecycle: [record: LifecycleRecord];
}

export class Responder extends EventEmitter<ResponderEvents> {
  readonly config: ResponderConfig;
  readonly stats: StatsRegistry;
  readonly #logger: Logger;
  readonly #registry: TunnelRegistry;
  readonly #tunnelListener: TunnelListener;
  readonly #egress: EgressListener[];
  readonly #tcp: TcpListener[];
  readonly #admin: AdminServer | undefined;
  readonly #lifecycleLog: LifecycleSink | undefined;
  #addresses: ResponderAddresses | undefined;
  #ready = false;
  #draining = false;
  /** `POST /drain` came while starting: the drain runs once start() has bound everything. */
  #drainWhenStarted = false;
  #started = false;
  readonly #signal: AbortSignal | undefined;
  #detachSignal = () => {};

  /** Use `startResponder`. */
  constructor(config: ResponderConfig, options: StartOptions = {}) {
    super();
    const logger = options.logger ?? silentLogger;
    this.#signal = options.signal;
    this.config = config;
    this.#logger = logger;
    this.stats = new StatsRegistry();
    this.#lifecycleLog =
      config.lifecycle_log === undefined
        ? undefined
        : openLifecycleLog(
            config.lifecycle_log.path,
            this.stats.counter('revtun.lifecycle_log.dropped'),
          );
    this.#registry = new TunnelRegistry({
      statPrefix: config.stat_prefix,
      stats: this.stats,
      logger,
      pingIntervalMs: config.tunnel_listener.ping_interval,
      pingFailureThreshold: config.tunnel_listener.ping_failure_threshold,
      tenantIsolation: config.enable_tenant_isolation,
      http2: config.http2,
      pendingRequests: config.pending_requests,
      maxDepartedStats: config.max_departed_stats,
      detailedStats: config.enable_detailed_stats,
      useAllTunnels: config.use_all_tunnels,
      onEvent: (tunnel, event) => this.#onTunnelEvent(tunnel, event),
      onPingAck: (tunnel, ms) => this.emit('http2_ping_ack', tunnel.identity, ms),
    });
    this.#tunnelListener = new TunnelListener({
      config: config.tunnel_listener,
      stats: this.stats,
      logger,
      tunnelsOf: (identity) => this.#registry.tunnelsOf(identity),
      totalTunnels: () => this.#registry.totalTunnels(),
      conflictOf: (identity, credential) => this.#registry.conflictOf(identity, credential),
      reserve: (identity, credential) => this.#registry.reserve(identity, credential),
      onAccepted: (socket, handshake, leftover, connectionId, credential) =>
        this.#registry.add(socket, handshake, leftover, connectionId, credential),
    });
    this.#egress = config.egress_listeners.map(
      (egress, index) =>
        new EgressListener({
          config: egress,
          registry: this.#registry,
          tenantIsolation: config.enable_tenant_isolation,
          identityHeaderPrefix: config.tunnel_listener.header_prefix,
          stats: this.stats,
          logger,
          index,
        }),
    );
    this.#tcp = config.tcp_listeners.map(
      (tcp, index) =>
        new TcpListener({
          config: tcp,
          registry: this.#registry,
          stats: this.stats,
          logger,
          index,
        }),
    );
    this.#admin = adminServerFor(config.admin, {
      what: "the responder's admin server",
      stats: this.stats,
      ready: () => this.#ready,
      logger,
      role: 'responder',
      tunnels: () => this.tunnelRows(),
      config: () => this.config,
      drain: () => this.drain(),
    });
  }

  #onTunnelEvent(tunnel: TunnelInfo, event: TunnelEvent): void {
    const { identity } = tunnel;
    const record: LifecycleRecord = {
      event: event.event,
      node_id: identity.nodeId,
      cluster_id: identity.clusterId,
      tenant_id: identity.tenantId,
      worker: 'worker_0',
      socket_state: event.socketState,
      fd: tunnel.connectionId,
      initiator_worker_id: tunnel.initiatorWorkerId,
      initiator_connection_id: tunnel.initiatorConnectionId,
      ...(event.event === 'socket_handoff' ? { handoff_kind: 'pool_to_upstream' } : {}),
      ...('missCount' in event &&
      event.event !== 'idle_ping_sent' &&
      event.event !== 'idle_ping_ack'
        ? { miss_count: event.missCount }
        : {}),
      ...(event.event === 'tunnel_closed' ? { close_reason: event.closeReason } : {}),
    };
    this.#lifecycleLog?.write(record);
    this.emit('lifecycle', record);
    const level =
      event.event.startsWith('idle_ping_') && event.event !== 'idle_ping_timeout'
        ? 'trace'
        : 'info';
    this.#logger[level](record, event.event.replaceAll('_', ' '));
    if (event.event === 'tunnel_setup') this.emit('tunnel_setup', identity);
    else if (event.event === 'socket_handoff') this.emit('socket_handoff', identity);
    else if (event.event === 'tunnel_closed')
      this.emit('tunnel_closed', identity, event.closeReason);
  }

  /** The addresses actually bound (port 0 in the config gives the real port here). */
  get addresses(): ResponderAddresses {
    if (this.#addresses === undefined) throw new Error('the responder has not started');
    return this.#addresses;
  }

  /** Connected nodes with their idle tunnels and live HTTP/2 sessions. */
  tunnels(): ReturnType<TunnelRegistry['nodes']> {
    return this.#registry.nodes();
  }

  /** One row per tunnel socket, idle or in use (the admin server's `GET /tunnels`). */
  tunnelRows(): TunnelRow[] {
    const tunnel = this.#addresses?.tunnel;
    return this.#registry.tunnelRows(tunnel === undefined ? '' : formatHostPort(tunnel));
  }

  /**
   * Starts the drain without closing (`POST /drain`; `close()` does the same first): `/ready`
   * answers DRAINING, no tunnel or caller connection is accepted any more, idle tunnels close and
   * live ones get GOAWAY, so initiators move to other responders. The process keeps running, its
   * admin server included, until `close()` (SIGTERM). Idempotent.
   */
  drain(): void {
    if (!this.#started) {
      this.#drainWhenStarted = true;
      return;
    }
    if (this.#draining) return;
    this.#draining = true;
    this.#ready = false;
    this.#logger.info('draining');
    const done = Promise.all([
      this.#tunnelListener.close(),
      ...this.#egress.map((listener) => listener.drain()),
      ...this.#tcp.map((listener) => listener.drain()),
    ]);
    done.catch((error: unknown) => this.#logger.warn({ err: error }, 'drain failed'));
    this.#registry.drain();
  }

  /** Use `startResponder`. */
  async start(): Promise<void> {
    const admin = await this.#admin?.listen();
    const egress: HostPort[] = [];
    for (const listener of this.#egress) egress.push(await listener.listen());
    const tcp: HostPort[] = [];
    for (const listener of this.#tcp) tcp.push(await listener.listen());
    const tunnel = await this.#tunnelListener.listen();
    this.#addresses = { tunnel, egress, tcp, admin };
    this.#started = true;
    this.#ready = true;
    if (this.#drainWhenStarted) this.drain();
    this.#detachSignal = onAbort(this.#signal, () => void this.close());
  }

  /** Graceful: stops accepting, closes idle tunnels, GOAWAY on live ones, then forces at graceMs. */
  readonly close = once(async ({ graceMs = defaultGraceMs }: CloseOptions) => {
    this.#detachSignal();
    this.#ready = false;
    const drained = Promise.all([
      this.#tunnelListener.close(),
      ...this.#egress.map((listener) => listener.drain()),
      ...this.#tcp.map((listener) => listener.drain()),
      this.#registry.whenEmpty(),
    ]);
    this.#registry.drain();
    await deadline(graceMs, drained);
    this.#registry.destroy();
    for (const listener of this.#egress) listener.destroy();
    for (const listener of this.#tcp) listener.destroy();
    await this.#admin?.close();
    await this.#lifecycleLog?.close();
    this.#logger.debug('responder closed');
  });

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Starts a responder; resolves once every listener is bound. */
export async function startResponder(
  input: ResponderConfigInput | ResponderConfig,
  options: StartOptions = {},
): Promise<Responder> {
  const config = validateResponderConfig(input);
  assertSecure('responder', config);
  return startOrClose(new Responder(config, options));
}
