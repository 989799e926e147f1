/** A raw TCP caller for tests of TCP listeners: connects half-open and records how it ended. */
import net from 'node:net';
import type { HostPort } from '../../src/shared/address.ts';

export interface CallerOutcome {
  /** Every byte received, in order. */
  readonly data: Buffer;
  /** True if the peer's FIN arrived (a clean end of what it sends). */
  readonly ended: boolean;
  /** The socket error's code (ECONNRESET for an RST), if any. */
  readonly errorCode: string | undefined;
}

export class TcpCaller {
  readonly socket: net.Socket;
  readonly #chunks: Buffer[] = [];
  #received = 0;
  #ended = false;
  #errorCode: string | undefined;
  readonly closed: Promise<CallerOutcome>;
  /** Resolves once connected; rejects with the error of a connection that failed first. */
  readonly connected: Promise<void>;
  #waiters: Array<() => void> = [];

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.#chunks.push(chunk);
      this.#received += chunk.length;
      for (const wake of this.#waiters.splice(0)) wake();
    });
    socket.on('end', () => {
      this.#ended = true;
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      this.#errorCode = error.code;
    });
    this.connected = new Promise((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('close', () =>
        reject(new Error(`closed before connecting (${this.#errorCode})`)),
      );
    });
    // Only the tests that wait for the connection look at why it failed.
    this.connected.catch(() => {});
    this.closed = new Promise((resolve) => {
      socket.on('close', () => {
        for (const wake of this.#waiters.splice(0)) wake();
        resolve({
          data: Buffer.concat(this.#chunks),
          ended: this.#ended,
          errorCode: this.#errorCode,
        });
      });
    });
  }

  /** Connects and resolves once connected; rejects if the connection fails first. */
  static async connect(address: HostPort): Promise<TcpCaller> {
    const caller = TcpCaller.open(address);
    await caller.connected;
    return caller;
  }

  /**
   * Starts connecting and returns at once: for a listener that may reset the connection before
   * the client saw it established (then only `closed` tells how it ended).
   */
  static open(address: HostPort): TcpCaller {
    return new TcpCaller(
      net.connect({ port: address.port, host: address.host, allowHalfOpen: true }),
    );
  }

  /** Resolves once `count` bytes in all have arrived; rejects if the socket closes first or at the deadline. */
  receivedAtLeast(count: number, timeoutMs = 10_000): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`timed out waiting for ${count} bytes (have ${this.#received})`));
      }, timeoutMs);
      const check = () => {
        if (this.#received >= count) {
          clearTimeout(timer);
          resolve(Buffer.concat(this.#chunks));
        } else if (this.socket.destroyed) {
          clearTimeout(timer);
          reject(new Error(`closed after ${this.#received} of ${count} bytes`));
        } else this.#waiters.push(check);
      };
      check();
    });
  }
}
