/**
 * The responder: a tunnel listener that accepts initiators, the registry of their tunnels, the
 * egress listeners that send callers' requests through them, and an optional admin server.
 */
import { EventEmitter } from 'node:events';
import { validateResponderConfig } from '../config/load.ts';
import type { ResponderConfig, ResponderConfigInput } from '../config/schema.ts';
import type { Identity } from '../protocol/handshake.ts';
import type { HostPort } from '../shared/address.ts';
import {
  deadline,
  defaultGraceMs,
  onAbort,
  once,
  startOrClose,
  type CloseOptions,
  type StartOptions,
} from '../shared/lifecycle.ts';
import { silentLogger, type Logger } from '../shared/logger.ts';
import { StatsRegistry } from '../shared/stats.ts';
import { AdminServer } from '../admin/admin-server.ts';
import { EgressListener } from './egress-listener.ts';
import { TunnelRegistry, type TunnelCloseReason } from './registry.ts';
import { TunnelListener } from './tunnel-listener.ts';

export interface ResponderAddresses {
  readonly tunnel: HostPort;
  readonly egress: readonly HostPort[];
  readonly admin: HostPort | undefined;
}

/** Lifecycle events, named as Envoy's responder lifecycle log events (reference §10). */
export interface ResponderEvents {
  tunnel_setup: [identity: Identity];
  socket_handoff: [identity: Identity];
  tunnel_closed: [identity: Identity, reason: TunnelCloseReason];
}

export class Responder extends EventEmitter<ResponderEvents> {
  readonly config: ResponderConfig;
  readonly stats: StatsRegistry;
  readonly #logger: Logger;
  readonly #registry: TunnelRegistry;
  readonly #tunnelListener: TunnelListener;
  readonly #egress: EgressListener[];
  readonly #admin: AdminServer | undefined;
  #addresses: ResponderAddresses | undefined;
  #ready = false;
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
    const events = {
      tunnel_setup: (identity: Identity) => {
        logger.info({ event: 'tunnel_setup', ...ids(identity) }, 'tunnel registered');
        this.emit('tunnel_setup', identity);
      },
      socket_handoff: (identity: Identity) => {
        logger.debug(
          { event: 'socket_handoff', ...ids(identity) },
          'tunnel checked out for HTTP/2',
        );
        this.emit('socket_handoff', identity);
      },
      tunnel_closed: (identity: Identity, reason: TunnelCloseReason) => {
        logger.info(
          { event: 'tunnel_closed', close_reason: reason, ...ids(identity) },
          'tunnel closed',
        );
        this.emit('tunnel_closed', identity, reason);
      },
    };
    this.#registry = new TunnelRegistry({
      statPrefix: config.stat_prefix,
      stats: this.stats,
      logger,
      pingIntervalMs: config.tunnel_listener.ping_interval,
      pingFailureThreshold: config.tunnel_listener.ping_failure_threshold,
      events,
    });
    this.#tunnelListener = new TunnelListener({
      config: config.tunnel_listener,
      stats: this.stats,
      logger,
      onAccepted: (socket, handshake, leftover) =>
        this.#registry.add(socket, handshake.identity, leftover),
    });
    this.#egress = config.egress_listeners.map(
      (egress, index) =>
        new EgressListener({ config: egress, registry: this.#registry, logger, index }),
    );
    this.#admin =
      config.admin === undefined
        ? undefined
        : new AdminServer({
            address: config.admin.address,
            what: "the responder's admin server",
            stats: () => this.stats.snapshot(),
            ready: () => this.#ready,
            logger,
          });
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

  /** Use `startResponder`. */
  async start(): Promise<void> {
    const admin = await this.#admin?.listen();
    const egress: HostPort[] = [];
    for (const listener of this.#egress) egress.push(await listener.listen());
    const tunnel = await this.#tunnelListener.listen();
    this.#addresses = { tunnel, egress, admin };
    this.#ready = true;
    this.#detachSignal = onAbort(this.#signal, () => void this.close());
  }

  /** Graceful: stops accepting, closes idle tunnels, GOAWAY on live ones, then forces at graceMs. */
  readonly close = once(async ({ graceMs = defaultGraceMs }: CloseOptions) => {
    this.#detachSignal();
    this.#ready = false;
    const drained = Promise.all([
      this.#tunnelListener.close(),
      ...this.#egress.map((listener) => listener.drain()),
      this.#registry.whenEmpty(),
    ]);
    this.#registry.drain();
    await deadline(graceMs, drained);
    this.#registry.destroy();
    for (const listener of this.#egress) listener.destroy();
    await this.#admin?.close();
    this.#logger.debug('responder closed');
  });

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

function ids(identity: Identity) {
  return { node_id: identity.nodeId, cluster_id: identity.clusterId, tenant_id: identity.tenantId };
}

/** Starts a responder; resolves once every listener is bound. */
export async function startResponder(
  input: ResponderConfigInput | ResponderConfig,
  options: StartOptions = {},
): Promise<Responder> {
  return startOrClose(new Responder(validateResponderConfig(input), options));
}
