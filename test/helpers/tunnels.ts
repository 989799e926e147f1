/** Starting responders and initiators on port 0 for end-to-end tests, and waiting on their events. */
import type { EventEmitter } from 'node:events';
import type { InitiatorConfigInput, ResponderConfigInput } from '../../src/config/schema.ts';
import { startInitiator, type Initiator } from '../../src/initiator/initiator.ts';
import { startResponder, type Responder } from '../../src/responder/responder.ts';
import type { HostPort } from '../../src/shared/address.ts';

export async function responderOnFreePorts(
  overrides: Partial<ResponderConfigInput> & {
    tunnel?: Partial<ResponderConfigInput['tunnel_listener']>;
  } = {},
): Promise<Responder> {
  const { tunnel, ...rest } = overrides;
  return startResponder({
    stat_prefix: 'reverse_connections',
    admin: { address: '127.0.0.1:0' },
    tunnel_listener: { address: '127.0.0.1:0', ...tunnel },
    egress_listeners: [{ address: '127.0.0.1:0' }],
    ...rest,
  });
}

export interface InitiatorSpec {
  readonly node: string;
  readonly cluster?: string;
  readonly tunnels?: number;
  readonly routes: InitiatorConfigInput['local_routes'];
  /** More of the initiator's config (tcp_targets …), over the defaults here. */
  readonly config?: Partial<InitiatorConfigInput>;
}

/** Starts an initiator dialling `responder` and resolves once the responder registered its tunnels. */
export async function connectedInitiator(
  responder: Responder | HostPort,
  spec: InitiatorSpec,
): Promise<Initiator> {
  const tunnel = 'addresses' in responder ? responder.addresses.tunnel : responder;
  const tunnels = spec.tunnels ?? 1;
  const registered =
    'addresses' in responder ? tunnelsRegistered(responder, spec.node, tunnels) : undefined;
  const initiator = await startInitiator({
    node_id: spec.node,
    cluster_id: spec.cluster ?? 'c1',
    tenant_id: 't1',
    stat_prefix: 'downstream_reverse_connection',
    admin: { address: '127.0.0.1:0' },
    remote_clusters: [
      { name: 'upstream-cluster', hosts: [`127.0.0.1:${tunnel.port}`], tunnels_per_host: tunnels },
    ],
    local_routes: spec.routes,
    ...spec.config,
  });
  await registered;
  return initiator;
}

/** Resolves once `count` tunnels from `node` have been set up at the responder. */
export async function tunnelsRegistered(
  responder: Responder,
  node: string,
  count = 1,
): Promise<void> {
  let seen = 0;
  await waitForEvent(
    responder,
    'tunnel_setup',
    (identity: { nodeId: string }) => identity.nodeId === node && ++seen >= count,
  );
}

/**
 * Resolves with the arguments of the first `event` for which `accept` returns true; rejects after
 * `timeoutMs` so that a test fails with the event's name instead of hanging.
 */
export function waitForEvent<A extends unknown[]>(
  // Any typed emitter; the event map's variance makes a narrower type unassignable.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  emitter: EventEmitter<any>,
  event: string,
  accept: (...args: A) => boolean = () => true,
  timeoutMs = 10_000,
): Promise<A> {
  return new Promise((resolve, reject) => {
    const listener = (...args: unknown[]) => {
      if (!accept(...(args as A))) return;
      cleanup();
      resolve(args as A);
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for "${event}"`));
    }, timeoutMs);
    const cleanup = () => {
      clearTimeout(timer);
      emitter.removeListener(event, listener);
    };
    emitter.on(event, listener);
  });
}
