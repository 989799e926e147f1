/**
 * Every process the benchmark starts, so that each can be stopped by its PID at the end, also on
 * failure or Ctrl-C. Children are spawned as leaders of their own process group (`detached`), so
 * that stopping one also stops what it started (`script` → `ssh`, nginx's master → its workers)
 * with a signal to that group's id, which is the PID we got back; nothing is killed by name.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';

/** Lines of a child's output kept for error messages. */
const keptLines = 40;
/** A child gets this long after SIGTERM before SIGKILL. */
const stopGraceMs = 3_000;

export interface Started {
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  /** The last lines of stdout and stderr, for the message when it fails. */
  output(): string;
  /** Resolves with the first match of `pattern` on stdout or stderr; rejects on exit or deadline. */
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  stop(): Promise<void>;
}

const running = new Set<Started>();

export interface StartOptions extends SpawnOptions {
  /**
   * Open files the child needs: if the current soft limit is lower, it is raised (with prlimit)
   * to this or to the hard limit, whichever is lower (raising the hard limit needs
   * CAP_SYS_RESOURCE, which a container may not have).
   */
  readonly nofile?: number;
}

let limits: { soft: number; hard: number } | undefined;

/** This process's RLIMIT_NOFILE (what children inherit). */
export async function nofileLimits(): Promise<{ soft: number; hard: number }> {
  if (limits !== undefined) return limits;
  const { stdout } = await run(
    'prlimit',
    ['--nofile', '--raw', '--noheadings', `--pid=${process.pid}`],
    { timeoutMs: 5_000 },
  );
  const [, soft, hard] = stdout.trim().split(/\s+/);
  const parse = (text: string | undefined) => (text === 'unlimited' ? Infinity : Number(text));
  limits = { soft: parse(soft), hard: parse(hard) };
  return limits;
}

/** `nofile` as the limit a child can be given, and whether it falls short. */
export async function nofileFor(wanted: number): Promise<{ nofile?: number; short?: string }> {
  const { soft, hard } = await nofileLimits();
  if (soft >= wanted) return {};
  const nofile = Math.min(wanted, hard);
  return {
    nofile,
    ...(nofile < wanted ? { short: `open-files hard limit ${hard} < ${wanted} wanted` } : {}),
  };
}

/** Spawns `command` in its own process group and tracks it until it is stopped. */
export function start(name: string, command: string, args: string[], options: StartOptions = {}) {
  const { nofile, ...spawnOptions } = options;
  const [file, argv] =
    nofile === undefined
      ? [command, args]
      : ['prlimit', [`--nofile=${nofile}:${nofile}`, '--', command, ...args]];
  const child = spawn(file, argv, {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
    ...spawnOptions,
  });
  if (child.pid === undefined) throw new Error(`${name}: could not start ${command}`);
  const pid = child.pid;
  const lines: string[] = [];
  let text = '';
  const watchers = new Set<() => void>();
  const onData = (chunk: Buffer) => {
    const part = chunk.toString();
    text = (text + part).slice(-64 * 1024);
    lines.push(...part.split('\n').filter((line) => line.length > 0));
    lines.splice(0, Math.max(0, lines.length - keptLines));
    for (const watcher of watchers) watcher();
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  let exited = child.exitCode !== null;
  const exit = once(child, 'exit').then(() => {
    exited = true;
    for (const watcher of watchers) watcher();
  });
  child.on('error', () => {});

  const started: Started = {
    name,
    child,
    pid,
    output: () => lines.join('\n'),
    waitForOutput(pattern, timeoutMs = 15_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          watchers.delete(check);
          reject(
            new Error(
              `${name}: no ${pattern} within ${timeoutMs} ms; output:\n${started.output()}`,
            ),
          );
        }, timeoutMs);
        const check = () => {
          const match = pattern.exec(text);
          if (match !== null || exited) {
            clearTimeout(timer);
            watchers.delete(check);
            if (match !== null) resolve(match);
            else
              reject(
                new Error(
                  `${name} exited (${child.exitCode ?? child.signalCode}); output:\n${started.output()}`,
                ),
              );
          }
        };
        watchers.add(check);
        check();
      });
    },
    async stop() {
      running.delete(started);
      if (exited) return;
      signalGroup(pid, 'SIGTERM');
      const deadline = sleep(stopGraceMs).then(() => 'late' as const);
      if ((await Promise.race([exit.then(() => 'exited' as const), deadline])) === 'late') {
        signalGroup(pid, 'SIGKILL');
        await exit;
      }
      // The group may hold more than the leader (workers, `ssh` under `script`).
      signalGroup(pid, 'SIGKILL');
    },
  };
  running.add(started);
  return started;
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // Already gone.
  }
}

/** Stops every process still running, each by its PID. */
export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((started) => started.stop()));
}

/** Runs `command` to completion and returns its stdout; rejects with its output on failure. */
export async function run(
  command: string,
  args: string[],
  options: SpawnOptions & { timeoutMs?: number } = {},
): Promise<{ stdout: string; stderr: string; code: number | null }> {
  const { timeoutMs = 120_000, ...spawnOptions } = options;
  const started = start(command, command, args, spawnOptions);
  let stdout = '';
  let stderr = '';
  started.child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  started.child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const timer = setTimeout(() => void started.stop(), timeoutMs);
  const [code] = (await once(started.child, 'exit')) as [number | null];
  clearTimeout(timer);
  running.delete(started);
  return { stdout, stderr, code };
}

/** Resident set size of `pid` in bytes, from /proc (VmRSS). */
export async function rssBytes(pid: number): Promise<number> {
  const { readFile } = await import('node:fs/promises');
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  if (match?.[1] === undefined) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(match[1]) * 1024;
}

/** Clock ticks per second of /proc's utime and stime (USER_HZ, 100 on Linux). */
const ticksPerSecond = 100;

/**
 * CPU time (user + system, seconds) used so far by `roots` and every process descended from them
 * (nginx's workers, sshd's per-connection children, ssh under `script`), from /proc.
 */
export async function cpuSeconds(roots: readonly number[]): Promise<number> {
  const { readdir, readFile } = await import('node:fs/promises');
  const table = new Map<number, { ppid: number; ticks: number }>();
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      // Fields after the command name, which is in parentheses and may hold spaces.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      table.set(Number(entry), {
        ppid: Number(fields[1]),
        ticks: Number(fields[11]) + Number(fields[12]),
      });
    } catch {
      // Gone since readdir.
    }
  }
  const wanted = new Set(roots);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, { ppid }] of table) {
      if (!wanted.has(pid) && wanted.has(ppid)) {
        wanted.add(pid);
        grew = true;
      }
    }
  }
  let ticks = 0;
  for (const pid of wanted) ticks += table.get(pid)?.ticks ?? 0;
  return ticks / ticksPerSecond;
}
