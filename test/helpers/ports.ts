/** Free TCP ports on loopback, for a listener that must come back on the same port. */
import net, { type AddressInfo } from 'node:net';

/** Ports the sandbox uses, never handed out (README). */
const reserved = new Set([8085, 8888, 8889, 9000]);

/** A TCP port free right now on 127.0.0.1 (and not one of the sandbox's). */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt += 1) {
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', resolve);
    });
    const { port } = server.address() as AddressInfo;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    if (!reserved.has(port)) return port;
  }
  throw new Error('no free port on 127.0.0.1 in 100 tries that is not one of the sandbox ports');
}
