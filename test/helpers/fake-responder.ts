/**
 * A fake Envoy responder over raw TCP (protocol reference §3–§6): it accepts connections, reads the
 * initiator's handshake request byte for byte, answers it as the test says (Envoy's exact `200`, or
 * any status), sends `RPING` and reads the echo, and acts as the HTTP/2 client on checkout.
 */
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { formatHostPort, type HostPort } from '../../src/shared/address.ts';
import { acceptedBytes } from './fake-initiator.ts';
import { RawServer, type RawPeer } from './raw.ts';

export interface SeenRequest {
  /** The whole head, up to and including the blank line. */
  readonly head: string;
  readonly requestLine: string;
  /** Header lines in arrival order, exactly as written. */
  readonly lines: readonly string[];
  /** The value of a header (name compared case-insensitively), or undefined. */
  get(name: string): string | undefined;
}

export class FakeTunnel {
  readonly peer: RawPeer;

  constructor(peer: RawPeer) {
    this.peer = peer;
  }

  /** Reads the handshake request head; nothing may come after it before the answer. */
  async readHandshake(timeoutMs = 5_000): Promise<SeenRequest> {
    const head = await this.peer.readUntil('\r\n\r\n', timeoutMs);
    const [requestLine = '', ...lines] = head.split('\r\n').slice(0, -2);
    return {
      head,
      requestLine,
      lines,
      get(name) {
        const wanted = name.toLowerCase();
        const line = lines.find((l) => l.slice(0, l.indexOf(':')).toLowerCase() === wanted);
        return line?.slice(line.indexOf(':') + 1).trim();
      },
    };
  }

  /** Answers with Envoy's exact `200`, followed by `then` in the same write. */
  accept(then: string | Buffer = ''): void {
    this.peer.write(Buffer.concat([Buffer.from(acceptedBytes, 'latin1'), Buffer.from(then)]));
  }

  /** Answers with a status, extra header lines and an empty body. */
  answer(status: number, headers: readonly string[] = []): void {
    this.peer.write(
      [`HTTP/1.1 ${status} Status`, ...headers, 'content-length: 0', '', ''].join('\r\n'),
    );
  }

  ping(): void {
    this.peer.write('RPING');
  }

  /** The next five bytes from the initiator are exactly `RPING`. */
  async expectEcho(timeoutMs = 5_000): Promise<void> {
    assert.equal((await this.peer.read(5, timeoutMs)).toString('latin1'), 'RPING');
  }

  silentFor(ms: number): Promise<boolean> {
    return this.peer.silentFor(ms);
  }

  /** Checks the tunnel out: the responder's HTTP/2 client on this socket. */
  http2Client(): http2.ClientHttp2Session {
    const session = http2.connect('http://tunnel', { createConnection: () => this.peer.detach() });
    session.on('error', () => {});
    return session;
  }

  destroy(): void {
    this.peer.destroy();
  }
}

export class FakeResponder {
  readonly #server: RawServer;

  private constructor(server: RawServer) {
    this.#server = server;
  }

  static async listen(host = '127.0.0.1'): Promise<FakeResponder> {
    return new FakeResponder(await new RawServer().listen(host));
  }

  get address(): HostPort {
    return this.#server.address;
  }

  /** `host:port` as an initiator config and its stats write it (`[::1]:port` for IPv6). */
  get hostText(): string {
    return formatHostPort(this.#server.address);
  }

  /** The next connection from the initiator. */
  async accept(timeoutMs = 5_000): Promise<FakeTunnel> {
    return new FakeTunnel(await this.#server.accept(timeoutMs));
  }

  close(): Promise<void> {
    return this.#server.close();
  }
}
