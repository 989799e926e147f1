/**
 * Raw TCP peers for protocol tests: a socket whose bytes a test reads in order and with deadlines.
 */
import net, { type Socket } from 'node:net';
import type { HostPort } from '../../src/shared/address.ts';

/** A connected socket with an in-order byte queue. */
export class RawPeer {
  readonly socket: Socket;
  #buffer = Buffer.alloc(0);
  #ended = false;
  #waiters: Array<() => void> = [];

  constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.#buffer = Buffer.concat([this.#buffer, chunk]);
      this.#wake();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.#ended = true;
      this.#wake();
    });
  }

  static connect(address: HostPort): Promise<RawPeer> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(address.port, address.host, () => {
        socket.removeListener('error', reject);
        resolve(new RawPeer(socket));
      });
      socket.once('error', reject);
    });
  }

  /** Bytes received and not yet taken. */
  get pending(): Buffer {
    return this.#buffer;
  }

  get closed(): boolean {
    return this.#ended;
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** Takes exactly `length` bytes, waiting up to `timeoutMs`; rejects if the peer closes first. */
  async read(length: number, timeoutMs = 5_000): Promise<Buffer> {
    await this.#until(() => this.#buffer.length >= length, timeoutMs, `${length} bytes`);
    const taken = this.#buffer.subarray(0, length);
    this.#buffer = this.#buffer.subarray(length);
    return Buffer.from(taken);
  }

  /** Waits for `length` bytes and returns them without taking them. */
  async peek(length: number, timeoutMs = 5_000): Promise<Buffer> {
    await this.#until(() => this.#buffer.length >= length, timeoutMs, `${length} bytes`);
    return Buffer.from(this.#buffer.subarray(0, length));
  }

  /** Takes everything up to and including `marker`. */
  async readUntil(marker: string, timeoutMs = 5_000): Promise<string> {
    await this.#until(() => this.#buffer.includes(marker), timeoutMs, JSON.stringify(marker));
    const end = this.#buffer.indexOf(marker) + marker.length;
    const taken = this.#buffer.subarray(0, end).toString('latin1');
    this.#buffer = this.#buffer.subarray(end);
    return taken;
  }

  /** Resolves once the peer has closed the connection (rejects after `timeoutMs`). */
  async whenClosed(timeoutMs = 5_000): Promise<void> {
    await this.#until(() => this.#ended, timeoutMs, 'the close', true);
  }

  /** Resolves true if nothing arrives within `ms` (a silence check, the one place a test waits). */
  async silentFor(ms: number): Promise<boolean> {
    try {
      await this.#until(() => this.#buffer.length > 0, ms, 'any byte');
      return false;
    } catch {
      return this.#buffer.length === 0;
    }
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Stops reading and hands the socket over (e.g. to HTTP/2) with the bytes not yet taken. */
  detach(): Socket {
    this.socket.removeAllListeners('data');
    this.socket.pause();
    if (this.#buffer.length > 0) this.socket.unshift(this.#buffer);
    this.#buffer = Buffer.alloc(0);
    return this.socket;
  }

  #until(done: () => boolean, timeoutMs: number, what: string, closeIsOk = false): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (done()) {
          finish();
          resolve();
        } else if (this.#ended && !closeIsOk) {
          finish();
          reject(
            new Error(`the peer closed before ${what} arrived (have ${this.#buffer.length} bytes)`),
          );
        }
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      const finish = () => {
        clearTimeout(timer);
        this.#waiters = this.#waiters.filter((waiter) => waiter !== check);
      };
      this.#waiters.push(check);
      check();
    });
  }

  #wake(): void {
    for (const waiter of [...this.#waiters]) waiter();
  }
}

/** A TCP server whose connections arrive as RawPeers, in order. */
export class RawServer {
  readonly #server: net.Server;
  readonly #peers: RawPeer[] = [];
  #waiters: Array<() => void> = [];
  address: HostPort = { host: '127.0.0.1', port: 0 };

  constructor() {
    this.#server = net.createServer((socket) => {
      this.#peers.push(new RawPeer(socket));
      for (const waiter of this.#waiters.splice(0)) waiter();
    });
  }

  async listen(host = '127.0.0.1', port = 0): Promise<this> {
    await new Promise<void>((resolve) => this.#server.listen(port, host, resolve));
    const bound = this.#server.address() as net.AddressInfo;
    this.address = { host, port: bound.port };
    return this;
  }

  /** The next connection, waiting up to `timeoutMs`. */
  async accept(timeoutMs = 5_000): Promise<RawPeer> {
    const start = Date.now();
    while (this.#peers.length === 0) {
      const left = timeoutMs - (Date.now() - start);
      if (left <= 0) throw new Error(`no connection within ${timeoutMs} ms`);
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`no connection within ${timeoutMs} ms`)),
          left,
        );
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.#peers.shift() as RawPeer;
  }

  async close(): Promise<void> {
    for (const peer of this.#peers) peer.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

/** A handshake request as an Envoy initiator sends it, with `extra` header lines. */
export function handshakeRequest(
  ids: { node?: string; cluster?: string; tenant?: string } = {},
  options: { path?: string; method?: string; extra?: string[]; prefix?: string } = {},
): string {
  const prefix = options.prefix ?? 'x-envoy';
  const lines = [
    `${options.method ?? 'GET'} ${options.path ?? '/reverse_connections/request'} HTTP/1.1`,
    'host: 127.0.0.1:9000',
  ];
  if (ids.node !== undefined) lines.push(`${prefix}-reverse-tunnel-node-id: ${ids.node}`);
  if (ids.cluster !== undefined) lines.push(`${prefix}-reverse-tunnel-cluster-id: ${ids.cluster}`);
  if (ids.tenant !== undefined) lines.push(`${prefix}-reverse-tunnel-tenant-id: ${ids.tenant}`);
  lines.push(...(options.extra ?? ['content-length: 0']), '', '');
  return lines.join('\r\n');
}
