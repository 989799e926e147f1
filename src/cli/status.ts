/**
 * `revtun status --admin URL`: the tunnels of a running initiator or responder, from its admin
 * server's `GET /tunnels` (src/admin/tunnels.ts), as an aligned table and a one-line total, like
 * `cloudflared tunnel info`. Every failure (unreachable, refused token, not revtun's JSON) is one
 * line on stderr and exit 1.
 */
import { readFile } from 'node:fs/promises';
import type { TunnelRow, TunnelsResponse } from '../admin/tunnels.ts';
import { RevtunError } from '../shared/errors.ts';

/** How long the admin server may take to answer, connect included. */
export const statusTimeoutMs = 5_000;

export interface StatusOptions {
  /** The admin server: `http://host:port`, or `host:port`. */
  readonly admin: string | undefined;
  /** A file holding the admin token (admin.token_file of the role). */
  readonly tokenFile?: string | undefined;
  /** Print the admin server's JSON as it is instead of the table. */
  readonly json?: boolean;
  readonly timeoutMs?: number;
}

export interface StatusOutput {
  readonly out: (line: string) => void;
  readonly err: (line: string) => void;
}

/** Fetches the tunnels and prints them; returns the exit code (0, or 1 on any failure). */
export async function status(options: StatusOptions, output: StatusOutput): Promise<number> {
  if (options.admin === undefined) {
    throw new RevtunError(
      'ERR_USAGE',
      '--admin URL is required, e.g. --admin http://127.0.0.1:8889',
    );
  }
  const url = tunnelsUrl(options.admin);
  let headers: Record<string, string> = {};
  if (options.tokenFile !== undefined) {
    try {
      headers = { authorization: `Bearer ${(await readFile(options.tokenFile, 'utf8')).trim()}` };
    } catch (error) {
      output.err(`revtun status: cannot read ${options.tokenFile}: ${(error as Error).message}`);
      return 1;
    }
  }
  let body: string;
  try {
    const response = await fetch(url, {
      headers,
      signal: AbortSignal.timeout(options.timeoutMs ?? statusTimeoutMs),
    });
    body = await response.text();
    if (response.status === 401 || response.status === 403) {
      const hint =
        options.tokenFile === undefined ? 'pass --token-file FILE' : 'check --token-file';
      output.err(`revtun status: ${url} refused the request (${response.status}); ${hint}`);
      return 1;
    }
    if (response.status !== 200) {
      output.err(`revtun status: ${url} answered ${response.status}, not 200`);
      return 1;
    }
  } catch (error) {
    output.err(`revtun status: cannot reach ${url}: ${fetchProblem(error)}`);
    return 1;
  }
  const tunnels = parseTunnels(body);
  if (tunnels === undefined) {
    output.err(
      `revtun status: ${url} did not answer with revtun's tunnel list (JSON); is it a revtun admin server?`,
    );
    return 1;
  }
  if (options.json === true) {
    output.out(JSON.stringify(tunnels, null, 2));
    return 0;
  }
  for (const line of formatTunnels(tunnels)) output.out(line);
  return 0;
}

/** `URL/tunnels`, with `http://` added to a bare `host:port`. */
export function tunnelsUrl(admin: string): string {
  const base = /^[a-z][a-z0-9+.-]*:\/\//i.test(admin) ? admin : `http://${admin}`;
  let url: URL;
  try {
    url = new URL(base);
  } catch {
    throw new RevtunError(
      'ERR_USAGE',
      `--admin: "${admin}" is not a URL, e.g. http://127.0.0.1:8889`,
    );
  }
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/tunnels`;
  return url.toString();
}

/** The reason a fetch failed, without undici's "fetch failed" wrapper. */
function fetchProblem(error: unknown): string {
  if (error instanceof Error && error.name === 'TimeoutError') return 'no answer in time';
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (error as Error).message;
}

function parseTunnels(body: string): TunnelsResponse | undefined {
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const { tunnels } = value as { tunnels?: unknown };
  return Array.isArray(tunnels) ? (value as TunnelsResponse) : undefined;
}

const columns: ReadonlyArray<[string, (row: TunnelRow, now: number) => string]> = [
  ['NODE', (row) => row.node],
  ['CLUSTER', (row) => row.cluster],
  ['TENANT', (row) => row.tenant],
  ['STATE', (row) => row.state],
  ['REMOTE', (row) => row.remote_address],
  ['RESPONDER', (row) => row.responder],
  ['ESTABLISHED', (row, now) => age(row.established_at, now)],
  ['STREAMS', (row) => String(row.streams_in_flight)],
  ['BYTES ↑/↓', (row) => `${bytes(row.bytes_sent)}/${bytes(row.bytes_received)}`],
  ['RTT', (row) => (row.last_ping_rtt_ms === null ? '-' : `${round(row.last_ping_rtt_ms)}ms`)],
];

/** The table (a header, a row per tunnel) and the total line. */
export function formatTunnels(response: TunnelsResponse): string[] {
  const now = Date.parse(response.now);
  const cells = [
    columns.map(([title]) => title),
    ...response.tunnels.map((row) => columns.map(([, cell]) => cell(row, now))),
  ];
  const widths = columns.map((_, index) =>
    Math.max(...cells.map((line) => [...(line[index] ?? '')].length)),
  );
  const lines =
    response.tunnels.length === 0
      ? []
      : cells.map((line) =>
          line
            .map((cell, index) => cell + ' '.repeat((widths[index] ?? 0) - [...cell].length))
            .join('  ')
            .trimEnd(),
        );
  lines.push(total(response));
  return lines;
}

function total(response: TunnelsResponse): string {
  const { tunnels } = response;
  const count = (state: TunnelRow['state']) => tunnels.filter((row) => row.state === state).length;
  const nodes = new Set(tunnels.map((row) => `${row.tenant}/${row.cluster}/${row.node}`)).size;
  const sum = (pick: (row: TunnelRow) => number) =>
    tunnels.reduce((all, row) => all + pick(row), 0);
  const states = (['idle', 'in_use', 'connecting', 'draining'] as const)
    .filter((state) => count(state) > 0)
    .map((state) => `${count(state)} ${state.replace('_', ' ')}`);
  return (
    `${response.role}: ${tunnels.length} tunnel${tunnels.length === 1 ? '' : 's'}` +
    ` to ${nodes} node${nodes === 1 ? '' : 's'}${states.length === 0 ? '' : ` (${states.join(', ')})`}` +
    `, ${sum((row) => row.streams_in_flight)} streams in flight` +
    `, ↑ ${bytes(sum((row) => row.bytes_sent))} ↓ ${bytes(sum((row) => row.bytes_received))}`
  );
}

const round = (value: number): string => (value < 10 ? value.toFixed(1) : value.toFixed(0));

/** 1023B, 1.5KiB, 12MiB: binary units, three significant digits at most. */
export function bytes(count: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = count;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${count}B` : `${round(value)}${units[unit]}`;
}

/** How long ago `since` was, e.g. 45s, 12m, 3h20m, 2d4h; `-` when not established. */
export function age(since: string | null, now: number): string {
  if (since === null) return '-';
  const seconds = Math.max(0, Math.floor((now - Date.parse(since)) / 1000));
  if (Number.isNaN(seconds)) return '?';
  if (seconds < 60) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return `${hours}h${minutes % 60}m`;
  return `${Math.floor(hours / 24)}d${hours % 24}h`;
}
