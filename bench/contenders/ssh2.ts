/** The pure-JS `ssh2` npm client doing -R against the local sshd (ssh2-client-main.ts). */
import { fileURLToPath } from 'node:url';
import { freePort, waitForBody } from '../lib/net.ts';
import { smallBody } from '../lib/origin.ts';
import { start } from '../lib/processes.ts';
import { stopEach, type Contender, type Running } from './contender.ts';
import { startSshd } from './sshd.ts';

const main = fileURLToPath(new URL('./ssh2-client-main.ts', import.meta.url));

export const ssh2: Contender = {
  name: 'ssh2-js',
  description:
    'pure-JS ssh2 npm client, forwardIn (-R) to the local sshd, with a pty session (TCP_NODELAY)',
  tools: ['sshd', 'ssh-keygen'],
  role: 'peer',
  async start(context): Promise<Running> {
    const stops: (() => Promise<void>)[] = [];
    try {
      const sshd = await startSshd(context, 'ssh2-js');
      stops.push(() => sshd.process.stop());
      const port = await freePort();
      const client = start('ssh2-js client', process.execPath, [
        '--import',
        'tsx',
        main,
        String(sshd.port),
        sshd.user,
        sshd.userKey,
        String(port),
        String(context.origin.port),
      ]);
      stops.push(() => client.stop());
      await client.waitForOutput(/^forwarding$/m);
      const url = `http://127.0.0.1:${port}`;
      await waitForBody(`${url}/small`, {}, smallBody.trim(), 'ssh2-js');
      return {
        url,
        headers: {},
        h2: { unavailable: 'not measured (HTTP/2 is measured for revtun and direct)' },
        pids: [sshd.process.pid, client.pid],
        stop: () => stopEach(stops),
      };
    } catch (error) {
      await stopEach(stops);
      throw error;
    }
  },
};
