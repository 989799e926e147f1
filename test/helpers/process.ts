/**
 * Child processes for tests that run `revtun` (or any command) the way a user does: output collected,
 * every wait bounded, every stop by the child's PID.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));

/** How long a started command may take to print that it is up (tsx compiles on first run). */
export const startDeadlineMs = 20_000;
/** The CLI's promise: a stop signal ends the process within 5 s. */
export const stopDeadlineMs = 5_000;

/** The command line that runs `revtun …` from source, in the repository's root. */
export const revtun = (...args: readonly string[]): string[] => [
  process.execPath,
  '--import',
  'tsx',
  'src/cli/main.ts',
  ...args,
];

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface Result extends Exit {
  readonly stdout: string;
  readonly stderr: string;
}

/** A child process, started in the repository's root, whose output a test can wait on. */
export class TestProcess {
  readonly #child: ChildProcess;
  readonly pid: number;
  readonly argv: readonly string[];
  stdout = '';
  stderr = '';
  #exit: Exit | undefined;

  constructor(argv: readonly string[]) {
    const [command, ...args] = argv;
    if (command === undefined) throw new Error('TestProcess needs a command');
    this.argv = argv;
    this.#child = spawn(command, args, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    if (this.#child.pid === undefined) throw new Error(`could not spawn ${argv.join(' ')}`);
    this.pid = this.#child.pid;
    this.#child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (this.stdout += chunk));
    this.#child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (this.stderr += chunk));
    // 'close' comes after 'exit' and after stdout and stderr ended, so the output is complete.
    this.#child.on('close', (code, signal) => (this.#exit = { code, signal }));
  }

  get running(): boolean {
    return this.#exit === undefined;
  }

  describe(): string {
    return `${this.argv.join(' ')} (pid ${this.pid})\n--- stdout:\n${this.stdout}--- stderr:\n${this.stderr}`;
  }

  /**
   * Resolves once stdout contains `text`, or with the match once it matches `pattern`; rejects if
   * the process exits first or after `timeoutMs`.
   */
  waitForStdout(text: string, timeoutMs?: number): Promise<void>;
  waitForStdout(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  async waitForStdout(
    wanted: string | RegExp,
    timeoutMs = startDeadlineMs,
  ): Promise<RegExpMatchArray | void> {
    if (typeof wanted === 'string') {
      await this.#until(() => this.stdout.includes(wanted) || undefined, timeoutMs, `"${wanted}"`);
      return;
    }
    return this.#until(
      () => this.stdout.match(wanted) ?? undefined,
      timeoutMs,
      `stdout to match ${String(wanted)}`,
    );
  }

  /** Resolves once the process has exited and its output is complete; rejects after `timeoutMs`. */
  waitForExit(timeoutMs: number): Promise<Exit> {
    return this.#until(() => this.#exit, timeoutMs, 'the exit', true);
  }

  signal(signal: NodeJS.Signals): void {
    if (this.running) process.kill(this.pid, signal);
  }

  /** For `after`: kills the process by its PID if it still runs and waits for it to be gone. */
  async stop(): Promise<void> {
    if (!this.running) return;
    process.kill(this.pid, 'SIGKILL');
    await this.waitForExit(stopDeadlineMs);
  }

  #until<T>(
    check: () => T | undefined,
    timeoutMs: number,
    what: string,
    exitIsOk = false,
  ): Promise<T> {
    return new Promise((resolve, reject) => {
      const onChange = () => {
        const value = check();
        if (value !== undefined) {
          finish();
          resolve(value);
        } else if (!exitIsOk && this.#exit !== undefined) {
          finish();
          reject(new Error(`exited before ${what}: ${this.describe()}`));
        }
      };
      const timer = setTimeout(() => {
        finish();
        reject(
          new Error(`timed out after ${timeoutMs} ms waiting for ${what}: ${this.describe()}`),
        );
      }, timeoutMs);
      const finish = () => {
        clearTimeout(timer);
        this.#child.stdout?.removeListener('data', onChange);
        this.#child.removeListener('close', onChange);
      };
      // Listeners added after the collectors above, so they see the chunk already appended.
      this.#child.stdout?.on('data', onChange);
      this.#child.on('close', onChange);
      onChange();
    });
  }
}

/**
 * Runs a command that is expected to end by itself and returns its exit and output; kills it by its
 * PID and rejects, with what it printed, if it has not ended after `timeoutMs`.
 */
export async function runToEnd(argv: readonly string[], timeoutMs: number): Promise<Result> {
  const child = new TestProcess(argv);
  try {
    const exit = await child.waitForExit(timeoutMs);
    return { ...exit, stdout: child.stdout, stderr: child.stderr };
  } finally {
    await child.stop();
  }
}

/**
 * Sends `signal` to every process at once and asserts that each exits 0 within the CLI's 5 s and is
 * then gone: `process.kill(pid, 0)` finds no such process.
 */
export async function assertStopsCleanly(
  processes: readonly TestProcess[],
  signal: NodeJS.Signals,
): Promise<void> {
  const sent = Date.now();
  for (const child of processes) child.signal(signal);
  for (const child of processes) {
    const exit = await child.waitForExit(Math.max(0, stopDeadlineMs - (Date.now() - sent)));
    assert.deepEqual(exit, { code: 0, signal: null }, child.describe());
    assert.throws(() => process.kill(child.pid, 0), { code: 'ESRCH' });
  }
  assert.ok(Date.now() - sent < stopDeadlineMs);
}

/**
 * Polls `probe` every `intervalMs` until it returns true, at most `timeoutMs` and so a bounded
 * number of times; polling an endpoint waits on a condition, not on a guessed delay. A probe that
 * throws counts as "not yet"; the last error is the cause of the timeout.
 */
export async function pollUntil(
  what: string,
  probe: () => Promise<boolean>,
  { timeoutMs = 10_000, intervalMs = 50 } = {},
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const attempts = Math.ceil(timeoutMs / intervalMs) + 1;
  let last: unknown;
  for (let attempt = 0; attempt < attempts && Date.now() <= deadline; attempt += 1) {
    try {
      if (await probe()) return;
      last = undefined;
    } catch (error) {
      last = error;
    }
    await delay(intervalMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`, { cause: last });
}
