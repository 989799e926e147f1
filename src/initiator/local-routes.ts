/**
 * The initiator's local route table: which local service serves a stream, and on which of its
 * endpoints. It knows nothing of HTTP/1.1 or HTTP/2: the clients to the endpoints are made by the
 * caller's `createClient` (the local router makes an undici Pool per endpoint), once per distinct
 * endpoint (origin and protocol), and shared by every route that names it.
 *
 * Matching: the path without its query string, by `prefix`, exact `path` or a whole-path `regex`,
 * and optionally the `:authority`'s host; first match wins (Envoy's route table order).
 *
 * Endpoints: round robin over those not ejected. Passive failure detection is Envoy's outlier
 * detection with its consecutive-5xx detector: the router reports each outcome (`succeeded()` for
 * an answer below 500, `failed()` for a 5xx or no answer), and `consecutive_failures` failures in a
 * row eject the endpoint for `ejection_time` × the number of ejections in a row, capped at
 * `max_ejection_time`. When every endpoint of a route is ejected, the route ignores ejection and
 * serves all of them (Envoy's panic mode): a struggling local service's own answer is more use to
 * the caller than a 503 made up here, and a one-endpoint route never goes dark for half a minute
 * over five errors.
 */
import type { LocalRouteConfig } from '../config/schema.ts';
import type { Logger } from '../shared/logger.ts';
import { pathOf } from '../shared/route-match.ts';
import { compileRouteRegex } from '../shared/route-regex.ts';

export type LocalProtocol = LocalRouteConfig['protocol'];

/** One endpoint of a local service and the client that reaches it. */
export interface LocalEndpoint<C> {
  /** `http://host:port`. */
  readonly origin: string;
  /** How the client speaks to it: HTTP/1.1, or h2c with prior knowledge. */
  readonly protocol: LocalProtocol;
  readonly client: C;
  /** The outcome of a request to it, for passive failure detection. */
  succeeded(): void;
  failed(): void;
}

/** An endpoint's passive health, for stats and logs. */
export interface LocalEndpointState {
  readonly origin: string;
  readonly protocol: LocalProtocol;
  readonly ejected: boolean;
  readonly consecutiveFailures: number;
  /** Ejections in a row (decaying while the endpoint stays in); the next one lasts one more step. */
  readonly ejections: number;
}

export interface LocalRoute<C> {
  /** Its place in `local_routes`. */
  readonly index: number;
  /** How it reads in logs: `prefix /app`, `path /healthz`, `regex /v[0-9]+/.*`, `… on host h`. */
  readonly description: string;
  readonly config: LocalRouteConfig;
  readonly endpoints: readonly LocalEndpoint<C>[];
  readonly protocol: LocalProtocol;
  /** The local service's deadline for its response headers, ms; undefined for none. */
  readonly timeoutMs: number | undefined;
}

/** A route chosen for a stream. */
export interface RouteChoice<C> {
  readonly route: LocalRoute<C>;
  /** The request target to send to the local service: the (rewritten) path with its query. */
  readonly path: string;
  /** The route's response-headers deadline, ms (after it the stream gets 504); undefined for none. */
  readonly timeoutMs: number | undefined;
  /** The endpoint to send this request to; undefined when none is usable. */
  pick(): LocalEndpoint<C> | undefined;
}

export interface LocalRouteTableOptions<C> {
  /** Makes the client of one endpoint; `route` is the first route that names it. */
  readonly createClient: (origin: string, route: LocalRouteConfig) => C;
  readonly closeClient: (client: C) => Promise<void>;
  readonly destroyClient: (client: C) => void;
  readonly logger: Logger;
  /** The clock of ejections, ms; `Date.now` unless a test drives it. */
  readonly now?: () => number;
}

type OutlierDetection = LocalRouteConfig['outlier_detection'];

interface EndpointOptions<C> {
  readonly origin: string;
  readonly protocol: LocalProtocol;
  readonly client: C;
  /** The settings of the first route that names it. */
  readonly detection: OutlierDetection;
  readonly now: () => number;
  readonly logger: Logger;
}

class Endpoint<C> implements LocalEndpoint<C> {
  readonly origin: string;
  readonly protocol: LocalProtocol;
  readonly client: C;
  /**
   * The endpoints of the first route that names this one (itself included), over which
   * `max_ejection_percent` counts; set once every endpoint of that route exists.
   */
  peers: readonly Endpoint<C>[] = [];
  readonly #options: EndpointOptions<C>;
  #consecutiveFailures = 0;
  #ejections = 0;
  #ejectedUntil: number | undefined;
  #returnedAt: number | undefined;

  constructor(options: EndpointOptions<C>) {
    this.#options = options;
    this.origin = options.origin;
    this.protocol = options.protocol;
    this.client = options.client;
  }

  /** Whether it is out of the rotation now; notices (and logs) its return when its time is up. */
  isEjected(): boolean {
    const until = this.#ejectedUntil;
    if (until === undefined) return false;
    const now = this.#options.now();
    if (now < until) return true;
    this.#ejectedUntil = undefined;
    // When it was due back, not when it was first asked about: that is when its time in starts.
    this.#returnedAt = until;
    this.#consecutiveFailures = 0;
    this.#options.logger.info(
      { target: this.origin, protocol: this.protocol },
      'local endpoint returns after its ejection',
    );
    return false;
  }

  state(): LocalEndpointState {
    return {
      origin: this.origin,
      protocol: this.protocol,
      ejected: this.isEjected(),
      consecutiveFailures: this.#consecutiveFailures,
      ejections: this.#ejections,
    };
  }

  succeeded(): void {
    this.#consecutiveFailures = 0;
  }

  failed(): void {
    // An ejected endpoint (served only in panic) is judged afresh when it returns.
    if (this.isEjected()) return;
    this.#consecutiveFailures += 1;
    if (this.#consecutiveFailures >= this.#options.detection.consecutive_failures) this.#eject();
  }

  #eject(): void {
    const { detection, now, logger } = this.#options;
    const ejected = this.peers.filter((peer) => peer !== this && peer.isEjected()).length;
    // One may always be ejected (as Envoy); beyond it, max_ejection_percent of the route's.
    if (ejected > 0 && (ejected + 1) * 100 > detection.max_ejection_percent * this.peers.length) {
      return;
    }
    const time = now();
    // Envoy lowers the multiplier while a host stays in; here by one per ejection_time spent in.
    if (this.#returnedAt !== undefined) {
      const decay = Math.floor((time - this.#returnedAt) / detection.ejection_time);
      this.#ejections = Math.max(0, this.#ejections - decay);
    }
    this.#ejections += 1;
    const duration = Math.min(
      detection.ejection_time * this.#ejections,
      detection.max_ejection_time,
    );
    this.#ejectedUntil = time + duration;
    logger.info(
      {
        target: this.origin,
        protocol: this.protocol,
        consecutive_failures: this.#consecutiveFailures,
        ejections: this.#ejections,
        ejection_ms: duration,
      },
      'local endpoint ejected after consecutive failures',
    );
  }
}

interface TableRoute<C> extends LocalRoute<C> {
  readonly endpoints: readonly Endpoint<C>[];
  readonly matchesPath: (path: string) => boolean;
  /** `:authority` without port, lower case → whether the route takes it. */
  readonly matchesHost: (host: string | undefined) => boolean;
  readonly rewrite: (path: string) => string;
  /** Where round robin starts next. */
  cursor: number;
}

export class LocalRouteTable<C> {
  readonly #routes: TableRoute<C>[];
  readonly #endpoints: Endpoint<C>[] = [];
  readonly #options: LocalRouteTableOptions<C>;

  constructor(routes: readonly LocalRouteConfig[], options: LocalRouteTableOptions<C>) {
    this.#options = options;
    const now = options.now ?? Date.now;
    const byKey = new Map<string, Endpoint<C>>();
    this.#routes = routes.map((config, index) => {
      const origins = config.targets ?? (config.target === undefined ? [] : [config.target]);
      const created: Endpoint<C>[] = [];
      const endpoints = origins.map((origin) => {
        const key = `${config.protocol} ${origin}`;
        let endpoint = byKey.get(key);
        if (endpoint === undefined) {
          endpoint = new Endpoint({
            origin,
            protocol: config.protocol,
            client: options.createClient(origin, config),
            detection: config.outlier_detection,
            now,
            logger: options.logger,
          });
          byKey.set(key, endpoint);
          this.#endpoints.push(endpoint);
          created.push(endpoint);
        }
        return endpoint;
      });
      for (const endpoint of created) endpoint.peers = endpoints;
      return {
        index,
        description: describe(config),
        config,
        endpoints,
        protocol: config.protocol,
        timeoutMs: config.timeout,
        matchesPath: pathMatcher(config),
        matchesHost: hostMatcher(config.host),
        rewrite: rewriter(config),
        cursor: 0,
      };
    });
  }

  /** The route for a stream's `:path` (and `:authority`), if one matches. */
  match(path: string, authority: string | undefined): RouteChoice<C> | undefined {
    const bare = pathOf(path);
    const host = authority === undefined ? undefined : hostOf(authority);
    const route = this.#routes.find((r) => r.matchesHost(host) && r.matchesPath(bare));
    if (route === undefined) return undefined;
    return {
      route,
      path: route.rewrite(path),
      timeoutMs: route.timeoutMs,
      pick: () => pick(route),
    };
  }

  /** Every distinct endpoint's passive health, in the order routes first name them. */
  endpoints(): LocalEndpointState[] {
    return this.#endpoints.map((endpoint) => endpoint.state());
  }

  /** Closes every client once its requests are done. */
  async close(): Promise<void> {
    await Promise.all(this.#endpoints.map((e) => this.#options.closeClient(e.client)));
  }

  destroy(): void {
    for (const endpoint of this.#endpoints) this.#options.destroyClient(endpoint.client);
  }
}

/** Round robin over the endpoints not ejected, or over all of them when all are (panic). */
function pick<C>(route: TableRoute<C>): LocalEndpoint<C> | undefined {
  const { endpoints } = route;
  for (let step = 0; step < endpoints.length; step += 1) {
    const index = (route.cursor + step) % endpoints.length;
    const endpoint = endpoints[index] as Endpoint<C>;
    if (!endpoint.isEjected()) {
      route.cursor = (index + 1) % endpoints.length;
      return endpoint;
    }
  }
  const endpoint = endpoints[route.cursor % endpoints.length];
  route.cursor = (route.cursor + 1) % Math.max(1, endpoints.length);
  return endpoint;
}

function pathMatcher(config: LocalRouteConfig): (path: string) => boolean {
  const { prefix, path: exact, regex } = config;
  if (prefix !== undefined) return (path) => path.startsWith(prefix);
  if (regex !== undefined) {
    const compiled = compileRouteRegex(regex);
    return (path) => compiled.test(path);
  }
  return (path) => path === exact;
}

/** As an Envoy virtual host's domains: exact, or `*.suffix` for any name ending in `.suffix`. */
function hostMatcher(host: string | undefined): (authorityHost: string | undefined) => boolean {
  if (host === undefined) return () => true;
  if (host.startsWith('*.')) {
    const suffix = host.slice(1);
    return (name) => name !== undefined && name.length > suffix.length && name.endsWith(suffix);
  }
  return (name) => name === host;
}

/** The host of an `:authority`, lower case, without its port (`[::1]:80` gives `[::1]`). */
export function hostOf(authority: string): string {
  const lower = authority.toLowerCase();
  if (lower.startsWith('[')) {
    const end = lower.indexOf(']');
    return end < 0 ? lower : lower.slice(0, end + 1);
  }
  const colon = lower.lastIndexOf(':');
  return colon < 0 ? lower : lower.slice(0, colon);
}

/**
 * Envoy's prefix_rewrite: the matched prefix is replaced as written, the rest of the path and the
 * query kept. So prefix `/api` with rewrite `/` turns `/api/x` into `//x`; pair `/api/` with `/`.
 */
function rewriter(config: LocalRouteConfig): (target: string) => string {
  const { prefix, prefix_rewrite: replacement } = config;
  if (prefix === undefined || replacement === undefined) return (target) => target;
  return (target) => replacement + target.slice(prefix.length);
}

function describe(config: LocalRouteConfig): string {
  const match =
    config.prefix !== undefined
      ? `prefix ${config.prefix}`
      : config.regex !== undefined
        ? `regex ${config.regex}`
        : `path ${config.path ?? ''}`;
  return config.host === undefined ? match : `${match} on host ${config.host}`;
}
