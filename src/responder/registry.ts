/**
 * The responder's tunnels, by node and by cluster (protocol reference §8; envoy
 * brt/upstream_socket_interface/upstream_socket_manager.cc). One pool per process, so a node's
 * tunnels are usable from every request (unlike Envoy's per-worker pools, #41536).
 *
 * The registry hands out HTTP/2 sessions; it never parses HTTP. Per node it keeps the idle tunnels
 * and the live sessions, and it keeps one live session multiplexed until that session is draining
 * or at its stream limit before it checks out another idle tunnel (reference §6 "revtun responder").
 */
import type { Socket } from 'node:net';
import type { Identity } from '../protocol/handshake.ts';
import { RevtunError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import type { Gauge, StatsRegistry } from '../shared/stats.ts';
import { IdleTunnel, type IdleCloseReason } from './idle-tunnel.ts';
import { TunnelSession } from './tunnel-session.ts';

export type TunnelCloseReason = IdleCloseReason | 'remote_close' | 'local_close';

export interface RegistryEvents {
  readonly tunnel_setup: (identity: Identity) => void;
  readonly socket_handoff: (identity: Identity) => void;
  readonly tunnel_closed: (identity: Identity, reason: TunnelCloseReason) => void;
}

export interface RegistryOptions {
  readonly statPrefix: string;
  readonly stats: StatsRegistry;
  readonly logger: Logger;
  readonly pingIntervalMs: number;
  readonly pingFailureThreshold: number;
  readonly events: RegistryEvents;
}

export class NodeEntry {
  readonly nodeId: string;
  /** Set by the node's first tunnel and never changed by later ones (as Envoy). */
  readonly clusterId: string;
  readonly idle: IdleTunnel[] = [];
  readonly sessions: TunnelSession[] = [];
  /** Idle tunnels plus live sessions: what the gauges show. */
  tunnels = 0;
  readonly gauges: Gauge[];
  /** A checkout in progress, which requests arriving meanwhile wait for rather than start another. */
  opening: Promise<TunnelSession | null> | undefined;

  constructor(identity: Identity, gauges: Gauge[]) {
    this.nodeId = identity.nodeId;
    this.clusterId = identity.clusterId;
    this.gauges = gauges;
  }

  /** A live session with room for a stream, the least loaded one. */
  availableSession(): TunnelSession | undefined {
    let best: TunnelSession | undefined;
    for (const session of this.sessions) {
      if (session.available && (best === undefined || session.inFlight < best.inFlight))
        best = session;
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
  readonly gauges: Gauge[];

  constructor(gauges: Gauge[]) {
    this.gauges = gauges;
  }
}

export class TunnelRegistry {
  readonly #options: RegistryOptions;
  readonly #nodes = new Map<string, NodeEntry>();
  readonly #clusters = new Map<string, ClusterEntry>();
  #closed = false;
  #emptyWaiters: Array<() => void> = [];

  constructor(options: RegistryOptions) {
    this.#options = options;
  }

  /** Registers a socket that passed the handshake; its accepting response is already flushed. */
  add(socket: Socket, identity: Identity, leftover: Buffer): void {
    if (this.#closed) {
      socket.destroy();
      return;
    }
    const node = this.#nodeFor(identity);
    const cluster = this.#clusters.get(node.clusterId) as ClusterEntry;
    const tunnel = new IdleTunnel(socket, {
      identity,
      pingIntervalMs: this.#options.pingIntervalMs,
      failureThreshold: this.#options.pingFailureThreshold,
      onClose: (closed, reason) => {
        removeFrom(node.idle, closed);
        this.#released(node, cluster, identity, reason);
      },
    });
    node.idle.push(tunnel);
    node.tunnels += 1;
    for (const gauge of [...node.gauges, ...cluster.gauges]) gauge.inc();
    this.#options.events.tunnel_setup(identity);
    tunnel.start(leftover);
  }

  /**
   * The node a host id names: a known cluster id picks one of its nodes round robin, preferring
   * nodes with a usable tunnel; anything else is taken as a node id.
   */
  resolve(hostId: string): NodeEntry | undefined {
    const cluster = this.#clusters.get(hostId);
    if (cluster === undefined || cluster.nodes.length === 0) return this.#nodes.get(hostId);
    const count = cluster.nodes.length;
    for (let i = 0; i < count; i += 1) {
      const node = cluster.nodes[(cluster.cursor + i) % count] as NodeEntry;
      if (node.usable) {
        cluster.cursor = (cluster.cursor + i + 1) % count;
        return node;
      }
    }
    const first = cluster.nodes[cluster.cursor % count];
    cluster.cursor = (cluster.cursor + 1) % count;
    return first;
  }

  /**
   * A session to send a stream to the node on: its least-loaded live session with room, or a new
   * one on a checked-out idle tunnel. Throws ERR_NO_TUNNEL or ERR_TUNNEL_BUSY.
   */
  async acquire(node: NodeEntry): Promise<TunnelSession> {
    // Each pass either returns, throws, or consumes an idle tunnel / awaits a checkout, so the
    // passes are bounded by the node's idle tunnels plus one.
    const passes = node.idle.length + 2;
    for (let pass = 0; pass < passes; pass += 1) {
      const session = node.availableSession();
      if (session !== undefined) return session;
      if (node.opening !== undefined) {
        const opened = await node.opening;
        if (opened?.available === true) return opened;
        continue;
      }
      const idle = node.bestIdle();
      if (idle === undefined) break;
      node.opening = this.#checkOut(node, idle).finally(() => {
        node.opening = undefined;
      });
    }
    if (node.sessions.length > 0) {
      throw new RevtunError(
        'ERR_TUNNEL_BUSY',
        `every tunnel to node ${node.nodeId} is at its stream limit`,
      );
    }
    this.#options.stats.counter(`${this.#options.statPrefix}.pool_miss`).inc();
    throw new RevtunError('ERR_NO_TUNNEL', `no idle tunnel to node ${node.nodeId}`);
  }

  /** Every known node and its tunnel counts, for listings and tests. */
  nodes(): Array<{ nodeId: string; clusterId: string; idle: number; sessions: number }> {
    return [...this.#nodes.values()].map((node) => ({
      nodeId: node.nodeId,
      clusterId: node.clusterId,
      idle: node.idle.length,
      sessions: node.sessions.length,
    }));
  }

  /** Stops taking tunnels, closes idle ones and sends GOAWAY on live sessions. */
  drain(): void {
    this.#closed = true;
    for (const node of this.#nodes.values()) {
      for (const tunnel of [...node.idle]) tunnel.close();
      for (const session of node.sessions) session.close();
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
    if (socket === null) {
      // The owed echo did not come in time: leave the tunnel to its keepalive, which closes it if
      // the peer is really gone.
      if (idle.state === 'idle') node.idle.push(idle);
      return null;
    }
    const cluster = this.#clusters.get(node.clusterId) as ClusterEntry;
    const session = new TunnelSession(socket, {
      identity: idle.identity,
      onClose: (closed, error) => {
        removeFrom(node.sessions, closed);
        if (error !== undefined) {
          this.#options.logger.debug({ node_id: node.nodeId, err: error }, 'tunnel session error');
        }
        this.#released(node, cluster, idle.identity, 'remote_close');
      },
    });
    node.sessions.push(session);
    this.#options.events.socket_handoff(idle.identity);
    return session;
  }

  #nodeFor(identity: Identity): NodeEntry {
    const existing = this.#nodes.get(identity.nodeId);
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
    const { stats, statPrefix: sp } = this.#options;
    const node = new NodeEntry(identity, [
      stats.gauge(`${sp}.nodes.${identity.nodeId}`),
      stats.gauge(`${sp}.worker_0.node.${identity.nodeId}`),
    ]);
    if (this.#clusters.has(identity.nodeId)) this.#warnCollision(identity.nodeId);
    this.#nodes.set(identity.nodeId, node);
    let cluster = this.#clusters.get(identity.clusterId);
    if (cluster === undefined) {
      cluster = new ClusterEntry([
        stats.gauge(`${sp}.clusters.${identity.clusterId}`),
        stats.gauge(`${sp}.worker_0.cluster.${identity.clusterId}`),
      ]);
      this.#clusters.set(identity.clusterId, cluster);
      if (this.#nodes.has(identity.clusterId)) this.#warnCollision(identity.clusterId);
    }
    cluster.nodes.push(node);
    return node;
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
    identity: Identity,
    reason: TunnelCloseReason,
  ): void {
    node.tunnels -= 1;
    for (const gauge of [...node.gauges, ...cluster.gauges]) gauge.dec();
    this.#options.events.tunnel_closed(identity, reason);
    if (node.tunnels > 0) return;
    // A node's entries go with its last tunnel (reference §8 "Keys").
    this.#nodes.delete(node.nodeId);
    removeFrom(cluster.nodes, node);
    if (cluster.nodes.length === 0) this.#clusters.delete(node.clusterId);
    if (this.#nodes.size === 0) {
      const waiters = this.#emptyWaiters;
      this.#emptyWaiters = [];
      for (const waiter of waiters) waiter();
    }
  }
}

function removeFrom<T>(list: T[], item: T): void {
  const index = list.indexOf(item);
  if (index >= 0) list.splice(index, 1);
}
