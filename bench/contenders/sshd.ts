/**
 * A throwaway sshd for the ssh -R contenders: its own config, host key and user key in the run's
 * temp dir, on a free high port of 127.0.0.1, key authentication only, for the user running the
 * benchmark. Each ssh contender starts its own.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { freePort, waitForPort } from '../lib/net.ts';
import { run, start, type Started } from '../lib/processes.ts';
import type { Context } from './contender.ts';

export interface Sshd {
  readonly port: number;
  readonly user: string;
  /** The private key of the user's throwaway key pair. */
  readonly userKey: string;
  readonly process: Started;
}

async function keygen(tools: Context['tools'], file: string): Promise<void> {
  const result = await run(tools.get('ssh-keygen') ?? 'ssh-keygen', [
    '-q',
    '-t',
    'ed25519',
    '-N',
    '',
    '-f',
    file,
  ]);
  if (result.code !== 0) throw new Error(`ssh-keygen ${file}: ${result.stderr}`);
}

export async function startSshd(
  { workDir, tools }: Pick<Context, 'workDir' | 'tools'>,
  name: string,
): Promise<Sshd> {
  const dir = path.join(workDir, name);
  await mkdir(dir, { recursive: true });
  const hostKey = path.join(dir, 'host_ed25519');
  const userKey = path.join(dir, 'user_ed25519');
  await keygen(tools, hostKey);
  await keygen(tools, userKey);
  const { readFile } = await import('node:fs/promises');
  await writeFile(path.join(dir, 'authorized_keys'), await readFile(`${userKey}.pub`));
  // sshd's privilege-separation directory; Debian creates it only when the service starts.
  await mkdir('/run/sshd', { recursive: true, mode: 0o755 }).catch(() => {});
  const port = await freePort();
  const user = os.userInfo().username;
  const config = `Port ${port}
ListenAddress 127.0.0.1
HostKey ${hostKey}
PidFile none
AuthorizedKeysFile ${dir}/authorized_keys
AllowUsers ${user}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
GatewayPorts no
PermitTTY yes
LogLevel ERROR
`;
  const configFile = path.join(dir, 'sshd_config');
  await writeFile(configFile, config);
  // sshd re-executes itself and insists on an absolute path.
  const sshdPath = tools.get('sshd') ?? '/usr/sbin/sshd';
  const proc = start(`${name} sshd`, sshdPath, ['-D', '-e', '-f', configFile]);
  try {
    await waitForPort(port, `${name} sshd`);
  } catch (error) {
    await proc.stop();
    throw new Error(`${(error as Error).message}\n${proc.output()}`, { cause: error });
  }
  return { port, user, userKey, process: proc };
}

/**
 * The options every OpenSSH client here uses: no config, no known_hosts, fail if -R fails; `port`
 * is the sshd's unless given (the system test reaches it through a tunnel).
 */
export function sshClientOptions(sshd: Sshd, port = sshd.port): string[] {
  return [
    '-F',
    '/dev/null',
    '-i',
    sshd.userKey,
    '-p',
    String(port),
    '-o',
    'StrictHostKeyChecking=no',
    '-o',
    'UserKnownHostsFile=/dev/null',
    '-o',
    'BatchMode=yes',
    '-o',
    'ExitOnForwardFailure=yes',
    '-o',
    'LogLevel=ERROR',
  ];
}
