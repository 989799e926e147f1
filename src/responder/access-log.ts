/**
 * The egress listeners' access log (docs/logging.md): one record per request through a tunnel,
 * written when the caller's response ends or the caller goes away, as a JSON line or as text
 * (shared/access-format.ts).
 *
 * A record is a plain object the listener fills in as the request goes through its checks
 * (egress-listener.ts) and the forwarding (egress-forward.ts); none exists when no access log is
 * configured. Lines go through `openLineLog` (shared/lifecycle-log.ts): a slow disk drops and
 * counts lines, it never blocks the event loop or holds them without bound.
 */
import {
  compileTextFormat,
  defaultTextFormat,
  jsonRecord,
  type AccessLogEntryConfig,
  type AccessRecord,
} from '../shared/access-format.ts';
import { openLineLog, type LineLog } from '../shared/lifecycle-log.ts';
import type { Counter } from '../shared/stats.ts';

/** The access logs of one egress listener. */
export class AccessLog {
  readonly #sinks: ReadonlyArray<{
    readonly log: LineLog;
    readonly line: (record: AccessRecord) => string;
  }>;

  constructor(entries: readonly AccessLogEntryConfig[], dropped: Counter) {
    this.#sinks = entries.map((entry) => ({
      log: openLineLog(entry.path, dropped),
      line:
        entry.format === 'json'
          ? jsonRecord
          : compileTextFormat(entry.text_format ?? defaultTextFormat),
    }));
  }

  /** Writes the record once, with its duration up to now. */
  write(record: AccessRecord): void {
    if (record.durationMs !== undefined) return;
    record.durationMs = performance.now() - record.startMono;
    for (const sink of this.#sinks) sink.log.writeLine(sink.line(record));
  }

  async close(): Promise<void> {
    await Promise.all(this.#sinks.map((sink) => sink.log.close()));
  }
}
