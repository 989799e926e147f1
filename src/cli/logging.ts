/**
 * Where the CLI's logs go (docs/logging.md): pino JSON lines on stderr, or on a terminal a pretty
 * form (pino-pretty). Only cli/ decides this; the libraries take the logger they are given.
 */
import type { ParseArgsConfig } from 'node:util';
import { pino, type Level } from 'pino';
import pretty from 'pino-pretty';
import { RevtunError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import type { FlagValues } from './flags.ts';

/** The logging flags every command takes. */
export const loggingOptions: NonNullable<ParseArgsConfig['options']> = {
  'log-level': { type: 'string' },
  'log-format': { type: 'string' },
};

/** Flags that may go with `--config FILE` (they say how to log, not what to run). */
export const loggingFlagNames: ReadonlySet<string> = new Set(Object.keys(loggingOptions));

const levels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const formats = ['auto', 'json', 'pretty'];

/**
 * The logger of a command: `--log-level` (default `fallback`) and `--log-format json|pretty`
 * (default auto: pretty when stderr is a terminal, JSON lines otherwise, so a pipe or a log
 * collector always gets one JSON object per line).
 */
export function makeLogger(flags: FlagValues, fallback: Level): Logger {
  const level = typeof flags['log-level'] === 'string' ? flags['log-level'] : fallback;
  if (!levels.includes(level)) {
    throw new RevtunError(
      'ERR_USAGE',
      `--log-level must be one of ${levels.join(', ')}, not "${level}"`,
    );
  }
  const format = typeof flags['log-format'] === 'string' ? flags['log-format'] : 'auto';
  if (!formats.includes(format)) {
    throw new RevtunError(
      'ERR_USAGE',
      `--log-format must be one of ${formats.join(', ')}, not "${format}"`,
    );
  }
  const prettyForm = format === 'pretty' || (format === 'auto' && process.stderr.isTTY === true);
  return pino({ level }, prettyForm ? prettyStream() : pino.destination({ dest: 2, sync: true }));
}

/**
 * pino-pretty as a stream in this thread, not a worker transport: a line is written before the
 * call returns (no log lost at exit) and no extra thread is started.
 */
function prettyStream(): pretty.PrettyStream {
  return pretty({
    destination: 2,
    sync: true,
    colorize: process.stderr.isTTY === true,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'pid,hostname',
  });
}
