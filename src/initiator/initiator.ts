/**
 * The initiator: dials every host of every remote cluster and keeps `tunnels_per_host` tunnels to
 * each, serves the streams the responders open on them from its local routes, and reports tunnel
 * states on an optional admin server.
 */
import { EventEmitter } from 'node:events';
import { validateInitiatorConfig } from '../config/load.ts';
import { assertSecure } from '../config/security.ts';
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
import {
  openLifecycleLog,
  type LifecycleRecord,
  type LifecycleSink,
} from '../shared/lifecycle-log.ts';
import { silentLogger, type Logger } from '../shared/logger.ts';
import { StatsRegistry } from '../shared/stats.ts';
import { adminServerFor, type AdminServer } from '../admin/admin-server.ts';
import { HostDialler, type DiallerEvent } from './host-dialler.ts';
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
  /** Every record the lifecycle log writes, with Envoy's field names. */
  lifecycle: [record: LifecycleRecord];
}

export class Initiator extends EventEmitter<InitiatorEvents> {
  readonly config: InitiatorConfig;
  readonly stats: StatsRegistry;
  readonly #logger: Logger;
  readonly #router: LocalRouter;
  readonly #diallers: HostDialler[];
  readonly #admin: AdminServer | undefined;
  readonly #lifecycleLog: LifecycleSink | undefined;
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
    this.#lifecycleLog =
      config.lifecycle_log === undefined
        ? undefined
        : openLifecycleLog(
            config.lifecycle_log.path,
            this.stats.counter('revtun.lifecycle_log.dropped'),
          );
    let connectionIds = 0;
    this.#diallers = config.remote_clusters.flatMap((cluster, index) =>
      cluster.hosts.map(
        (host) =>
          new HostDialler({
            cluster: cluster.name,
            host,
            tunnels: cluster.tunnels_per_host,
            identity,
            handshake: config.handshake,
            maxBackoffMs: config.max_reconnect_backoff,
            statPrefix: config.stat_prefix,
            detailedStats: config.enable_detailed_stats,
            stats: this.stats,
            logger,
            tunnel: {
              maxConcurrentStreams: config.max_concurrent_streams,
              limits: config.http2,
              onStream: (stream, headers, flags) => this.#router.handle(stream, headers, flags),
            },
            tls:
              cluster.tls === undefined
                ? undefined
                : { files: cluster.tls, key: `remote_clusters[${index}].tls` },
            nextConnectionId: () => (connectionIds += 1),
            onEvent: (dialler, event) => this.#onDiallerEvent(dialler, event),
          }),
      ),
    );
    this.#admin = adminServerFor(config.admin, {
      what: "the initiator's admin server",
      stats: this.stats,
      ready: () => this.#ready,
      logger,
    });
  }

  #onDiallerEvent(dialler: HostDialler, event: DiallerEvent): void {
    const { config } = this;
    const record: LifecycleRecord = {
      event: event.event,
      node_id: config.node_id,
      cluster_id: config.cluster_id,
      tenant_id: config.tenant_id,
      upstream_cluster: dialler.cluster,
      host_address: dialler.hostText,
      worker_id: 'worker_0',
      connection_id: event.connectionId,
      ...(event.event === 'handshake_failure' ? { error: event.error, detail: event.detail } : {}),
      ...(event.event === 'connection_closed' ? { close_reason: event.reason } : {}),
    };
    this.#lifecycleLog?.write(record);
    this.emit('lifecycle', record);
    this.#logger.info(record, event.event.replaceAll('_', ' '));
    if (event.event === 'handshake_success') {
      this.emit('handshake_success', dialler.cluster, dialler.hostText);
    } else if (event.event === 'handshake_failure') {
      this.emit('handshake_failure', dialler.cluster, dialler.hostText, event.error);
    } else {
      this.emit('connection_closed', dialler.cluster, dialler.hostText, event.reason);
    }
  }

  get addresses(): InitiatorAddresses {
    if (this.#addresses === undefined) throw new Error('the initiator has not started');
    return this.#addresses;
  }

  /** Use `startInitiator`. */
  async start(): Promise<void> {
    await Promise.all(this.#diallers.map((dialler) => dialler.prepare()));
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
    await this.#lifecycleLog?.close();
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
  const config = validateInitiatorConfig(input);
  assertSecure('initiator', config);
  return startOrClose(new Initiator(config, options));
}
