/**
 * A TCP relay between an initiator and a responder that can stop passing the initiator's bytes:
 * the path looks alive to the initiator while its echoes never reach the responder.
 */
import net, { type Socket } from 'node:net';
import type { HostPort } from '../../src/shared/address.ts';

export class Relay {
  readonly #server: net.Server;
  readonly #sockets = new Set<Socket>();
  /** While true, bytes from the initiator are dropped. */
  dropFromInitiator = false;
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
      outbound.pipe(inbound);
    });
  }

  async listen(): Promise<this> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    this.address = { host: '127.0.0.1', port: (this.#server.address() as net.AddressInfo).port };
    return this;
  }

  async close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}
