/**
 * Hop-by-hop header fields, which a proxy must not forward (RFC 9110 §7.6.1). The list is Go's
 * net/http/httputil.ReverseProxy's (reverseproxy.go, hopHeaders), plus every field the Connection
 * header names. They are also exactly the "connection-specific" fields that HTTP/2 forbids
 * (RFC 9113 §8.2.2), so the same filter serves both directions of the tunnel. `te: trailers` is the
 * one TE value HTTP/2 allows; it is kept so that gRPC and other trailer users work end to end.
 */
const hopByHop = new Set([
  'connection',
  'proxy-connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

export type HeaderValue = string | string[] | number | undefined;

/**
 * Calls `keep(name, value)` for every end-to-end field of `headers` (names already lower-case, as
 * Node and undici give them). Pseudo-headers (`:path` …) are skipped too; the caller sets its own.
 */
export function forEachEndToEndHeader(
  headers: Readonly<Record<string, HeaderValue>>,
  keep: (name: string, value: string | string[]) => void,
): void {
  const named = connectionTokens(headers['connection']);
  for (const name of Object.keys(headers)) {
    const value = headers[name];
    if (value === undefined || name.startsWith(':') || named?.has(name) === true) continue;
    if (hopByHop.has(name)) {
      if (name === 'te' && isTrailersOnly(value)) keep(name, 'trailers');
      continue;
    }
    keep(name, typeof value === 'number' ? String(value) : value);
  }
}

function connectionTokens(value: HeaderValue): Set<string> | undefined {
  if (value === undefined) return undefined;
  const text = Array.isArray(value) ? value.join(',') : String(value);
  return new Set(
    text
      .split(',')
      .map((token) => token.trim().toLowerCase())
      .filter(Boolean),
  );
}

function isTrailersOnly(value: HeaderValue): boolean {
  const text = Array.isArray(value) ? value.join(',') : String(value);
  return text.split(',').every((token) => token.trim().toLowerCase() === 'trailers');
}
