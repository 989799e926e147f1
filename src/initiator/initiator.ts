/**
 * The initiator: dials every host of every remote cluster and keeps `tunnels_per_host` tunnels to
 * each, serves the streams the responders open on them from its local routes, and reports tunnel
 * states on an optional admin server. A host given by name is every address the name resolves to,
 * re-resolved every `resolve_interval` (HostResolver); an IP literal is that one host.
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { validateInitiatorConfig } from '../config/load.ts';
import { assertSecure } from '../config/security.ts';
import type {
  InitiatorConfig,
  InitiatorConfigInput,
  RemoteClusterConfig,
} from '../config/schema.ts';
import type { TunnelRow } from '../admin/tunnels.ts';
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
import { loadClientTls, type ClientTls } from '../shared/tls-files.ts';
import { adminServerFor, type AdminServer } from '../admin/admin-server.ts';
import { HostDialler, type DiallerEvent } from './host-dialler.ts';
import { HostResolver, systemLookup, type HostLookup } from './host-resolver.ts';
import { LocalRouter } from './local-router.ts';
import type { TunnelCloseReason } from './tunnel.ts';

export interface InitiatorAddresses {
  readonly admin: HostPort | undefined;
}

export interface InitiatorStartOptions extends StartOptions {
  /**
   * Resolves the remote clusters' host names to all their addresses, with the contract of
   * `dns.promises.lookup(name, { all: true })`. Default: the system resolver. For tests (and
   * embedders) that decide the answers.
   */
  readonly lookup?: HostLookup;
}

/**
 * How long a retired host's tunnels (its address left the name's answer) may take to finish their
 * streams after GOAWAY before they are cut.
 */
export const retiredHostDrainMs = 60_000;

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
  /** Every dialler not yet gone: configured, resolved, and retired ones still draining. */
  readonly #diallers = new Set<HostDialler>();
  readonly #resolvers: Array<HostResolver<HostDialler>> = [];
  readonly #lookup: HostLookup;
  #connectionIds = 0;
  readonly #admin: AdminServer | undefined;
  readonly #lifecycleLog: LifecycleSink | undefined;
  #addresses: InitiatorAddresses | undefined;
  #ready = false;
  #draining = false;
  /** `POST /drain` came while starting: the drain runs once start() has bound everything. */
  #drainWhenStarted = false;
  #started = false;
  readonly #signal: AbortSignal | undefined;
  #detachSignal = () => {};

  /** Use `startInitiator`. */
  constructor(config: InitiatorConfig, options: InitiatorStartOptions = {}) {
    super();
    const logger = options.logger ?? silentLogger;
    this.#signal = options.signal;
    this.#lookup = options.lookup ?? systemLookup;
    this.config = config;
    this.#logger = logger;
    this.stats = new StatsRegistry();
    this.#router = new LocalRouter(config.local_routes, logger, config.tcp_targets);
    this.#lifecycleLog =
      config.lifecycle_log === undefined
        ? undefined
        : openLifecycleLog(
            config.lifecycle_log.path,
            this.stats.counter('revtun.lifecycle_log.dropped'),
          );
    this.#admin = adminServerFor(config.admin, {
      what: "the initiator's admin server",
      stats: this.stats,
      ready: () => this.#ready,
      logger,
      role: 'initiator',
      tunnels: () => this.tunnelRows(),
      config: () => this.config,
      drain: () => this.drain(),
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
    // TLS files are read once per remote cluster, for all its hosts, resolved ones included.
    const clusterTls = await Promise.all(
      this.config.remote_clusters.map(async (cluster, index) =>
        cluster.tls === undefined
          ? undefined
          : loadClientTls(cluster.tls, `remote_clusters[${index}].tls`),
      ),
    );
    const admin = await this.#admin?.listen();
    this.#addresses = { admin };
    await Promise.all(
      this.config.remote_clusters.flatMap((cluster, index) =>
        cluster.hosts.map((host) => this.#dialHost(cluster, host, clusterTls[index])),
      ),
    );
    this.#started = true;
    this.#ready = true;
    if (this.#drainWhenStarted) this.drain();
    this.#detachSignal = onAbort(this.#signal, () => void this.close());
  }

  /** One row per tunnel slot that is dialling or up, per host (the admin server's `GET /tunnels`). */
  tunnelRows(): TunnelRow[] {
    return [...this.#diallers].flatMap((dialler) => dialler.tunnelRows());
  }

  /**
   * Starts the drain without closing (`POST /drain`; `close()` does the same first): `/ready`
   * answers DRAINING, no host is dialled any more, idle tunnels close and active ones get GOAWAY
   * and finish their streams. The process keeps running, its admin server included, until
   * `close()` (SIGTERM). Idempotent.
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
    for (const resolver of this.#resolvers) resolver.close();
    for (const dialler of this.#diallers) void dialler.close();
  }

  /**
   * Re-resolves every host name now, as `resolve_interval` does; resolves once the answers are
   * applied (new addresses dialled, vanished ones retired).
   */
  async resolveHosts(): Promise<void> {
    await Promise.all(this.#resolvers.map((resolver) => resolver.refresh()));
  }

  /** Dials a configured host: an IP literal at once, a name at every address it resolves to. */
  async #dialHost(
    cluster: RemoteClusterConfig,
    host: HostPort,
    tls: ClientTls | undefined,
  ): Promise<void> {
    if (net.isIP(host.host) !== 0) {
      this.#startDialler(cluster, host, undefined, tls);
      return;
    }
    const resolver = new HostResolver<HostDialler>({
      cluster: cluster.name,
      host,
      intervalMs: cluster.resolve_interval,
      lookup: this.#lookup,
      logger: this.#logger,
      // TLS checks the configured name whichever address is dialled.
      add: (target) => this.#startDialler(cluster, target, host.host, tls),
      retire: (dialler) => this.#retire(dialler),
    });
    this.#resolvers.push(resolver);
    await resolver.start();
  }

  #startDialler(
    cluster: RemoteClusterConfig,
    host: HostPort,
    serverName: string | undefined,
    tls: ClientTls | undefined,
  ): HostDialler {
    const { config } = this;
    const dialler = new HostDialler({
      cluster: cluster.name,
      host,
      serverName,
      tunnels: cluster.tunnels_per_host,
      identity: {
        nodeId: config.node_id,
        clusterId: config.cluster_id,
        tenantId: config.tenant_id,
      },
      handshake: config.handshake,
      maxBackoffMs: config.max_reconnect_backoff,
      statPrefix: config.stat_prefix,
      detailedStats: config.enable_detailed_stats,
      stats: this.stats,
      logger: this.#logger,
      tunnel: {
        maxConcurrentStreams: config.max_concurrent_streams,
        limits: config.http2,
        onStream: (stream, headers, flags) => this.#router.handle(stream, headers, flags),
      },
      tls,
      nextConnectionId: () => (this.#connectionIds += 1),
      onEvent: (source, event) => this.#onDiallerEvent(source, event),
    });
    this.#diallers.add(dialler);
    dialler.start();
    return dialler;
  }

  /** Its address left the name's answer: stop dialling, drain (GOAWAY), then forget it. */
  #retire(dialler: HostDialler): void {
    void deadline(retiredHostDrainMs, dialler.close()).then(() => {
      dialler.destroy();
      this.#diallers.delete(dialler);
    });
  }

  /** Graceful: stops dialling, GOAWAY on active tunnels, waits for their streams up to graceMs. */
  readonly close = once(async ({ graceMs = defaultGraceMs }: CloseOptions) => {
    this.#detachSignal();
    this.#ready = false;
    // Resolvers first, so that no dialler is added once the set below is taken.
    for (const resolver of this.#resolvers) resolver.close();
    const diallers = [...this.#diallers];
    const drained = (async () => {
      await Promise.all(diallers.map((dialler) => dialler.close()));
      await this.#router.close();
    })();
    await deadline(graceMs, drained);
    for (const dialler of diallers) dialler.destroy();
    this.#diallers.clear();
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
  options: InitiatorStartOptions = {},
): Promise<Initiator> {
  const config = validateInitiatorConfig(input);
  assertSecure('initiator', config);
  return startOrClose(new Initiator(config, options));
}
