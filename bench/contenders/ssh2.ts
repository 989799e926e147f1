/** The pure-JS `ssh2` npm client doing -R against the local sshd (ssh2-client-main.ts). */
import { fileURLToPath } from 'node:url';
import { freePort } from '../lib/net.ts';
import { start } from '../lib/processes.ts';
import { runningPeer, stopEach, type Contender, type Running } from './contender.ts';
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
      return await runningPeer(
        'ssh2-js',
        `http://127.0.0.1:${port}`,
        [sshd.process.pid, client.pid],
        () => stopEach(stops),
        () => `ssh2-js: ${client.output()}\nsshd: ${sshd.process.output()}`,
      );
    } catch (error) {
      await stopEach(stops);
      throw error;
    }
  },
};
