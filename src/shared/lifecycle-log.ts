/**
 * Line logs written to a file the config names: lifecycle logs, one JSON object per tunnel event
 * with Envoy's event and field names (protocol reference §10), and the admin server's access log.
 * Writes are asynchronous and the buffer is bounded: when the file cannot keep up, lines are
 * dropped and counted rather than held without limit.
 */
import { pino } from 'pino';
import { deadline } from './lifecycle.ts';
import type { Counter } from './stats.ts';

export type LifecycleRecord = Readonly<Record<string, string | number | undefined>> & {
  readonly event: string;
};

export interface LineLog {
  /** Appends one line (the newline is added). */
  writeLine(line: string): void;
  close(): Promise<void>;
}

export interface LifecycleSink {
  write(record: LifecycleRecord): void;
  close(): Promise<void>;
}

/** Most bytes waiting for the file before lines are dropped. */
const maxBufferedBytes = 4 * 1024 * 1024;

/** How long closing may wait for buffered lines to reach the file. */
const closeDeadlineMs = 1_000;

export function openLineLog(path: string, dropped: Counter): LineLog {
  // The process's own stdout and stderr are written through Node's streams (synchronous for files
  // and pipes on Linux), not reopened by path: a second descriptor on the same pipe is not ours to
  // close, and closing it was seen to hang under a parent that reads the pipe (node --test).
  const stream =
    path === '/dev/stdout' ? process.stdout : path === '/dev/stderr' ? process.stderr : undefined;
  if (stream !== undefined) {
    return {
      writeLine(line) {
        if (stream.writableLength > maxBufferedBytes) dropped.inc();
        else stream.write(`${line}\n`);
      },
      close: () => Promise.resolve(),
    };
  }
  const destination = pino.destination({
    dest: path,
    sync: false,
    mkdir: true,
    maxLength: maxBufferedBytes,
  });
  destination.on('drop', () => dropped.inc());
  destination.on('error', () => dropped.inc());
  // A line that comes once closing has begun (a connection destroyed at shutdown whose 'close'
  // comes late) is counted as dropped: writing to an ended SonicBoom throws.
  let closing = false;
  return {
    writeLine(line) {
      if (closing) dropped.inc();
      else destination.write(`${line}\n`);
    },
    close() {
      closing = true;
      const closed = new Promise<void>((resolve) => {
        destination.once('close', () => resolve());
        destination.once('error', () => resolve());
        destination.end();
      });
      return deadline(closeDeadlineMs, closed);
    },
  };
}

export function openLifecycleLog(path: string, dropped: Counter): LifecycleSink {
  const log = openLineLog(path, dropped);
  return {
    write: (record) => log.writeLine(JSON.stringify({ time: new Date().toISOString(), ...record })),
    close: () => log.close(),
  };
}
