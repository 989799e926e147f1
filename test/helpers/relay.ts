/**
 * A TCP relay between an initiator and a responder that can stop passing bytes in either
 * direction without closing anything: the path looks alive to both ends (a black-holed link).
 */
import net, { type Socket } from 'node:net';
import type { HostPort } from '../../src/shared/address.ts';

export class Relay {
  readonly #server: net.Server;
  readonly #sockets = new Set<Socket>();
  /** While true, bytes from the initiator are dropped. */
  dropFromInitiator = false;
  /** While true, bytes from the responder are dropped. */
  dropFromResponder = false;
  address: HostPort = { host: '127.0.0.1', port: 0 };

  constructor(target: HostPort) {
    this.#server = net.createServer((inbound) => {
      const outbound = net.connect(target.port, target.host);
      for (const socket of [inbound, outbound]) {
        this.#sockets.add(socket);
        socket.on('error', () => {});
        socket.on('close', () => {
          this.#sockets.delete(socket);
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

  async close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}
