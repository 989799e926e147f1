/**
 * A fake Envoy initiator over raw TCP (protocol reference §2, §5): it sends the handshake bytes a
 * current Envoy initiator sends, in Envoy's order and case, reads the responder's answer byte for
 * byte, echoes `RPING` only when the test says so, and becomes the HTTP/2 server once the
 * responder's preface arrives. Anything it does not expect fails the test.
 */
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import type { HostPort } from '../../src/shared/address.ts';
import { clientPreface } from './h2-frames.ts';
import { RawPeer } from './raw.ts';

/** Exactly what Envoy's test responder sends and a revtun responder must send (reference §3). */
export const acceptedBytes = 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n';
export const upgradedBytes =
  'HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: reverse-tunnel\r\n\r\n';

export interface EnvoyIds {
  readonly node?: string | undefined;
  readonly cluster?: string | undefined;
  readonly tenant?: string | undefined;
}

export interface EnvoyRequestOptions {
  readonly method?: string;
  readonly path?: string;
  readonly prefix?: string;
  /** Upgrade mode: `connection: Upgrade` + `upgrade: <token>` after host. */
  readonly upgrade?: string;
  /** The upstream-cluster-name header; omitted when undefined. */
  readonly upstreamClusterName?: string;
  /** Extra header lines, after the identity headers (e.g. a JWT). */
  readonly extra?: readonly string[];
  /** The content-length value; omitted when null. Default "0". */
  readonly contentLength?: string | null;
  /** Bytes after the head (a body, or tunnel bytes). */
  readonly after?: string;
  readonly connectionId?: number;
}

/**
 * The request a current Envoy initiator writes (reference §2 example): host, the Upgrade pair,
 * the identity headers in table order, extra headers, content-length.
 */
export function envoyHandshakeRequest(
  ids: EnvoyIds = { node: 'n1', cluster: 'c1', tenant: 't1' },
  options: EnvoyRequestOptions = {},
): string {
  const prefix = `${options.prefix ?? 'x-envoy'}-reverse-tunnel`;
  const lines = [
    `${options.method ?? 'GET'} ${options.path ?? '/reverse_connections/request'} HTTP/1.1`,
    'host: 203.0.113.10:9000',
  ];
  if (options.upgrade !== undefined)
    lines.push('connection: Upgrade', `upgrade: ${options.upgrade}`);
  if (ids.node !== undefined) lines.push(`${prefix}-node-id: ${ids.node}`);
  if (ids.cluster !== undefined) lines.push(`${prefix}-cluster-id: ${ids.cluster}`);
  if (ids.tenant !== undefined) lines.push(`${prefix}-tenant-id: ${ids.tenant}`);
  if (options.upstreamClusterName !== undefined) {
    lines.push(`${prefix}-upstream-cluster-name: ${options.upstreamClusterName}`);
  }
  lines.push(
    `${prefix}-initiation-time: ${Date.now()}`,
    `${prefix}-worker-id: worker_0`,
    `${prefix}-connection-id: ${options.connectionId ?? 7}`,
    ...(options.extra ?? []),
  );
  const contentLength = options.contentLength === undefined ? '0' : options.contentLength;
  if (contentLength !== null) lines.push(`content-length: ${contentLength}`);
  return `${lines.join('\r\n')}\r\n\r\n${options.after ?? ''}`;
}

export interface Rejection {
  readonly status: number;
  readonly head: string;
  /** Header names lower-cased; a repeated header keeps its last value. */
  readonly headers: ReadonlyMap<string, string>;
  readonly body: string;
}

export class FakeInitiator {
  readonly peer: RawPeer;

  private constructor(peer: RawPeer) {
    this.peer = peer;
  }

  /** Connects and writes `request` (Envoy's default handshake for n1/c1/t1 if omitted). */
  static async connect(
    address: HostPort,
    request: string = envoyHandshakeRequest(),
  ): Promise<FakeInitiator> {
    const peer = await RawPeer.connect(address);
    peer.write(request);
    return new FakeInitiator(peer);
  }

  /** The answer is exactly Envoy's `200`. */
  async expectAccepted(): Promise<void> {
    const answer = await this.peer.read(acceptedBytes.length);
    assert.equal(answer.toString('latin1'), acceptedBytes);
  }

  /** The answer is exactly the Upgrade-mode `101`. */
  async expectUpgraded(): Promise<void> {
    const answer = await this.peer.read(upgradedBytes.length);
    assert.equal(answer.toString('latin1'), upgradedBytes);
  }

  /** Reads a rejection to the end of its body and checks that the responder then closes. */
  async expectRejection(): Promise<Rejection> {
    const head = await this.peer.readUntil('\r\n\r\n');
    const lines = head.split('\r\n').slice(1, -2);
    const headers = new Map<string, string>();
    for (const line of lines) {
      const colon = line.indexOf(':');
      headers.set(line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim());
    }
    const length = Number(headers.get('content-length'));
    assert.ok(Number.isInteger(length), `a rejection without content-length: ${head}`);
    const body = (await this.peer.read(length)).toString('utf8');
    await this.peer.whenClosed();
    assert.equal(this.peer.pending.length, 0, 'nothing may follow the rejection body');
    return { status: Number(/^HTTP\/1\.1 (\d{3}) /.exec(head)?.[1]), head, headers, body };
  }

  /** The next five bytes are exactly `RPING`. */
  async expectPing(timeoutMs = 5_000): Promise<void> {
    assert.equal((await this.peer.read(5, timeoutMs)).toString('latin1'), 'RPING');
  }

  echo(): void {
    this.peer.write('RPING');
  }

  /** True if the responder sends nothing for `ms`. */
  silentFor(ms: number): Promise<boolean> {
    return this.peer.silentFor(ms);
  }

  /** Waits for the responder's HTTP/2 preface, then serves HTTP/2 on the socket as Envoy's HCM. */
  async serveHttp2(
    onStream: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void,
    settings: http2.Settings = {},
  ): Promise<http2.ServerHttp2Session> {
    assert.equal((await this.peer.peek(24)).toString('latin1'), clientPreface);
    const session = http2.performServerHandshake(this.peer.detach(), { settings });
    session.on('error', () => {});
    session.on('stream', (stream, headers) => {
      stream.on('error', () => {});
      onStream(stream, headers);
    });
    return session;
  }

  destroy(): void {
    this.peer.destroy();
  }
}
