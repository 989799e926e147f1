/**
 * The initiator: dials every host of every remote cluster and keeps `tunnels_per_host` tunnels to
 * each, serves the streams the responders open on them from its local routes, and reports tunnel
 * states on an optional admin server.
 */
import { EventEmitter } from 'node:events';
import { validateInitiatorConfig } from '../config/load.ts';
import type { InitiatorConfig, InitiatorConfigInput } from '../config/schema.ts';
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
import { HostDialler } from './host-dialler.ts';
import { LocalRouter } from './local-router.ts';
import type { TunnelCloseReason } from './tunnel.ts';

export interface InitiatorAddresses {
  readonly admin: HostPort | undefined;
}

/** Lifecycle events, named as Envoy's initiator lifecycle log events (reference §10). */
export interface InitiatorEvents {
  handshake_success: [cluster: string, host: string];
  handshake_failure: [cluster: string, host: string, reason: string];
  connection_closed: [cluster: string, host: string, reason: TunnelCloseReason];
}

export class Initiator extends EventEmitter<InitiatorEvents> {
  readonly config: InitiatorConfig;
  readonly stats: StatsRegistry;
  readonly #logger: Logger;
  readonly #router: LocalRouter;
  readonly #diallers: HostDialler[];
  readonly #admin: AdminServer | undefined;
  #addresses: InitiatorAddresses | undefined;
  #ready = false;
  readonly #signal: AbortSignal | undefined;
  #detachSignal = () => {};

  /** Use `startInitiator`. */
  constructor(config: InitiatorConfig, options: StartOptions = {}) {
    super();
    const logger = options.logger ?? silentLogger;
    this.#signal = options.signal;
    this.config = config;
    this.#logger = logger;
    this.stats = new StatsRegistry();
    this.#router = new LocalRouter(config.local_routes, logger);
    const identity = {
      nodeId: config.node_id,
      clusterId: config.cluster_id,
      tenantId: config.tenant_id,
    };
    const events = {
      handshake_success: (cluster: string, host: string) => {
        logger.info(
          { event: 'handshake_success', upstream_cluster: cluster, host_address: host },
          'tunnel established',
        );
        this.emit('handshake_success', cluster, host);
      },
      handshake_failure: (cluster: string, host: string, reason: string) => {
        logger.info(
          {
            event: 'handshake_failure',
            upstream_cluster: cluster,
            host_address: host,
            error: reason,
          },
          'tunnel handshake failed',
        );
        this.emit('handshake_failure', cluster, host, reason);
      },
      connection_closed: (cluster: string, host: string, reason: TunnelCloseReason) => {
        logger.info(
          { event: 'connection_closed', upstream_cluster: cluster, host_address: host, reason },
          'tunnel closed',
        );
        this.emit('connection_closed', cluster, host, reason);
      },
    };
    this.#diallers = config.remote_clusters.flatMap((cluster) =>
      cluster.hosts.map(
        (host) =>
          new HostDialler({
            cluster: cluster.name,
            host,
            tunnels: cluster.tunnels_per_host,
            identity,
            requestPath: config.handshake.request_path,
            headerPrefix: config.handshake.header_prefix,
            handshakeTimeoutMs: config.handshake.timeout,
            maxBackoffMs: config.max_reconnect_backoff,
            statPrefix: config.stat_prefix,
            stats: this.stats,
            logger,
            tunnel: {
              settings: { enablePush: false, maxConcurrentStreams: config.max_concurrent_streams },
              onStream: (stream, headers, flags) => this.#router.handle(stream, headers, flags),
            },
            events,
          }),
      ),
    );
    this.#admin =
      config.admin === undefined
        ? undefined
        : new AdminServer({
            address: config.admin.address,
            what: "the initiator's admin server",
            stats: () => this.stats.snapshot(),
            ready: () => this.#ready,
            logger,
          });
  }

  get addresses(): InitiatorAddresses {
    if (this.#addresses === undefined) throw new Error('the initiator has not started');
    return this.#addresses;
  }

  /** Use `startInitiator`. */
  async start(): Promise<void> {
    const admin = await this.#admin?.listen();
    this.#addresses = { admin };
    for (const dialler of this.#diallers) dialler.start();
    this.#ready = true;
    this.#detachSignal = onAbort(this.#signal, () => void this.close());
  }

  /** Graceful: stops dialling, GOAWAY on active tunnels, waits for their streams up to graceMs. */
  readonly close = once(async ({ graceMs = defaultGraceMs }: CloseOptions) => {
    this.#detachSignal();
    this.#ready = false;
    const drained = (async () => {
      await Promise.all(this.#diallers.map((dialler) => dialler.close()));
      await this.#router.close();
    })();
    await deadline(graceMs, drained);
    for (const dialler of this.#diallers) dialler.destroy();
    this.#router.destroy();
    await this.#admin?.close();
    this.#logger.debug('initiator closed');
  });

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Starts an initiator; resolves once its admin server (if any) is bound and dialling has begun. */
export async function startInitiator(
  input: InitiatorConfigInput | InitiatorConfig,
  options: StartOptions = {},
): Promise<Initiator> {
  return startOrClose(new Initiator(validateInitiatorConfig(input), options));
}
