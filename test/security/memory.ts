/**
 * Memory figures for the hardening tests: heapUsed and RSS after a full garbage collection, so that
 * what an attack leaves behind is measured rather than what the collector has not reached yet.
 * `npm test` runs node with --expose-gc; run alone without it, the same `gc` is reached through V8's
 * flag API (node's documented `v8.setFlagsFromString('--expose-gc')` + `vm.runInNewContext('gc')`).
 */
import { setImmediate as turn } from 'node:timers/promises';
import v8 from 'node:v8';
import vm from 'node:vm';

const gc: () => void = (() => {
  const exposed = globalThis.gc;
  if (typeof exposed === 'function') {
    return () => {
      void exposed();
    };
  }
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
})();

export interface MemoryFigures {
  /** V8 heap in use, bytes. */
  readonly heapUsed: number;
  /** Memory of ArrayBuffers and Buffers, outside the V8 heap (socket data lives here), bytes. */
  readonly arrayBuffers: number;
  /** Resident set size of the process, bytes. */
  readonly rss: number;
}

/**
 * Lets pending callbacks run (closed sockets release their buffers on later turns of the loop),
 * then collects until heapUsed stops falling, and reads the figures.
 */
export async function settledMemory(): Promise<MemoryFigures> {
  let previous = Number.POSITIVE_INFINITY;
  for (let round = 0; round < 10; round += 1) {
    for (let i = 0; i < 5; i += 1) await turn();
    gc();
    const { heapUsed } = process.memoryUsage();
    if (heapUsed >= previous - 64 * 1024) break;
    previous = heapUsed;
  }
  const { heapUsed, arrayBuffers, rss } = process.memoryUsage();
  return { heapUsed, arrayBuffers, rss };
}

/**
 * `settledMemory`, repeated every 100 ms until heapUsed is at most `heapUsedAtMost` or `withinMs`
 * has passed: memory an attack leaves to timers (closed sessions, aborted calls to the local
 * service) must come back, but may take a moment to. Also returns how long it took.
 */
export async function memorySettledTo(
  heapUsedAtMost: number,
  withinMs: number,
): Promise<{ figures: MemoryFigures; afterMs: number }> {
  const started = Date.now();
  for (;;) {
    const figures = await settledMemory();
    const afterMs = Date.now() - started;
    if (figures.heapUsed <= heapUsedAtMost || afterMs >= withinMs) return { figures, afterMs };
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

export const mib = (bytes: number): string => `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;

/** "heapUsed 12.0 MiB → 12.4 MiB (+0.4), arrayBuffers …, rss 80.0 MiB → 85.1 MiB (+5.1)". */
export function describeGrowth(before: MemoryFigures, after: MemoryFigures): string {
  const delta = (a: number, b: number) =>
    `${b >= a ? '+' : ''}${((b - a) / (1024 * 1024)).toFixed(1)}`;
  return (['heapUsed', 'arrayBuffers', 'rss'] as const)
    .map(
      (key) =>
        `${key} ${mib(before[key])} → ${mib(after[key])} (${delta(before[key], after[key])})`,
    )
    .join(', ');
}

/** Records every uncaught exception and unhandled rejection while installed (a crash, survived). */
export class CrashWatch {
  readonly errors: unknown[] = [];
  readonly #onError = (error: unknown) => this.errors.push(error);

  constructor() {
    process.on('uncaughtException', this.#onError);
    process.on('unhandledRejection', this.#onError);
  }

  stop(): void {
    process.removeListener('uncaughtException', this.#onError);
    process.removeListener('unhandledRejection', this.#onError);
  }
}
