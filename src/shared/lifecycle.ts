/**
 * The lifecycle every long-lived revtun object follows (docs/architecture.md): `start*()` resolves
 * once ready with the addresses bound; `close({ graceMs })` drains, then forces, is idempotent, and
 * is also triggered by the AbortSignal given at start.
 */
import type { Logger } from './logger.ts';

export interface StartOptions {
  /** Aborting it closes the object (with the default grace). */
  readonly signal?: AbortSignal;
  /** Where the object logs; silent when absent. */
  readonly logger?: Logger;
}

export interface CloseOptions {
  /** How long in-flight work may take to finish before it is cut off. Default 5 s. */
  readonly graceMs?: number;
}

export const defaultGraceMs = 5_000;

/** Runs `close` once however often it is called; later calls get the same promise. */
export function once(
  close: (options: CloseOptions) => Promise<void>,
): (options?: CloseOptions) => Promise<void> {
  let closing: Promise<void> | undefined;
  return (options = {}) => {
    closing ??= close(options);
    return closing;
  };
}

/** Calls `onAbort` when the signal aborts (at once if it already has); returns the unsubscriber. */
export function onAbort(signal: AbortSignal | undefined, onAbort: () => void): () => void {
  if (signal === undefined) return () => {};
  if (signal.aborted) {
    queueMicrotask(onAbort);
    return () => {};
  }
  signal.addEventListener('abort', onAbort, { once: true });
  return () => signal.removeEventListener('abort', onAbort);
}

/** Resolves after `ms`, or at once when `until` settles first; the timer never holds the process. */
export function deadline(ms: number, until: Promise<unknown>): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    timer.unref();
    until.then(
      () => {
        clearTimeout(timer);
        resolve();
      },
      () => {
        clearTimeout(timer);
        resolve();
      },
    );
  });
}

/** Starts `object`; if that fails, closes whatever it had started (no grace) and rethrows. */
export async function startOrClose<
  T extends { start(): Promise<void>; close(options: CloseOptions): Promise<void> },
>(object: T): Promise<T> {
  try {
    await object.start();
  } catch (error) {
    await object.close({ graceMs: 0 });
    throw error;
  }
  return object;
}
