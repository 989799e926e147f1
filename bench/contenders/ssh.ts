/**
 * OpenSSH remote forwarding (`ssh -R`) against a local sshd: the forwarded port is opened by sshd
 * and each connection to it is a channel back to the ssh client, which connects to the origin.
 *
 * Two ways: `ssh -N -R …`, as people usually run it, and `ssh -tt -R … sleep 3600` under
 * `script`, which gives ssh a terminal: OpenSSH sets TCP_NODELAY on its connection only for an
 * interactive session (a tty), and without it Nagle's algorithm delays small writes (the
 * difference is the point of measuring both).
 */
import { freePort } from '../lib/net.ts';
import { start } from '../lib/processes.ts';
import { runningPeer, stopEach, type Contender, type Running } from './contender.ts';
import { sshClientOptions, startSshd } from './sshd.ts';

/** Quotes one word for `sh -c`. */
const shellWord = (word: string) => `'${word.replaceAll("'", `'\\''`)}'`;

function sshContender(name: string, withTty: boolean): Contender {
  return {
    name,
    description: withTty
      ? 'OpenSSH ssh -tt -R … sleep 3600 under script (a tty: TCP_NODELAY)'
      : 'OpenSSH ssh -N -R …, as usually run',
    tools: withTty ? ['sshd', 'ssh', 'ssh-keygen', 'script'] : ['sshd', 'ssh', 'ssh-keygen'],
    role: 'peer',
    async start(context): Promise<Running> {
      const stops: (() => Promise<void>)[] = [];
      try {
        const sshd = await startSshd(context, name);
        stops.push(() => sshd.process.stop());
        const port = await freePort();
        const forward = `127.0.0.1:${port}:127.0.0.1:${context.origin.port}`;
        const ssh = context.tools.get('ssh') ?? 'ssh';
        const target = `${sshd.user}@127.0.0.1`;
        const client = withTty
          ? start(`${name} client`, context.tools.get('script') ?? 'script', [
              '-qfec',
              [ssh, '-tt', ...sshClientOptions(sshd), '-R', forward, target, 'sleep', '3600']
                .map(shellWord)
                .join(' '),
              '/dev/null',
            ])
          : start(`${name} client`, ssh, ['-N', ...sshClientOptions(sshd), '-R', forward, target]);
        stops.push(() => client.stop());
        return await runningPeer(
          name,
          `http://127.0.0.1:${port}`,
          [sshd.process.pid, client.pid],
          () => stopEach(stops),
          () => `ssh: ${client.output()}\nsshd: ${sshd.process.output()}`,
        );
      } catch (error) {
        await stopEach(stops);
        throw error;
      }
    },
  };
}

export const sshN = sshContender('ssh-N', false);
export const sshTty = sshContender('ssh-tt', true);
