/** Reads a lifecycle log (one JSON object per line, protocol reference §10) back for assertions. */
import { readFile } from 'node:fs/promises';

export type LoggedRecord = Readonly<Record<string, string | number>> & { readonly event: string };

/** Every record in the file, in order; a line that is not a JSON object fails. */
export async function readLifecycleLog(path: string): Promise<LoggedRecord[]> {
  const text = await readFile(path, 'utf8');
  const lines = text.split('\n');
  if (lines.at(-1) !== '') throw new Error(`${path} does not end with a newline`);
  return lines.slice(0, -1).map((line, index) => {
    const record: unknown = JSON.parse(line);
    if (typeof record !== 'object' || record === null || !('event' in record)) {
      throw new Error(`${path}:${index + 1} is not a lifecycle record: ${line}`);
    }
    return record as LoggedRecord;
  });
}
