/**
 * A TCP relay between an initiator and a responder that can stop passing bytes in either
 * direction without closing anything: the path looks alive to both ends (a black-holed link), or
 * cut every connection it carries at once, both sides (a killed tunnel).
 */
import net, { type Socket } from 'node:net';
import type { HostPort } from '../../src/shared/address.ts';

export class Relay {
  readonly #server: net.Server;
  readonly #sockets = new Set<Socket>();
  /** Open connections, as [from the initiator, to the responder]. */
  readonly #connections = new Set<readonly [Socket, Socket]>();
  /** While true, bytes from the initiator are dropped. */
  dropFromInitiator = false;
  /** While true, bytes from the responder are dropped. */
  dropFromResponder = false;
  address: HostPort = { host: '127.0.0.1', port: 0 };

  constructor(target: HostPort) {
    this.#server = net.createServer((inbound) => {
      const outbound = net.connect(target.port, target.host);
      const connection = [inbound, outbound] as const;
      this.#connections.add(connection);
      for (const socket of [inbound, outbound]) {
        this.#sockets.add(socket);
        socket.on('error', () => {});
        socket.on('close', () => {
          this.#sockets.delete(socket);
          this.#connections.delete(connection);
          inbound.destroy();
          outbound.destroy();
        });
      }
      inbound.on('data', (chunk: Buffer) => {
        if (!this.dropFromInitiator) outbound.write(chunk);
      });
      outbound.on('data', (chunk: Buffer) => {
        if (!this.dropFromResponder) inbound.write(chunk);
      });
    });
  }

  async listen(): Promise<this> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    this.address = { host: '127.0.0.1', port: (this.#server.address() as net.AddressInfo).port };
    return this;
  }

  /** Drops every byte both ways from now on, on every connection (new ones too). */
  blackHole(): void {
    this.dropFromInitiator = true;
    this.dropFromResponder = true;
  }

  /** Connections open now (each is a socket from the initiator and one to the responder). */
  get connections(): number {
    return this.#connections.size;
  }

  /**
   * Ends every open connection now, both sides at once: with `reset` an RST to each end
   * (`resetAndDestroy`), with `destroy` a FIN. New connections are relayed as before. Returns how
   * many connections were cut.
   */
  cut(how: 'reset' | 'destroy' = 'reset'): number {
    const connections = [...this.#connections];
    this.#connections.clear();
    for (const sockets of connections) {
      for (const socket of sockets) {
        if (how === 'reset') socket.resetAndDestroy();
        else socket.destroy();
      }
    }
    return connections.length;
  }

  async close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}
