/**
 * The forwarding headers an egress listener adds to each request it sends on a tunnel
 * (`forwarded_headers`, docs/egress.md): `via` (RFC 9110 §7.6.3) and either the de-facto
 * `x-forwarded-for`/`-proto`/`-host` or RFC 7239 `forwarded`. They are added after the request
 * script ran, to the headers that go on the tunnel only.
 */
import type { OutgoingHttpHeaders } from 'node:http2';
import type { EgressListenerConfig } from '../config/schema.ts';

export type ForwardedHeadersConfig = EgressListenerConfig['forwarded_headers'];

/** What the listener knows of how the caller reached it. */
export interface CallerHop {
  /** The caller's address as the socket gives it (`::ffff:` prefix and all). */
  readonly address: string | undefined;
  /** `http` or `https`: how the caller reached revtun. */
  readonly proto: string;
  /** The caller's Host or `:authority`. */
  readonly host: string | undefined;
  /** The caller's HTTP version as `via` writes it: `1.1`, `1.0` or `2` (RFC 9110 §7.6.3). */
  readonly version: string;
}

const xForwarded = ['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host'] as const;

/** Adds `via` and the forwarding headers to `out` as `config` says. */
export function addForwardedHeaders(
  out: OutgoingHttpHeaders,
  hop: CallerHop,
  config: ForwardedHeadersConfig,
): void {
  if (config.via) out['via'] = appended(out['via'], `${hop.version} revtun`);
  const address = hop.address === undefined ? undefined : plainAddress(hop.address);
  if (config.incoming === 'replace') {
    for (const name of xForwarded) delete out[name];
    delete out['forwarded'];
  }
  if (config.mode === 'x-forwarded') {
    if (address !== undefined) out['x-forwarded-for'] = appended(out['x-forwarded-for'], address);
    if (config.incoming !== 'trust' || out['x-forwarded-proto'] === undefined) {
      out['x-forwarded-proto'] = hop.proto;
    }
    if (
      hop.host !== undefined &&
      (config.incoming !== 'trust' || out['x-forwarded-host'] === undefined)
    ) {
      out['x-forwarded-host'] = hop.host;
    }
  } else if (config.mode === 'forwarded') {
    const parts: string[] = [];
    if (address !== undefined) parts.push(`for=${forwardedNode(address)}`);
    parts.push(`proto=${hop.proto}`);
    if (hop.host !== undefined) parts.push(`host=${quotedIfNeeded(hop.host)}`);
    out['forwarded'] = appended(out['forwarded'], parts.join(';'));
  }
}

/** `value` after the header's present values, as one comma-separated field (RFC 9110 §5.3). */
function appended(present: OutgoingHttpHeaders[string], value: string): string {
  if (present === undefined) return value;
  const before = Array.isArray(present) ? present.join(', ') : String(present);
  return before === '' ? value : `${before}, ${value}`;
}

/** An IPv4 address reached over a dual-stack socket (`::ffff:192.0.2.1`) as IPv4. */
function plainAddress(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

/** RFC 7239 §6: an IPv6 node is bracketed, and then must be quoted. */
function forwardedNode(address: string): string {
  return address.includes(':') ? `"[${address}]"` : address;
}

/** RFC 7239 §4: a value that is not a token is a quoted-string (a host with a port has ':'). */
function quotedIfNeeded(value: string): string {
  return /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(value)
    ? value
    : `"${value.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`;
}
