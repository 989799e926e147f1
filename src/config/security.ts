/**
 * Which configurations are insecure enough that revtun refuses to start them: a listener that
 * other hosts can reach and that takes no credentials, and a tunnel that would leave loopback in
 * cleartext. Each is allowed with `allow_insecure: true`, for a trusted network (or a test) where
 * the risk is accepted on purpose. Pure: the start functions call `assertSecure` before they bind
 * anything, and the CLI adds nothing of its own.
 */
import net from 'node:net';
import { formatHostPort, type HostPort } from '../shared/address.ts';
import { RevtunError } from '../shared/errors.ts';
import type { InitiatorConfig, ResponderConfig } from './schema.ts';

/**
 * Loopback is 127.0.0.0/8, ::1 (and its IPv4-mapped forms) and the name `localhost`, which Node
 * resolves to one of them. Every other address, the wildcards 0.0.0.0 and :: among them, and
 * every other name, is reachable from other hosts.
 */
export function isLoopbackHost(host: string): boolean {
  const name = host.toLowerCase();
  if (name === 'localhost') return true;
  if (net.isIPv4(name)) return loopback.check(name, 'ipv4');
  return net.isIPv6(name) && loopback.check(name, 'ipv6');
}

const loopback = new net.BlockList();
loopback.addSubnet('127.0.0.0', 8, 'ipv4');
loopback.addAddress('::1', 'ipv6');
loopback.addSubnet('::ffff:127.0.0.0', 104, 'ipv6');

interface AdminPart {
  readonly address: HostPort;
  readonly token_file?: string | undefined;
}

/**
 * One message per insecure setting of `config` (none when `allow_insecure` is true), each naming
 * the key, the value, the risk and what to change.
 */
export function insecurityProblems(role: 'initiator', config: InitiatorConfig): string[];
export function insecurityProblems(role: 'responder', config: ResponderConfig): string[];
export function insecurityProblems(
  role: 'initiator' | 'responder',
  config: InitiatorConfig | ResponderConfig,
): string[];
export function insecurityProblems(
  role: 'initiator' | 'responder',
  config: InitiatorConfig | ResponderConfig,
): string[] {
  if (config.allow_insecure) return [];
  const problems = adminProblems(config.admin);
  if (role === 'initiator') problems.push(...initiatorProblems(config as InitiatorConfig));
  else problems.push(...responderProblems(config as ResponderConfig));
  return problems;
}

/**
 * Throws ERR_INSECURE listing every problem `insecurityProblems` finds; for startInitiator and
 * startResponder, before anything is bound or dialled.
 */
export function assertSecure(role: 'initiator', config: InitiatorConfig): void;
export function assertSecure(role: 'responder', config: ResponderConfig): void;
export function assertSecure(
  role: 'initiator' | 'responder',
  config: InitiatorConfig | ResponderConfig,
): void {
  const problems = insecurityProblems(role, config);
  if (problems.length === 0) return;
  const count = `${problems.length} problem${problems.length === 1 ? '' : 's'}`;
  throw new RevtunError(
    'ERR_INSECURE',
    `refusing to start an insecure ${role} (${count}):\n  ${problems.join('\n  ')}\n` +
      `To accept the risk (a trusted network, a test), set allow_insecure: true ` +
      `(on the command line: --allow-insecure).`,
  );
}

function adminProblems(admin: AdminPart | undefined): string[] {
  if (admin === undefined || isLoopbackHost(admin.address.host) || admin.token_file !== undefined) {
    return [];
  }
  return [
    `admin.address ${formatHostPort(admin.address)} is reachable from other hosts and ` +
      'admin.token_file is not set: anyone who reaches it can read the stats. ' +
      'Set admin.token_file, or bind the admin server to loopback (e.g. 127.0.0.1:8889).',
  ];
}

function responderProblems(config: ResponderConfig): string[] {
  const problems: string[] = [];
  const tunnel = config.tunnel_listener;
  const where = `tunnel_listener.address ${formatHostPort(tunnel.address)} is reachable from other hosts`;
  const credentials = tunnel.auth !== undefined || tunnel.tls?.client_ca_file !== undefined;
  if (!isLoopbackHost(tunnel.address.host)) {
    if (tunnel.tls === undefined && tunnel.auth === undefined) {
      problems.push(
        `${where} and the listener has neither tls nor auth: any initiator could claim any node ` +
          'id and receive its traffic. Set tunnel_listener.auth (and tunnel_listener.tls), or ' +
          'bind it to loopback.',
      );
    } else if (tunnel.tls === undefined) {
      problems.push(
        `${where} and the listener has auth but no tls: the credentials and every request ` +
          'would cross the network in cleartext. Set tunnel_listener.tls.',
      );
    } else if (!credentials) {
      problems.push(
        `${where} and the listener has tls but takes no credentials (neither auth nor ` +
          'tls.client_ca_file): any initiator could claim any node id and receive its traffic. ' +
          'Set tunnel_listener.auth or tunnel_listener.tls.client_ca_file.',
      );
    }
  }
  config.egress_listeners.forEach((listener, index) => {
    if (isLoopbackHost(listener.address.host)) return;
    const address = `egress_listeners[${index}].address ${formatHostPort(listener.address)}`;
    if (listener.callers === undefined) {
      problems.push(
        `${address} is reachable from other hosts and the listener has no callers: anyone who ` +
          `reaches it could send requests to every node. Set egress_listeners[${index}].callers, ` +
          'or bind it to loopback.',
      );
    } else if (
      listener.tls === undefined &&
      listener.callers.some((caller) => caller.token_sha256 !== undefined)
    ) {
      problems.push(
        `${address} is reachable from other hosts and its callers send bearer tokens, but the ` +
          'listener has no tls: the tokens would cross the network in cleartext. ' +
          `Set egress_listeners[${index}].tls.`,
      );
    }
  });
  problems.push(...tcpListenerProblems(config));
  return problems;
}

/**
 * A TCP listener takes no credentials at all (raw TCP has nowhere to carry them), so, as an
 * egress listener without callers, it may only be reached from loopback.
 */
function tcpListenerProblems(config: ResponderConfig): string[] {
  const problems: string[] = [];
  config.tcp_listeners.forEach((listener, index) => {
    if (isLoopbackHost(listener.address.host)) return;
    problems.push(
      `tcp_listeners[${index}].address ${formatHostPort(listener.address)} is reachable from ` +
        `other hosts and a tcp listener authenticates no one: anyone who reaches it could open ` +
        `connections to target ${listener.target} on host id ${listener.host_id}. ` +
        'Bind it to loopback (and reach it through an authenticating proxy or a firewall).',
    );
  });
  return problems;
}

function initiatorProblems(config: InitiatorConfig): string[] {
  const problems: string[] = [];
  config.remote_clusters.forEach((cluster, index) => {
    if (cluster.tls !== undefined) return;
    cluster.hosts.forEach((host, hostIndex) => {
      if (isLoopbackHost(host.host)) return;
      problems.push(
        `remote_clusters[${index}].hosts[${hostIndex}] ${formatHostPort(host)} is beyond ` +
          `loopback and remote_clusters[${index}] (${cluster.name}) has no tls: the tunnel would ` +
          "carry the private service's traffic in cleartext. " +
          `Set remote_clusters[${index}].tls.`,
      );
    });
  });
  return problems;
}
