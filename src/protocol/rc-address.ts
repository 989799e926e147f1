/**
 * The `rc://` reverse-connection address (protocol reference §7, envoy brt/downstream_socket_interface/
 * reverse_connection_resolver.cc):
 *
 *   rc://<node_id>:<cluster_id>:<tenant_id>@<remote_cluster>:<connection_count>
 *
 * Checks run in Envoy's order; revtun also rejects an empty tenant at configuration time because
 * the newest responders reject it at handshake time.
 */
import { RevtunError } from '../shared/errors.ts';
import type { Identity } from './handshake.ts';

export interface RcAddress {
  readonly identity: Identity;
  readonly remoteCluster: string;
  /** Tunnels per host of the remote cluster. 0 loads but dials nothing. */
  readonly connectionCount: number;
}

export function parseRcAddress(address: string): RcAddress {
  const fail = (why: string): never => {
    throw new RevtunError('ERR_RC_ADDRESS_INVALID', `invalid rc:// address "${address}": ${why}`);
  };
  if (!address.startsWith('rc://')) fail('it must start with rc://');
  const sides = address.slice('rc://'.length).split('@');
  if (sides.length !== 2)
    fail('expected exactly one "@" between the identity and the remote cluster');
  const [left, right] = sides as [string, string];
  const ids = left.split(':');
  if (ids.length !== 3) fail('expected <node_id>:<cluster_id>:<tenant_id> before "@"');
  const [nodeId, clusterId, tenantId] = ids as [string, string, string];
  if (nodeId === '') fail('the node id is empty');
  if (clusterId === '') fail('the cluster id is empty');
  if (tenantId === '') fail('the tenant id is empty (current responders reject an empty tenant)');
  const target = right.split(':');
  if (target.length !== 2) fail('expected <remote_cluster>:<connection_count> after "@"');
  const [remoteCluster, countText] = target as [string, string];
  if (remoteCluster === '') fail('the remote cluster name is empty');
  const connectionCount = /^\d{1,10}$/.test(countText) ? Number(countText) : NaN;
  if (!(connectionCount <= 0xffff_ffff)) fail(`connection count "${countText}" is not a uint32`);
  return { identity: { nodeId, clusterId, tenantId }, remoteCluster, connectionCount };
}
