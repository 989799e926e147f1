/**
 * Lifecycle logs: one JSON object per tunnel event, one per line, with Envoy's event names and
 * field names (protocol reference §10), written to the file an `access_log`-like `lifecycle_log`
 * names. Writes are asynchronous and the buffer is bounded: when the file cannot keep up, records
 * are dropped and counted rather than held without limit.
 */
import { pino } from 'pino';
import type { Counter } from './stats.ts';

export type LifecycleRecord = Readonly<Record<string, string | number | undefined>> & {
  readonly event: string;
};

export interface LifecycleSink {
  write(record: LifecycleRecord): void;
  close(): Promise<void>;
}

/** Most bytes waiting for the file before records are dropped. */
const maxBufferedBytes = 4 * 1024 * 1024;

export function openLifecycleLog(path: string, dropped: Counter): LifecycleSink {
  const destination = pino.destination({
    dest: path,
    sync: false,
    mkdir: true,
    maxLength: maxBufferedBytes,
  });
  destination.on('drop', () => dropped.inc());
  destination.on('error', () => dropped.inc());
  return {
    write(record) {
      destination.write(`${JSON.stringify({ time: new Date().toISOString(), ...record })}\n`);
    },
    close() {
      return new Promise((resolve) => {
        destination.once('close', () => resolve());
        destination.once('error', () => resolve());
        destination.end();
      });
    },
  };
}
