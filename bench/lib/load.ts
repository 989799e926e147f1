/** The load generators: wrk (HTTP/1.1), h2load (HTTP/2) and curl (one large transfer). */
import os from 'node:os';
import { run } from './processes.ts';

export interface WrkResult {
  readonly requestsPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** Non-2xx/3xx responses plus socket errors: a figure with errors is flagged in the table. */
  readonly errors: number;
  readonly requests: number;
}

const toMs: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000 };

function duration(text: string | undefined): number {
  const match = /^([\d.]+)(us|ms|s|m)$/.exec(text ?? '');
  if (match?.[1] === undefined || match[2] === undefined) return Number.NaN;
  return Number(match[1]) * (toMs[match[2]] ?? Number.NaN);
}

function headerArgs(headers: Readonly<Record<string, string>>, flag: string): string[] {
  return Object.entries(headers).flatMap(([name, value]) => [flag, `${name}: ${value}`]);
}

export function parseWrk(output: string): WrkResult {
  const rps = /^Requests\/sec:\s+([\d.]+)/m.exec(output)?.[1];
  const p50 = /^\s+50%\s+(\S+)/m.exec(output)?.[1];
  const p99 = /^\s+99%\s+(\S+)/m.exec(output)?.[1];
  const requests = /^\s+(\d+) requests in/m.exec(output)?.[1];
  if (rps === undefined || p50 === undefined || p99 === undefined) {
    throw new Error(`wrk: could not read its output:\n${output}`);
  }
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(output)?.[1] ?? 0);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(
    output,
  );
  const socketErrors = socket === null ? 0 : socket.slice(1).reduce((sum, n) => sum + Number(n), 0);
  return {
    requestsPerSecond: Number(rps),
    p50Ms: duration(p50),
    p99Ms: duration(p99),
    errors: non2xx + socketErrors,
    requests: Number(requests ?? 0),
  };
}

export async function wrk(options: {
  readonly wrk: string;
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly connections: number;
  readonly seconds: number;
  readonly threads?: number;
}): Promise<WrkResult> {
  const threads = options.threads ?? Math.min(options.connections, os.availableParallelism());
  const args = [
    '-t',
    String(threads),
    '-c',
    String(options.connections),
    '-d',
    `${options.seconds}s`,
    '--timeout',
    '10s',
    '--latency',
    ...headerArgs(options.headers, '-H'),
    options.url,
  ];
  const { stdout, stderr, code } = await run(options.wrk, args, {
    timeoutMs: (options.seconds + 30) * 1000,
  });
  if (code !== 0) throw new Error(`wrk exited ${code}: ${stderr}${stdout}`);
  return parseWrk(stdout);
}

export type H2Result =
  | { readonly requestsPerSecond: number; readonly succeeded: number; readonly failed: number }
  | { readonly unavailable: string };

export async function h2load(options: {
  readonly h2load: string;
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly clients: number;
  readonly streams: number;
  readonly seconds: number;
}): Promise<H2Result> {
  const args = [
    '-c',
    String(options.clients),
    '-m',
    String(options.streams),
    '-D',
    String(options.seconds),
    '-t',
    '1',
    ...headerArgs(options.headers, '-H'),
    options.url,
  ];
  const { stdout, stderr } = await run(options.h2load, args, {
    timeoutMs: (options.seconds + 30) * 1000,
  });
  const output = stdout + stderr;
  const counts =
    /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed/.exec(output);
  const rps = /finished in [\d.]+\w+, ([\d.]+) req\/s/.exec(output)?.[1];
  const succeeded = Number(counts?.[4] ?? 0);
  if (counts === null || rps === undefined || succeeded === 0) {
    const seen = counts === null ? output.trim().split('\n').slice(-3).join(' / ') : counts[0];
    return { unavailable: `h2load (h2c, prior knowledge): no request succeeded; ${seen}` };
  }
  return { requestsPerSecond: Number(rps), succeeded, failed: Number(counts[5] ?? 0) };
}

export interface TransferResult {
  readonly mibPerSecond: number;
  readonly bytes: number;
  readonly status: number;
}

/** One download of `url`, or one upload (PUT) of `uploadFile` to it, with curl. */
export async function transfer(options: {
  readonly curl: string;
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly uploadFile?: string;
  readonly expectBytes: number;
}): Promise<TransferResult> {
  const up = options.uploadFile !== undefined;
  const args = [
    '-s',
    '-S',
    '-o',
    up ? '-' : '/dev/null',
    '--max-time',
    '600',
    // No `Expect: 100-continue` round trip before the body.
    '-H',
    'Expect:',
    ...headerArgs(options.headers, '-H'),
    ...(up ? ['-T', options.uploadFile ?? ''] : []),
    '-w',
    up
      ? '\n%{http_code} %{size_upload} %{speed_upload}'
      : '%{http_code} %{size_download} %{speed_download}',
    options.url,
  ];
  const { stdout, stderr, code } = await run(options.curl, args, { timeoutMs: 620_000 });
  const lines = stdout.trim().split('\n');
  const [status, bytes, speed] = (lines.at(-1) ?? '').split(' ').map(Number);
  // An upload's answer is the sink's count of what arrived (upload-sink-main.ts).
  const received = up ? Number(/^received (\d+)$/m.exec(stdout)?.[1]) : bytes;
  if (
    code !== 0 ||
    status !== 200 ||
    bytes !== options.expectBytes ||
    received !== options.expectBytes ||
    speed === undefined
  ) {
    throw new Error(
      `curl ${up ? 'upload' : 'download'} ${options.url}: exit ${code}, got "${stdout.trim()}" (expected 200 and ${options.expectBytes} bytes) ${stderr.trim()}`,
    );
  }
  return { mibPerSecond: speed / 2 ** 20, bytes, status };
}
