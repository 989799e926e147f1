/**
 * Route matching shared by the egress listener and the local routes: `prefix` or exact `path`,
 * on the path without its query string, first match wins (Envoy's route table order).
 */
export interface RouteMatch {
  readonly prefix?: string | undefined;
  readonly path?: string | undefined;
}

/** The path of a request target, without `?query`. */
export function pathOf(target: string): string {
  const query = target.indexOf('?');
  return query < 0 ? target : target.slice(0, query);
}

export function findRoute<R extends RouteMatch>(routes: readonly R[], path: string): R | undefined {
  for (const route of routes) {
    if (route.prefix !== undefined ? path.startsWith(route.prefix) : path === route.path)
      return route;
  }
  return undefined;
}

/** How a route reads in messages: `prefix /app` or `path /healthz`. */
export function describeRoute(route: RouteMatch): string {
  return route.prefix !== undefined ? `prefix ${route.prefix}` : `path ${route.path ?? ''}`;
}
