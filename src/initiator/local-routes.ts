/**
 * The initiator's local route table: which local service serves a stream, and on which of its
 * endpoints. It knows nothing of HTTP/1.1 or HTTP/2: the clients to the endpoints are made by the
 * caller's `createClient` (the local router makes an undici Pool per endpoint), once per distinct
 * endpoint and protocol, and shared by every route that names it.
 *
 * Matching: the path without its query string, by `prefix` or exact `path`, first match wins
 * (Envoy's route table order).
 */
import type { LocalRouteConfig } from '../config/schema.ts';
import type { Logger } from '../shared/logger.ts';
import { describeRoute, findRoute, pathOf } from '../shared/route-match.ts';

/** One endpoint of a local service and the client that reaches it. */
export interface LocalEndpoint<C> {
  /** `http://host:port`. */
  readonly origin: string;
  readonly client: C;
  /** The outcome of a request to it, for passive failure detection. */
  succeeded(): void;
  failed(): void;
}

export interface LocalRoute<C> {
  /** Its place in `local_routes`. */
  readonly index: number;
  /** How it reads in logs: `prefix /app` or `path /healthz`. */
  readonly description: string;
  readonly config: LocalRouteConfig;
  readonly endpoints: readonly LocalEndpoint<C>[];
}

/** A route chosen for a stream. */
export interface RouteChoice<C> {
  readonly route: LocalRoute<C>;
  /** The request target to send to the local service (the path with its query). */
  readonly path: string;
  /** The endpoint to send this request to; undefined when none is usable. */
  pick(): LocalEndpoint<C> | undefined;
}

export interface LocalRouteTableOptions<C> {
  /** Makes the client of one endpoint; `route` is the first route that names it. */
  readonly createClient: (origin: string, route: LocalRouteConfig) => C;
  readonly closeClient: (client: C) => Promise<void>;
  readonly destroyClient: (client: C) => void;
  readonly logger: Logger;
}

class Endpoint<C> implements LocalEndpoint<C> {
  readonly origin: string;
  readonly client: C;

  constructor(origin: string, client: C) {
    this.origin = origin;
    this.client = client;
  }

  succeeded(): void {}

  failed(): void {}
}

interface TableRoute<C> extends LocalRoute<C> {
  readonly prefix?: string | undefined;
  readonly path?: string | undefined;
}

export class LocalRouteTable<C> {
  readonly #routes: TableRoute<C>[];
  readonly #clients: C[] = [];
  readonly #options: LocalRouteTableOptions<C>;

  constructor(routes: readonly LocalRouteConfig[], options: LocalRouteTableOptions<C>) {
    this.#options = options;
    const endpoints = new Map<string, Endpoint<C>>();
    this.#routes = routes.map((config, index) => {
      let endpoint = endpoints.get(config.target);
      if (endpoint === undefined) {
        const client = options.createClient(config.target, config);
        this.#clients.push(client);
        endpoint = new Endpoint(config.target, client);
        endpoints.set(config.target, endpoint);
      }
      return {
        index,
        description: describeRoute(config),
        config,
        endpoints: [endpoint],
        prefix: config.prefix,
        path: config.path,
      };
    });
  }

  /** The route for a stream's `:path` (and `:authority`), if one matches. */
  match(path: string, _authority: string | undefined): RouteChoice<C> | undefined {
    const route = findRoute(this.#routes, pathOf(path));
    if (route === undefined) return undefined;
    const [endpoint] = route.endpoints;
    return { route, path, pick: () => endpoint };
  }

  /** Closes every client once its requests are done. */
  async close(): Promise<void> {
    await Promise.all(this.#clients.map((client) => this.#options.closeClient(client)));
  }

  destroy(): void {
    for (const client of this.#clients) this.#options.destroyClient(client);
  }
}
