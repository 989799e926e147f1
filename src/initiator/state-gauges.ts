/**
 * The initiator's tunnel-state gauges (protocol reference §9): for each state, one gauge per remote
 * cluster and one per host, each also under `worker_0` (revtun runs one event loop, reported as
 * Envoy's worker 0):
 *
 *   <prefix>.cluster.<remote_cluster>.<state>      <prefix>.worker_0.cluster.<remote_cluster>.<state>
 *   <prefix>.host.<host:port>.<state>              <prefix>.worker_0.host.<host:port>.<state>
 *
 * A tunnel slot holds one of `connecting` (handshake in flight), `connected` (established, idle or
 * in use), `failed` (its last attempt failed; it waits for the retry) or `cannot_connect` (its
 * attempt never reached a responder). A host holds `backoff` while it waits after a failure, and
 * `recovered` once a success has reset that backoff. `connected` and `connecting` always exist, as
 * in the sandbox's output; the others appear when first used.
 */
import type { Gauge, StatTags, StatsRegistry } from '../shared/stats.ts';

export type SlotState = 'connecting' | 'connected' | 'failed' | 'cannot_connect';
export type HostState = 'backoff' | 'recovered';

export class StateGauges {
  readonly #stats: StatsRegistry;
  /** Each state's gauge names, with the tags that make each kind one Prometheus family. */
  readonly #names: (state: SlotState | HostState) => Array<readonly [string, StatTags]>;
  readonly #gauges = new Map<SlotState | HostState, Gauge[]>();
  readonly #host = new Map<HostState, number>();

  constructor(stats: StatsRegistry, prefix: string, cluster: string, host: string) {
    this.#stats = stats;
    const worker = 'worker_0';
    this.#names = (state) => [
      [
        `${prefix}.cluster.${cluster}.${state}`,
        { name: `${prefix}.cluster.${state}`, labels: { cluster } },
      ],
      [`${prefix}.host.${host}.${state}`, { name: `${prefix}.host.${state}`, labels: { host } }],
      [
        `${prefix}.worker_0.cluster.${cluster}.${state}`,
        { name: `${prefix}.worker.cluster.${state}`, labels: { worker, cluster } },
      ],
      [
        `${prefix}.worker_0.host.${host}.${state}`,
        { name: `${prefix}.worker.host.${state}`, labels: { worker, host } },
      ],
    ];
    this.#of('connected');
    this.#of('connecting');
  }

  /** Moves `delta` slots into (or, negative, out of) a slot state. */
  add(state: SlotState, delta: number): void {
    for (const gauge of this.#of(state)) gauge.inc(delta);
  }

  /** Sets this host's synthetic entry for a host state (0 or 1); the cluster gauges follow. */
  setHost(state: HostState, value: 0 | 1): void {
    const delta = value - (this.#host.get(state) ?? 0);
    if (delta === 0) return;
    this.#host.set(state, value);
    for (const gauge of this.#of(state)) gauge.inc(delta);
  }

  #of(state: SlotState | HostState): Gauge[] {
    let gauges = this.#gauges.get(state);
    if (gauges === undefined) {
      gauges = this.#names(state).map(([name, tags]) => this.#stats.gauge(name, tags));
      this.#gauges.set(state, gauges);
    }
    return gauges;
  }
}
