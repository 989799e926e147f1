import net from 'node:net';
import { RevtunError } from './errors.ts';

/** A TCP endpoint. `host` is a name, an IPv4 address or a bare IPv6 address (no brackets). */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/**
 * Parses `host:port`, `[v6]:port` or, when `defaultHost` is given, a bare `port`.
 * Port 0 is accepted only with `allowPortZero` (listeners: "pick a free port").
 */
export function parseHostPort(
  text: string,
  options: { defaultHost?: string; allowPortZero?: boolean } = {},
): HostPort {
  const fail = (why: string): never => {
    throw new RevtunError('ERR_ADDRESS_INVALID', `invalid address "${text}": ${why}`);
  };
  let host: string;
  let portText: string;
  if (/^\d+$/.test(text)) {
    if (options.defaultHost === undefined) fail('expected host:port');
    host = options.defaultHost as string;
    portText = text;
  } else if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0 || text[close + 1] !== ':') fail('expected [ipv6]:port');
    host = text.slice(1, close);
    portText = text.slice(close + 2);
    if (net.isIPv6(host) === false) fail(`"${host}" is not an IPv6 address`);
  } else {
    const colon = text.lastIndexOf(':');
    if (colon <= 0) fail('expected host:port');
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (host.includes(':')) fail('an IPv6 address must be written in brackets, e.g. [::1]:9000');
    if (!/^[A-Za-z0-9.-]+$/.test(host)) fail(`"${host}" is not a host name or IPv4 address`);
  }
  if (!/^\d{1,5}$/.test(portText)) fail(`"${portText}" is not a port number`);
  const port = Number(portText);
  if (port > 65535) fail(`port ${port} is above 65535`);
  if (port === 0 && options.allowPortZero !== true) fail('port 0 is not allowed here');
  return { host, port };
}

/** `host:port`, with brackets around IPv6 addresses, as used in Host headers and stat names. */
export function formatHostPort({ host, port }: HostPort): string {
  return net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
}
