/**
 * The admin server on both sides: `GET /stats` in Envoy's text format, `GET /ready`, `GET /healthz`,
 * `GET /tunnels`, `GET /config_dump`, `POST /drain` and the dashboard (`GET /dashboard`); the
 * endpoints are described in docs/admin-api.md. It renders snapshots handed to it and owns no
 * state. It binds where it is told; the configs default to loopback and nothing here widens that.
 *
 * With a token file (`admin.token_file`, read once at start), every request but the probes and the
 * dashboard page must carry `authorization: Bearer <token>` (RFC 6750 §2.1), else 401 with
 * `www-authenticate: Bearer` (§3). `/ready` and `/healthz` stay open so that load balancer and
 * Kubernetes probes, which often cannot send a secret, keep working; they tell only LIVE or
 * DRAINING, and OK. `/dashboard` stays open because a browser cannot send a bearer token when it
 * navigates and the page holds no data: the data it polls needs the token (see dashboard.ts). The
 * token is compared in constant time (as SHA-256 digests, so its length does not leak either) and
 * never appears in any answer.
 *
 * `/stats` accepts Envoy's `filter=<regex>` and `hidden=include|exclude|only`. revtun hides no
 * tunnel gauges (reference §12 #19), so `hidden=include` and the default list the same stats and
 * `hidden=only` lists none.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { HostPort } from '../shared/address.ts';
import { RevtunError } from '../shared/errors.ts';
import { openLineLog, type LineLog } from '../shared/lifecycle-log.ts';
import { closeServer, listen } from '../shared/listen.ts';
import type { Logger } from '../shared/logger.ts';
import type { Counter, StatSnapshot, StatsRegistry } from '../shared/stats.ts';
import { maskSecrets } from './config-dump.ts';
import { dashboardPage } from './dashboard.ts';
import { answerStats } from './stats-endpoint.ts';
import type { TunnelRow, TunnelsResponse } from './tunnels.ts';

export interface AdminServerOptions {
  readonly address: HostPort;
  /** Names the server in errors, e.g. "the initiator's admin server". */
  readonly what: string;
  readonly stats: () => readonly StatSnapshot[];
  /** True while the process is ready to serve (Envoy's /ready answers LIVE). */
  readonly ready: () => boolean;
  readonly logger: Logger;
  /** Where to write one line per request (Envoy's admin access_log), and what counts drops. */
  readonly accessLog?: { readonly path: string; readonly dropped: Counter } | undefined;
  /** A file holding the bearer token requests must carry; read by `listen()`. None: no token. */
  readonly tokenFile?: string | undefined;
  /** Which role serves: named in `GET /tunnels`. */
  readonly role?: TunnelsResponse['role'] | undefined;
  /** The role's tunnels now, one row per tunnel socket (`GET /tunnels`). None: an empty list. */
  readonly tunnels?: (() => readonly TunnelRow[]) | undefined;
  /** The role's effective config (`GET /config_dump`, secrets masked here). */
  readonly config?: (() => unknown) | undefined;
  /** Starts the role's drain (`POST /drain`); `ready()` answers false from then on. */
  readonly drain?: (() => void) | undefined;
}

/** The endpoints, as `GET /` lists them. */
const endpointList = [
  'revtun admin endpoints:',
  '  GET  /dashboard      live dashboard (open in a browser; add #token=TOKEN if one is set)',
  '  GET  /stats[?filter=REGEX&hidden=include|exclude|only]',
  '  GET  /tunnels[?node=ID]  every tunnel, as JSON',
  '  GET  /config_dump    the effective config, secrets masked, as JSON',
  '  POST /drain          start draining (then /ready answers 503 DRAINING)',
  '  GET  /ready          LIVE or DRAINING (no token needed)',
  '  GET  /healthz        OK while the process serves (no token needed)',
  '',
].join('\n');

/** Paths that need no token: probes, and the dashboard page, which holds no data. */
const openPaths = new Set(['/ready', '/healthz', '/dashboard']);

/** What a role's config says of its admin server. */
export interface AdminConfig {
  readonly address: HostPort;
  readonly access_log?: { readonly path: string } | undefined;
  readonly token_file?: string | undefined;
}

/** A token file larger than this is a mistake (a key or a certificate, not a token). */
const maxTokenFileBytes = 4096;

/**
 * The admin server a role's config asks for, or none. It serves the role's stats registry and
 * counts dropped access-log lines in it.
 */
export function adminServerFor(
  config: AdminConfig | undefined,
  role: {
    what: string;
    stats: StatsRegistry;
    ready: () => boolean;
    logger: Logger;
    role?: TunnelsResponse['role'] | undefined;
    tunnels?: (() => readonly TunnelRow[]) | undefined;
    config?: (() => unknown) | undefined;
    drain?: (() => void) | undefined;
  },
): AdminServer | undefined {
  if (config === undefined) return undefined;
  const { stats } = role;
  return new AdminServer({
    address: config.address,
    what: role.what,
    stats: () => stats.snapshot(),
    ready: role.ready,
    logger: role.logger,
    accessLog:
      config.access_log === undefined
        ? undefined
        : {
            path: config.access_log.path,
            dropped: stats.counter('revtun.admin_access_log.dropped'),
          },
    tokenFile: config.token_file,
    role: role.role,
    tunnels: role.tunnels,
    config: role.config,
    drain: role.drain,
  });
}

export class AdminServer {
  readonly #options: AdminServerOptions;
  readonly #server: http.Server;
  readonly #accessLog: LineLog | undefined;
  /** SHA-256 of the token, once `listen()` has read it. */
  #tokenDigest: Buffer | undefined;

  constructor(options: AdminServerOptions) {
    this.#options = options;
    this.#accessLog =
      options.accessLog === undefined
        ? undefined
        : openLineLog(options.accessLog.path, options.accessLog.dropped);
    this.#server = http.createServer(
      { requestTimeout: 10_000, headersTimeout: 10_000 },
      (request, response) => this.#handle(request, response),
    );
    this.#server.on('clientError', (_error, socket) => socket.destroy());
    // Errors while listening reach listen(), which turns them into one clear RevtunError.
    this.#server.on('error', (error) => {
      if (this.#server.listening) options.logger.error({ err: error }, 'admin server error');
    });
  }

  /** Reads the token file, if any, then listens. */
  async listen(): Promise<HostPort> {
    const { tokenFile } = this.#options;
    if (tokenFile !== undefined) this.#tokenDigest = sha256(await readToken(tokenFile));
    return listen(this.#server, this.#options.address, this.#options.what);
  }

  async close(): Promise<void> {
    const closed = closeServer(this.#server);
    this.#server.closeAllConnections();
    await closed;
    await this.#accessLog?.close();
  }

  #handle(request: IncomingMessage, response: ServerResponse): void {
    if (this.#accessLog !== undefined) logAccess(this.#accessLog, request, response);
    const url = adminUrl(request.url);
    if (url === undefined) {
      text(response, 400, 'bad request target: the admin endpoints take a path, e.g. /stats\n');
      return;
    }
    const open =
      openPaths.has(url.pathname) && (request.method === 'GET' || request.method === 'HEAD');
    if (!open && !this.#authorized(request)) {
      text(response, 401, 'unauthorized: send authorization: Bearer <the admin token>\n', {
        'www-authenticate': 'Bearer realm="revtun admin"',
      });
      return;
    }
    if (!open && crossSite(request)) {
      // A page in a browser may send a request here but must not act on the role or read it.
      text(response, 403, 'forbidden: the admin endpoints refuse requests from other sites\n');
      return;
    }
    if (url.pathname === '/drain') {
      this.#drain(request, response);
      return;
    }
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      text(response, 405, 'method not allowed: the admin endpoints answer GET\n', {
        allow: 'GET, HEAD',
      });
      return;
    }
    switch (url.pathname) {
      case '/stats':
      case '/stats/prometheus': {
        const answer = answerStats(url, this.#options.stats);
        text(response, answer.status, answer.body, { 'content-type': answer.contentType });
        return;
      }
      case '/ready':
        if (this.#options.ready()) text(response, 200, 'LIVE\n');
        else text(response, 503, 'DRAINING\n');
        return;
      case '/healthz':
        // Liveness: the process answers, draining or not (readiness is /ready).
        text(response, 200, 'OK\n');
        return;
      case '/tunnels':
        this.#tunnels(url, response);
        return;
      case '/config_dump':
        json(response, 200, maskSecrets(this.#options.config?.() ?? {}));
        return;
      case '/dashboard':
        this.#dashboard(response);
        return;
      case '/':
        text(response, 200, endpointList);
        return;
      default:
        text(response, 404, `no admin endpoint ${url.pathname}; GET / lists them\n`);
    }
  }

  /** `POST /drain`: starts the drain once; later calls answer the same (it is idempotent). */
  #drain(request: IncomingMessage, response: ServerResponse): void {
    if (request.method !== 'POST') {
      text(response, 405, 'method not allowed: /drain answers POST\n', { allow: 'POST' });
      return;
    }
    // The body, if any, means nothing; it is read and dropped so the connection stays usable.
    request.resume();
    if (this.#options.drain === undefined) {
      text(response, 501, 'this server has no role to drain\n');
      return;
    }
    this.#options.drain();
    text(response, 202, 'draining: new tunnels and requests are refused; /ready answers 503\n');
  }

  #tunnels(url: URL, response: ServerResponse): void {
    for (const key of url.searchParams.keys()) {
      if (key !== 'node') {
        text(response, 400, `unknown /tunnels parameter "${key}"; known: node\n`);
        return;
      }
    }
    const node = url.searchParams.get('node');
    const rows = this.#options.tunnels?.() ?? [];
    const body: TunnelsResponse = {
      role: this.#options.role ?? 'responder',
      now: new Date().toISOString(),
      tunnels: node === null ? rows : rows.filter((row) => row.node === node),
    };
    json(response, 200, body);
  }

  #dashboard(response: ServerResponse): void {
    const page = dashboardPage();
    send(response, 200, page.html, {
      'content-type': 'text/html; charset=utf-8',
      'content-security-policy': page.csp,
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
    });
  }

  /** True without a token file, else when the request carries the token. */
  #authorized(request: IncomingMessage): boolean {
    if (this.#tokenDigest === undefined) return true;
    // The scheme is case-insensitive (RFC 9110 §11.1); the token is everything after one space.
    const match = /^bearer +(\S+) *$/i.exec(request.headers.authorization ?? '');
    return match !== null && timingSafeEqual(sha256(match[1] as string), this.#tokenDigest);
  }
}

/**
 * The request target as a URL, or undefined when it is not a path (`GET http://[/` or `//[`:
 * `new URL` would throw inside the request handler).
 */
function adminUrl(target: string | undefined): URL | undefined {
  if (target === undefined || !target.startsWith('/') || target.startsWith('//')) return undefined;
  try {
    return new URL(target, 'http://admin');
  } catch {
    return undefined;
  }
}

/**
 * True for a request a browser sent on behalf of another site: `sec-fetch-site: cross-site` or
 * `same-site`, or an `origin` whose host is not the one asked. Without a token this is what keeps
 * a web page the operator opens from `fetch(…/drain, { method: 'POST', mode: 'no-cors' })`; curl,
 * Prometheus and the dashboard itself (same origin) send neither or a matching one.
 */
function crossSite(request: IncomingMessage): boolean {
  const site = request.headers['sec-fetch-site'];
  if (site === 'cross-site' || site === 'same-site') return true;
  const origin = request.headers.origin;
  if (origin === undefined) return false;
  try {
    return new URL(origin).host !== request.headers.host;
  } catch {
    return true;
  }
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/**
 * The token in `file`, without surrounding whitespace (a trailing newline is usual). A file that
 * cannot be read, is empty or is too large is a start error naming the key and the file.
 */
async function readToken(file: string): Promise<string> {
  let content: string;
  try {
    content = await readFile(file, 'utf8');
  } catch (error) {
    throw new RevtunError(
      'ERR_CONFIG_READ',
      `cannot read admin.token_file ${file}: ${(error as Error).message}`,
      { cause: error },
    );
  }
  const token = content.trim();
  const problem =
    content.length > maxTokenFileBytes
      ? `is larger than ${maxTokenFileBytes} bytes; it should hold only the token`
      : token === ''
        ? 'is empty'
        : /^[\x21-\x7e]+$/.test(token)
          ? undefined
          : 'must hold one token of printable ASCII characters without spaces';
  if (problem !== undefined) {
    throw new RevtunError('ERR_CONFIG_READ', `admin.token_file ${file} ${problem}`);
  }
  return token;
}

function text(
  response: ServerResponse,
  status: number,
  body: string,
  headers: Record<string, string> = {},
): void {
  send(response, status, body, { 'content-type': 'text/plain; charset=utf-8', ...headers });
}

function json(response: ServerResponse, status: number, value: unknown): void {
  send(response, status, `${JSON.stringify(value, null, 2)}\n`, {
    'content-type': 'application/json',
  });
}

/** One whole answer; `headers` must name its content-type. */
function send(
  response: ServerResponse,
  status: number,
  body: string,
  headers: Record<string, string>,
): void {
  const fields = {
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-cache',
    ...headers,
  };
  // Set one by one, so that the access log can read content-length back.
  for (const [name, value] of Object.entries(fields)) response.setHeader(name, value);
  response.writeHead(status);
  response.end(response.req.method === 'HEAD' ? undefined : body);
}

/**
 * One line per request in Envoy's default access-log format:
 * [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
 * %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%
 * "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%"
 * "%UPSTREAM_HOST%"
 */
function logAccess(log: LineLog, request: IncomingMessage, response: ServerResponse): void {
  const started = new Date();
  response.once('finish', () => {
    const field = (value: string | string[] | undefined) =>
      value === undefined
        ? '-'
        : (Array.isArray(value) ? value.join(',') : value).replace(/"/g, '\\"');
    const sent = Number(response.getHeader('content-length') ?? 0);
    log.writeLine(
      `[${started.toISOString()}] "${request.method ?? '-'} ${field(request.url)} HTTP/${request.httpVersion}" ` +
        `${response.statusCode} - 0 ${sent} ${Date.now() - started.getTime()} - ` +
        `"${field(request.headers['x-forwarded-for'])}" "${field(request.headers['user-agent'])}" ` +
        `"${field(request.headers['x-request-id'])}" "${field(request.headers.host)}" "-"`,
    );
  });
}
