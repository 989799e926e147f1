/**
 * The initiator's tunnel-state gauges (protocol reference §9): for each state, one gauge per remote
 * cluster and one per host, each also under `worker_0` (revtun runs one event loop, reported as
 * Envoy's worker 0):
 *
 *   <prefix>.cluster.<remote_cluster>.<state>      <prefix>.worker_0.cluster.<remote_cluster>.<state>
 *   <prefix>.host.<host:port>.<state>              <prefix>.worker_0.host.<host:port>.<state>
 *
 * `connected` counts established tunnels (idle and in use); `connecting` counts handshakes in flight.
 */
import type { Gauge, StatsRegistry } from '../shared/stats.ts';

export type TunnelState = 'connected' | 'connecting';

export class StateGauges {
  readonly #gauges: Record<TunnelState, Gauge[]>;

  constructor(stats: StatsRegistry, prefix: string, cluster: string, host: string) {
    const make = (state: TunnelState) => [
      stats.gauge(`${prefix}.cluster.${cluster}.${state}`),
      stats.gauge(`${prefix}.host.${host}.${state}`),
      stats.gauge(`${prefix}.worker_0.cluster.${cluster}.${state}`),
      stats.gauge(`${prefix}.worker_0.host.${host}.${state}`),
    ];
    this.#gauges = { connected: make('connected'), connecting: make('connecting') };
  }

  add(state: TunnelState, delta: number): void {
    for (const gauge of this.#gauges[state]) gauge.inc(delta);
  }
}
