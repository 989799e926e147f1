/**
 * The responder's tunnels, by node and by cluster (protocol reference §8; envoy
 * brt/upstream_socket_interface/upstream_socket_manager.cc). One pool per process, so a node's
 * tunnels are usable from every request (unlike Envoy's per-worker pools, #41536).
 *
 * The registry hands out HTTP/2 sessions; it never parses HTTP. Per node it keeps the idle tunnels
 * and the live sessions, and it keeps one live session multiplexed until that session is draining
 * or at its stream limit before it checks out another idle tunnel (reference §6 "revtun responder").
 *
 * Under tenant isolation (Envoy's enable_tenant_isolation, #43179) nodes and clusters are keyed
 * `tenant:node` and `tenant:cluster`, so one tenant's ids never find another tenant's tunnels.
 */
import type { Socket } from 'node:net';
import type { TunnelRow } from '../admin/tunnels.ts';
import type { AcceptedHandshake, Identity } from '../protocol/handshake.ts';
import { formatHostPort } from '../shared/address.ts';
import { isRevtunError, RevtunError } from '../shared/errors.ts';
import type { Http2LimitsConfig } from '../shared/http2-limits.ts';
import type { Logger } from '../shared/logger.ts';
import type { Gauge, Histogram, StatTags, StatsRegistry } from '../shared/stats.ts';
import { IdleTunnel, type IdleCloseReason, type IdlePingEvent } from './idle-tunnel.ts';
import { TunnelSession } from './tunnel-session.ts';

/**
 * Where the responder's stats that Envoy's reverse-tunnel extension does not have live (the
 * aggregates, ping_rtt, tunnel_closed): outside the stat prefix, so that the sandbox's
 * `curl …/stats | grep reverse_connections` prints exactly the lines of the seed page.
 */
export const acceptorStats = 'reverse_tunnel.acceptor';

export type TunnelCloseReason =
  | IdleCloseReason
  | 'remote_close'
  | 'local_close'
  /** An in-use tunnel's HTTP/2 PING went unacknowledged (Envoy logs the same name). */
  | 'http2_keepalive_timeout';

/** One registered tunnel, as lifecycle records describe it (reference §10 fields). */
export interface TunnelInfo {
  readonly identity: Identity;
  /** revtun's id for the connection (Envoy logs its fd). */
  readonly connectionId: number;
  readonly initiatorWorkerId: string | undefined;
  readonly initiatorConnectionId: string | undefined;
  /** The initiator end of the connection, `host:port`, taken at registration (for listings). */
  readonly remoteAddress: string;
  /** When the tunnel was registered, epoch ms. */
  readonly establishedAt: number;
}

/** Envoy's responder lifecycle events (brt/upstream_socket_interface/reverse_tunnel_lifecycle_info.h). */
export type TunnelEvent =
  | { readonly event: 'tunnel_setup'; readonly socketState: 'idle' }
  | { readonly event: IdlePingEvent; readonly socketState: 'idle'; readonly missCount: number }
  | {
      readonly event: 'idle_ping_timeout';
      readonly socketState: 'idle';
      readonly missCount: number;
    }
  | { readonly event: 'socket_handoff'; readonly socketState: 'handed_off' }
  | {
      readonly event: 'tunnel_closed';
      readonly socketState: 'idle' | 'in_use';
      readonly closeReason: TunnelCloseReason;
    };

export interface RegistryOptions {
  readonly statPrefix: string;
  readonly stats: StatsRegistry;
  readonly logger: Logger;
  readonly pingIntervalMs: number;
  readonly pingFailureThreshold: number;
  readonly tenantIsolation: boolean;
  /** HTTP/2 limits of every session on a checked-out tunnel. */
  readonly http2: Http2LimitsConfig;
  /** The wait for a stream when every tunnel to the node is at its limit. */
  readonly pendingRequests: { readonly max_per_node: number; readonly timeout: number };
  /** Gauges of departed nodes and clusters kept at 0 before the oldest are removed. */
  readonly maxDepartedStats: number;
  /**
   * Keeps the per-node and per-cluster gauges (`enable_detailed_stats`); without them only the
   * aggregates (`reverse_tunnel.acceptor.total_nodes`, `.total_clusters`, histograms, counters) exist.
   * Default true.
   */
  readonly detailedStats?: boolean;
  /** Spread streams over every tunnel of a node (`use_all_tunnels`). */
  readonly useAllTunnels: boolean;
  readonly onEvent: (tunnel: TunnelInfo, event: TunnelEvent) => void;
  /** Each acknowledged keepalive PING on a tunnel in use, with its round trip, ms. */
  readonly onPingAck?: (tunnel: TunnelInfo, ms: number) => void;
}

export class NodeEntry {
  readonly nodeId: string;
  readonly tenantId: string;
  /** Set by the node's first tunnel and never changed by later ones (as Envoy). */
  readonly clusterId: string;
  /** What proved the first tunnel's identity (handshake auth), which later tunnels must match. */
  credential: string | undefined;
  readonly key: string;
  readonly clusterKey: string;
  readonly idle: IdleTunnel[] = [];
  readonly sessions: TunnelSession[] = [];
  /** Idle tunnels plus live sessions: what the gauges show. */
  tunnels = 0;
  readonly statNames: readonly string[];
  readonly gauges: Gauge[];
  /** A checkout in progress, which requests arriving meanwhile wait for rather than start another. */
  opening: Promise<TunnelSession | null> | undefined;
  /** Requests waiting for a place on a tunnel, first come first served. */
  readonly waiting: Array<() => void> = [];

  /** Lets the longest-waiting request try again: a stream closed or a tunnel arrived. */
  wakeOne(): void {
    this.waiting.shift()?.();
  }

  constructor(
    identity: Identity,
    keys: { node: string; cluster: string },
    stats: StatsRegistry,
    statNames: readonly string[],
  ) {
    this.nodeId = identity.nodeId;
    this.tenantId = identity.tenantId;
    this.clusterId = identity.clusterId;
    this.key = keys.node;
    this.clusterKey = keys.cluster;
    this.statNames = statNames;
    this.gauges = statNames.map((name) => stats.gauge(name));
  }

  /** A live session with room for a stream, the least loaded one. */
  availableSession(exclude?: TunnelSession): TunnelSession | undefined {
    let best: TunnelSession | undefined;
    for (const session of this.sessions) {
      if (session === exclude) continue;
      if (session.available && (best === undefined || session.inFlight < best.inFlight)) {
        best = session;
      }
    }
    return best;
  }

  get usable(): boolean {
    return (
      this.idle.length > 0 || this.opening !== undefined || this.availableSession() !== undefined
    );
  }

  /** The idle tunnel to check out: no echo owed, most recently acked (reference §12 #12). */
  bestIdle(): IdleTunnel | undefined {
    let best: IdleTunnel | undefined;
    for (const tunnel of this.idle) {
      if (best === undefined) best = tunnel;
      else if (tunnel.clean !== best.clean) best = tunnel.clean ? tunnel : best;
      else if (tunnel.lastAckAt > best.lastAckAt) best = tunnel;
    }
    return best;
  }
}

class ClusterEntry {
  readonly nodes: NodeEntry[] = [];
  cursor = 0;
  readonly statNames: readonly string[];
  readonly gauges: Gauge[];

  constructor(stats: StatsRegistry, statNames: readonly string[]) {
    this.statNames = statNames;
    this.gauges = statNames.map((name) => stats.gauge(name));
  }
}

/** `resolve`'s default: every node is acceptable (one function, not one per call). */
const acceptAny = (): boolean => true;

export class TunnelRegistry {
  readonly #options: RegistryOptions;
  readonly #nodes = new Map<string, NodeEntry>();
  readonly #clusters = new Map<string, ClusterEntry>();
  /** Gauge names of departed nodes and clusters, oldest first (see #depart). */
  readonly #departedStats = new Set<string>();
  readonly #infos = new WeakMap<IdleTunnel | TunnelSession, TunnelInfo>();
  /** Tunnels accepted whose 200 is still being written, per node key (they count for limits). */
  readonly #reserved = new Map<string, number>();
  /** The credential of the reservations of a node key that has no entry yet. */
  readonly #reservedCredentials = new Map<string, string | undefined>();
  /** The sum of `#reserved`. */
  #reservedTotal = 0;
  #closed = false;
  #emptyWaiters: Array<() => void> = [];
  /** Distinct nodes and clusters (Envoy's always-on `worker_<n>.total_*` gauges). */
  readonly #totalNodes: Gauge;
  readonly #totalClusters: Gauge;
  /** Round trips of RPING echoes (idle) and HTTP/2 PING acks (in use), ms. */
  readonly #pingRtt: Histogram;

  constructor(options: RegistryOptions) {
    this.#options = options;
    const { stats } = options;
    this.#totalNodes = stats.gauge(`${acceptorStats}.total_nodes`);
    this.#totalClusters = stats.gauge(`${acceptorStats}.total_clusters`);
    this.#pingRtt = stats.histogram(`${acceptorStats}.ping_rtt`);
  }

  /** The registry key of a node or cluster id: `tenant:id` under tenant isolation. */
  key(id: string, tenantId: string): string {
    return this.#options.tenantIsolation ? `${tenantId}:${id}` : id;
  }

  /**
   * Tunnels the identity's node holds now, idle and in use, plus those accepted and not yet
   * registered: so two handshakes at once cannot both take the last place of a per-node limit.
   */
  tunnelsOf(identity: Identity): number {
    const key = this.key(identity.nodeId, identity.tenantId);
    return (this.#nodes.get(key)?.tunnels ?? 0) + (this.#reserved.get(key) ?? 0);
  }

  /**
   * Why `identity` may not join now, or undefined (tenant isolation, issue 4 §3): a node id that is
   * the id of a connected cluster, or a cluster id that is a connected node's id, could not be told
   * apart by a host id; and a node id held (or being accepted) under a different credential belongs
   * to someone else. `credential` is undefined when the listener has no auth.
   */
  conflictOf(identity: Identity, credential: string | undefined): string | undefined {
    const nodeKey = this.key(identity.nodeId, identity.tenantId);
    if ((this.#clusters.get(nodeKey)?.nodes.length ?? 0) > 0) {
      return `node id ${identity.nodeId} is the id of a connected cluster`;
    }
    if (this.#nodes.has(this.key(identity.clusterId, identity.tenantId))) {
      return `cluster id ${identity.clusterId} is the id of a connected node`;
    }
    if (credential === undefined) return undefined;
    const node = this.#nodes.get(nodeKey);
    const holder = node !== undefined ? node.credential : this.#reservedCredentials.get(nodeKey);
    if ((node !== undefined || this.#reserved.has(nodeKey)) && holder !== credential) {
      return `node id ${identity.nodeId} is held by a different credential`;
    }
    return undefined;
  }

  /** Holds a place for an accepted tunnel until its 200 is written; returns the release. */
  reserve(identity: Identity, credential?: string): () => void {
    const key = this.key(identity.nodeId, identity.tenantId);
    if (!this.#reserved.has(key)) this.#reservedCredentials.set(key, credential);
    this.#reserved.set(key, (this.#reserved.get(key) ?? 0) + 1);
    this.#reservedTotal += 1;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#reservedTotal -= 1;
      const left = (this.#reserved.get(key) ?? 1) - 1;
      if (left === 0) {
        this.#reserved.delete(key);
        this.#reservedCredentials.delete(key);
      } else this.#reserved.set(key, left);
    };
  }

  /**
   * Tunnels the responder holds now, idle and in use, plus those accepted and not yet registered:
   * what `tunnel_listener.max_tunnels` is compared with, for the same reason as `tunnelsOf`.
   */
  totalTunnels(): number {
    return this.size + this.#reservedTotal;
  }

  /** Registers a socket that passed the handshake; its accepting response is already flushed. */
  add(
    socket: Socket,
    handshake: AcceptedHandshake,
    leftover: Buffer,
    connectionId: number,
    credential?: string,
  ): void {
    if (this.#closed) {
      socket.destroy();
      return;
    }
    const { identity } = handshake;
    const info: TunnelInfo = {
      identity,
      connectionId,
      initiatorWorkerId: handshake.initiatorWorkerId,
      initiatorConnectionId: handshake.initiatorConnectionId,
      remoteAddress: formatHostPort({
        host: socket.remoteAddress ?? 'unknown',
        port: socket.remotePort ?? 0,
      }),
      establishedAt: Date.now(),
    };
    const node = this.#nodeFor(identity);
    if (node.tunnels === 0) node.credential = credential;
    const cluster = this.#clusters.get(node.clusterKey) as ClusterEntry;
    const tunnel = new IdleTunnel(socket, {
      identity,
      pingIntervalMs: this.#options.pingIntervalMs,
      failureThreshold: this.#options.pingFailureThreshold,
      onRoundTrip: (ms) => this.#pingRtt.observe(ms),
      onPing: (event, missCount) => {
        this.#options.onEvent(info, { event, socketState: 'idle', missCount });
      },
      onClose: (closed, reason, missCount) => {
        removeFrom(node.idle, closed);
        if (reason === 'idle_ping_timeout') {
          this.#options.onEvent(info, {
            event: 'idle_ping_timeout',
            socketState: 'idle',
            missCount,
          });
        }
        this.#released(node, cluster, info, 'idle', reason);
      },
    });
    this.#infos.set(tunnel, info);
    node.idle.push(tunnel);
    node.wakeOne();
    node.tunnels += 1;
    for (const gauge of [...node.gauges, ...cluster.gauges]) gauge.inc();
    this.#options.onEvent(info, { event: 'tunnel_setup', socketState: 'idle' });
    tunnel.start(leftover);
  }

  /**
   * The node a host id names: a known cluster id picks one of its nodes round robin, preferring
   * nodes with a usable tunnel; anything else is taken as a node id. Under tenant isolation the
   * tenant is part of the lookup. Only nodes that `accept` takes are considered (a caller's
   * allow-lists), so a cluster request goes to one of the nodes the caller may reach.
   */
  resolve(
    hostId: string,
    tenantId = '',
    accept: (node: NodeEntry) => boolean = acceptAny,
  ): NodeEntry | undefined {
    const key = this.key(hostId, tenantId);
    const cluster = this.#clusters.get(key);
    if (cluster === undefined || cluster.nodes.length === 0) {
      const node = this.#nodes.get(key);
      return node !== undefined && accept(node) ? node : undefined;
    }
    const count = cluster.nodes.length;
    let fallback: number | undefined;
    for (let i = 0; i < count; i += 1) {
      const index = (cluster.cursor + i) % count;
      const node = cluster.nodes[index] as NodeEntry;
      if (!accept(node)) continue;
      fallback ??= index;
      if (node.usable) {
        cluster.cursor = (index + 1) % count;
        return node;
      }
    }
    if (fallback === undefined) return undefined;
    cluster.cursor = (fallback + 1) % count;
    return cluster.nodes[fallback];
  }

  /** True if a host id names a connected node or cluster (whatever a caller may reach). */
  knows(hostId: string, tenantId = ''): boolean {
    const key = this.key(hostId, tenantId);
    return this.#nodes.has(key) || (this.#clusters.get(key)?.nodes.length ?? 0) > 0;
  }

  /**
   * A session to send a stream to the node on: its least-loaded live session with room, or a new
   * one on a checked-out idle tunnel. When every tunnel to the node is at its stream limit, the
   * request waits its turn (bounded in number and time, `pending_requests`) for a stream to close
   * or a tunnel to arrive. Throws ERR_NO_TUNNEL, or ERR_TUNNEL_BUSY after the wait. `exclude` is a
   * session not to use, and then there is no wait: a retry goes to another tunnel at once or not
   * at all.
   */
  async acquire(node: NodeEntry, exclude?: TunnelSession): Promise<TunnelSession> {
    // The common case, first and without the wait's bookkeeping: a live session has room.
    const session = node.availableSession(exclude);
    if (session !== undefined) {
      if (session.inFlight > 0 && this.#options.useAllTunnels) this.#openSpare(node);
      return session;
    }
    if (exclude !== undefined) return this.#acquireNow(node, exclude);
    const { max_per_node: maxWaiting, timeout } = this.#options.pendingRequests;
    const deadline = Date.now() + timeout;
    for (;;) {
      try {
        return await this.#acquireNow(node, exclude);
      } catch (error) {
        if (!isRevtunError(error, 'ERR_TUNNEL_BUSY')) throw error;
        const left = deadline - Date.now();
        if (left <= 0 || node.waiting.length >= maxWaiting || this.#closed) throw error;
        const pending = this.#options.stats.gauge(`${this.#options.statPrefix}.pending_requests`);
        pending.inc();
        const woken = await waitTurn(node, left);
        pending.dec();
        if (!woken) {
          throw new RevtunError(
            'ERR_TUNNEL_BUSY',
            `every tunnel to node ${node.nodeId} stayed at its stream limit for ${timeout} ms`,
          );
        }
      }
    }
  }

  /**
   * With `use_all_tunnels`, spreads a node's streams over its tunnels: when the least-loaded session is already carrying
   * a stream and the node has an idle tunnel, that tunnel is checked out in the background (one at
   * a time), and the next requests go to the least loaded of them. The request at hand does not
   * wait for it. Each tunnel then has its own TCP connection and HTTP/2 connection window, so one
   * lost segment or one slow bulk transfer holds up only the streams on its own tunnel.
   */
  #openSpare(node: NodeEntry): void {
    if (node.opening !== undefined || this.#closed) return;
    const idle = node.bestIdle();
    if (idle === undefined) return;
    node.opening = this.#checkOut(node, idle).finally(() => {
      node.opening = undefined;
    });
    // Waited for by #acquireNow if a request needs it; a failed checkout has already closed it.
    node.opening.catch(() => {});
  }

  async #acquireNow(node: NodeEntry, exclude?: TunnelSession): Promise<TunnelSession> {
    // Each pass returns, or waits for one checkout (its own, which uses up an idle tunnel, or one
    // already in progress), so the passes are bounded by the node's idle tunnels plus one.
    const passes = node.idle.length + 2;
    for (let pass = 0; pass < passes; pass += 1) {
      const session = node.availableSession(exclude);
      if (session !== undefined) return session;
      if (node.opening === undefined) {
        const idle = node.bestIdle();
        if (idle === undefined) break;
        node.opening = this.#checkOut(node, idle).finally(() => {
          node.opening = undefined;
        });
      }
      const opened = await node.opening;
      if (opened?.available === true) return opened;
    }
    // Busy (worth waiting for) only if a session will take streams again; draining ones will not.
    if (node.sessions.some((session) => !session.draining)) {
      throw new RevtunError(
        'ERR_TUNNEL_BUSY',
        `every tunnel to node ${node.nodeId} is at its stream limit`,
      );
    }
    if (node.sessions.length > 0) {
      throw new RevtunError('ERR_NO_TUNNEL', `every tunnel to node ${node.nodeId} is draining`);
    }
    this.#options.stats.counter(`${this.#options.statPrefix}.pool_miss`).inc();
    throw new RevtunError('ERR_NO_TUNNEL', `no idle tunnel to node ${node.nodeId}`);
  }

  /** Every known node and its tunnel counts, for listings and tests. */
  nodes(): Array<{
    nodeId: string;
    clusterId: string;
    tenantId: string;
    idle: number;
    sessions: number;
  }> {
    return [...this.#nodes.values()].map((node) => ({
      nodeId: node.nodeId,
      clusterId: node.clusterId,
      tenantId: node.tenantId,
      idle: node.idle.length,
      sessions: node.sessions.length,
    }));
  }

  /**
   * One row per tunnel socket, idle or carrying a session (`GET /tunnels`). `responder` names this
   * end (the tunnel listener's address). Bytes are the socket's own counts, which for a checked-out
   * tunnel include the idle phase's RPING bytes; a checkout in progress is in neither list and
   * is left out for that moment.
   */
  tunnelRows(responder: string): TunnelRow[] {
    const rows: TunnelRow[] = [];
    for (const node of this.#nodes.values()) {
      for (const idle of node.idle) {
        const info = this.#infos.get(idle) as TunnelInfo;
        rows.push(
          tunnelRow(node, info, responder, idle.socket, {
            state: 'idle',
            streams: 0,
            rtt: idle.lastPingRttMs,
          }),
        );
      }
      for (const session of node.sessions) {
        const info = this.#infos.get(session) as TunnelInfo;
        const streams = session.inFlight;
        rows.push(
          tunnelRow(node, info, responder, session.socket, {
            state: session.draining ? 'draining' : streams > 0 ? 'in_use' : 'idle',
            streams,
            rtt: session.lastPingRttMs,
          }),
        );
      }
    }
    return rows;
  }

  /** Stops taking tunnels, closes idle ones and sends GOAWAY on live sessions. */
  drain(): void {
    this.#closed = true;
    for (const node of this.#nodes.values()) {
      for (const tunnel of [...node.idle]) tunnel.close();
      for (const session of node.sessions) session.close();
      // Waiting requests try once more, and get their answer now rather than at their deadline.
      for (const wake of node.waiting.splice(0)) wake();
    }
  }

  /** Destroys whatever is left (after the drain deadline). */
  destroy(): void {
    this.drain();
    for (const node of this.#nodes.values()) {
      for (const session of [...node.sessions]) session.destroy();
    }
  }

  /** Resolves once no tunnel is left. */
  whenEmpty(): Promise<void> {
    if (this.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#emptyWaiters.push(resolve));
  }

  get size(): number {
    let total = 0;
    for (const node of this.#nodes.values()) total += node.tunnels;
    return total;
  }

  async #checkOut(node: NodeEntry, idle: IdleTunnel): Promise<TunnelSession | null> {
    removeFrom(node.idle, idle);
    const socket = await idle.checkout();
    // Null: the tunnel closed meanwhile, or the echo it owed did not come and it was closed.
    if (socket === null) return null;
    const info = this.#infos.get(idle) as TunnelInfo;
    const cluster = this.#clusters.get(node.clusterKey) as ClusterEntry;
    const session = new TunnelSession(socket, {
      identity: idle.identity,
      limits: this.#options.http2,
      onStreamClosed: () => node.wakeOne(),
      onPingAck: (ms) => {
        this.#pingRtt.observe(ms);
        this.#options.onPingAck?.(info, ms);
      },
      onClose: (closed, error, closedLocally) => {
        removeFrom(node.sessions, closed);
        if (error !== undefined) {
          this.#options.logger.debug({ node_id: node.nodeId, err: error }, 'tunnel session error');
        }
        this.#released(
          node,
          cluster,
          info,
          'in_use',
          closed.keepaliveTimedOut
            ? 'http2_keepalive_timeout'
            : closedLocally
              ? 'local_close'
              : 'remote_close',
        );
      },
    });
    node.sessions.push(session);
    this.#infos.set(session, info);
    this.#options.onEvent(info, { event: 'socket_handoff', socketState: 'handed_off' });
    return session;
  }

  #nodeFor(identity: Identity): NodeEntry {
    const keys = {
      node: this.key(identity.nodeId, identity.tenantId),
      cluster: this.key(identity.clusterId, identity.tenantId),
    };
    const existing = this.#nodes.get(keys.node);
    if (existing !== undefined) {
      if (existing.clusterId !== identity.clusterId) {
        this.#options.logger.warn(
          {
            node_id: identity.nodeId,
            cluster_id: identity.clusterId,
            registered_cluster_id: existing.clusterId,
          },
          'a tunnel claims another cluster than its node registered with; it is counted in the first cluster',
        );
      }
      return existing;
    }
    const { stats } = this.#options;
    const node = new NodeEntry(
      identity,
      keys,
      stats,
      this.#revive(this.#entryGauges('node', identity.nodeId, identity.tenantId)),
    );
    if (this.#clusters.has(keys.node)) this.#warnCollision(identity.nodeId);
    this.#nodes.set(keys.node, node);
    let cluster = this.#clusters.get(keys.cluster);
    if (cluster === undefined) {
      cluster = new ClusterEntry(
        stats,
        this.#revive(this.#entryGauges('cluster', identity.clusterId, identity.tenantId)),
      );
      this.#clusters.set(keys.cluster, cluster);
      if (this.#nodes.has(keys.cluster)) this.#warnCollision(identity.clusterId);
    }
    cluster.nodes.push(node);
    this.#totals();
    return node;
  }

  /**
   * The per-node or per-cluster gauges of `id` (reference §9), with the tags that make each kind
   * one Prometheus family: `<sp>.nodes.<node>`, `<sp>.worker_0.node.<node>` and, under isolation,
   * `<sp>.tenants.<tenant>.nodes.<node>` (and the same for clusters). None without detailed
   * stats. The aggregate gauges use bare ids even under isolation; the per-tenant ones are added
   * beside them.
   */
  #entryGauges(
    kind: 'node' | 'cluster',
    id: string,
    tenantId: string,
  ): ReadonlyArray<readonly [string, StatTags]> {
    const { statPrefix: sp, tenantIsolation, detailedStats = true } = this.#options;
    if (!detailedStats) return [];
    const plural = `${kind}s`;
    const gauges: Array<readonly [string, StatTags]> = [
      [`${sp}.${plural}.${id}`, { name: `${sp}.${plural}`, labels: { [kind]: id } }],
      [
        `${sp}.worker_0.${kind}.${id}`,
        { name: `${sp}.worker.${kind}`, labels: { worker: 'worker_0', [kind]: id } },
      ],
    ];
    if (tenantIsolation) {
      gauges.push([
        `${sp}.tenants.${tenantId}.${plural}.${id}`,
        { name: `${sp}.tenants.${plural}`, labels: { tenant: tenantId, [kind]: id } },
      ]);
    }
    return gauges;
  }

  /**
   * Creates the gauges of a node or cluster that is back (or new), with their tags, and takes
   * their names off the departed list; returns the names.
   */
  #revive(gauges: ReadonlyArray<readonly [string, StatTags]>): readonly string[] {
    for (const [name, tags] of gauges) {
      this.#departedStats.delete(name);
      this.#options.stats.gauge(name, tags);
    }
    return gauges.map(([name]) => name);
  }

  #totals(): void {
    this.#totalNodes.set(this.#nodes.size);
    this.#totalClusters.set(this.#clusters.size);
  }

  /**
   * Keeps a departed node's or cluster's gauges, reading 0, and removes the oldest such gauges past
   * `maxDepartedStats`. A name still above 0 belongs to a live entry as well (the aggregate gauges
   * use bare ids, which two tenants can share under isolation): it is only forgotten here, and
   * comes back when that entry departs.
   */
  #depart(names: readonly string[]): void {
    const { stats, maxDepartedStats } = this.#options;
    for (const name of names) {
      this.#departedStats.delete(name);
      this.#departedStats.add(name);
    }
    for (const name of this.#departedStats) {
      if (this.#departedStats.size <= maxDepartedStats) break;
      this.#departedStats.delete(name);
      if (stats.value(name) === 0) stats.remove(name);
    }
  }

  #warnCollision(id: string): void {
    this.#options.logger.warn(
      { id },
      'a node id equals a cluster id: host id lookups find the cluster, so the node is unreachable by its id',
    );
  }

  #released(
    node: NodeEntry,
    cluster: ClusterEntry,
    info: TunnelInfo,
    socketState: 'idle' | 'in_use',
    closeReason: TunnelCloseReason,
  ): void {
    node.tunnels -= 1;
    for (const gauge of [...node.gauges, ...cluster.gauges]) gauge.dec();
    const { stats } = this.#options;
    // By reason (a short fixed list), so that keepalive timeouts can be alerted on.
    stats
      .counter(`${acceptorStats}.tunnel_closed.${closeReason}`, {
        name: `${acceptorStats}.tunnel_closed`,
        labels: { reason: closeReason },
      })
      .inc();
    this.#options.onEvent(info, { event: 'tunnel_closed', socketState, closeReason });
    if (node.tunnels > 0) return;
    // A node's entries go with its last tunnel (reference §8 "Keys"); requests waiting for one of
    // its streams try once more and get their 503 now, not at their deadline.
    this.#nodes.delete(node.key);
    for (const wake of node.waiting.splice(0)) wake();
    removeFrom(cluster.nodes, node);
    this.#depart(node.statNames);
    if (cluster.nodes.length === 0) {
      this.#clusters.delete(node.clusterKey);
      this.#depart(cluster.statNames);
    }
    this.#totals();
    if (this.#nodes.size === 0) {
      const waiters = this.#emptyWaiters;
      this.#emptyWaiters = [];
      for (const waiter of waiters) waiter();
    }
  }
}

function tunnelRow(
  node: NodeEntry,
  info: TunnelInfo,
  responder: string,
  socket: Socket,
  now: { state: TunnelRow['state']; streams: number; rtt: number | null },
): TunnelRow {
  return {
    node: node.nodeId,
    cluster: node.clusterId,
    tenant: node.tenantId,
    remote_address: info.remoteAddress,
    responder,
    state: now.state,
    established_at: new Date(info.establishedAt).toISOString(),
    streams_in_flight: now.streams,
    bytes_sent: socket.bytesWritten,
    bytes_received: socket.bytesRead,
    last_ping_rtt_ms: now.rtt,
  };
}

function removeFrom<T>(list: T[], item: T): void {
  const index = list.indexOf(item);
  if (index >= 0) list.splice(index, 1);
}

/** Waits in the node's queue until woken (true) or for `ms` (false, and out of the queue). */
function waitTurn(node: NodeEntry, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const wake = () => {
      clearTimeout(timer);
      resolve(true);
    };
    const timer = setTimeout(() => {
      removeFrom(node.waiting, wake);
      resolve(false);
    }, ms);
    node.waiting.push(wake);
  });
}
