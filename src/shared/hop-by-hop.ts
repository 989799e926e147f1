/**
 * Hop-by-hop header fields, which a proxy must not forward (RFC 9110 §7.6.1). The list is Go's
 * net/http/httputil.ReverseProxy's (reverseproxy.go, hopHeaders), plus every field the Connection
 * header names. They are also exactly the "connection-specific" fields that HTTP/2 forbids
 * (RFC 9113 §8.2.2), so the same filter serves both directions of the tunnel. `te: trailers` is the
 * one TE value HTTP/2 allows; it is kept (and any other TE token dropped) so that gRPC and other
 * trailer users work end to end.
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
  // HTTP/1.1's h2c upgrade carries it; HTTP/2 forbids it as connection-specific (RFC 9113 §3.2.1).
  'http2-settings',
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
    if (value === undefined || name.startsWith(':')) continue;
    // Checked before the Connection-named fields: an HTTP/1.1 client that sends TE must also list
    // it in Connection (RFC 9110 §10.1.4), and `trailers` must still reach the origin (as Go does).
    if (name === 'te') {
      if (connectionTokens(value)?.includes('trailers') === true) keep(name, 'trailers');
      continue;
    }
    if (hopByHop.has(name) || named?.includes(name) === true) continue;
    keep(name, typeof value === 'number' ? String(value) : value);
  }
}

/**
 * The comma-separated tokens of a header, lower-cased (for Connection and TE). A list, not a Set:
 * there are one or two (`keep-alive`, `close`, `upgrade`), and this runs for every message.
 */
function connectionTokens(value: HeaderValue): readonly string[] | undefined {
  if (value === undefined) return undefined;
  const text = Array.isArray(value) ? value.join(',') : String(value);
  const tokens: string[] = [];
  for (const part of text.split(',')) {
    const token = part.trim().toLowerCase();
    if (token !== '') tokens.push(token);
  }
  return tokens;
}
