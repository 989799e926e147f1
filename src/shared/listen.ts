import type { Server } from 'node:net';
import { formatHostPort, type HostPort } from './address.ts';
import { RevtunError } from './errors.ts';

/**
 * Starts a server listening and resolves with the address actually bound (port 0 gives the real
 * port). `what` names the listener in the error, e.g. "the responder's egress listener".
 */
export function listen(server: Server, address: HostPort, what: string): Promise<HostPort> {
  return new Promise((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException) => {
      server.removeListener('listening', onListening);
      const where = formatHostPort(address);
      const why =
        error.code === 'EADDRINUSE'
          ? 'the address is already in use by another process'
          : error.code === 'EACCES'
            ? 'permission denied (ports below 1024 need privileges)'
            : error.code === 'EADDRNOTAVAIL'
              ? 'the address is not available on this machine'
              : error.message;
      reject(
        new RevtunError('ERR_LISTEN', `cannot listen on ${where} for ${what}: ${why}`, {
          cause: error,
        }),
      );
    };
    const onListening = () => {
      server.removeListener('error', onError);
      const bound = server.address();
      if (bound === null || typeof bound === 'string') {
        reject(new RevtunError('ERR_LISTEN', `${what} is not bound to a TCP address`));
        return;
      }
      resolve({ host: address.host, port: bound.port });
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen({ host: address.host, port: address.port, exclusive: true });
  });
}

/** Closes a server and resolves once it stopped listening (open connections are the caller's). */
export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) {
      resolve();
      return;
    }
    server.close(() => resolve());
  });
}
