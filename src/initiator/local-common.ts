/**
 * What the initiator's stream handlers (local-http1.ts, local-http2.ts, local-websocket.ts,
 * local-tcp.ts) share: the plain-text answers the initiator gives itself. The splice of a byte
 * stream to a socket (WebSocket and TCP) is shared/splice.ts, which the responder uses too.
 */
import type { ServerHttp2Stream } from 'node:http2';
import type http2 from 'node:http2';
import { stopUpload } from '../shared/http2-stream.ts';

/** The part of a local endpoint a handler reports to (local-routes.ts `LocalEndpoint`). */
export interface EndpointOutcome {
  readonly origin: string;
  succeeded(): void;
  failed(): void;
}

/** An answer of the initiator's own, as plain text; a request body still coming is stopped. */
export function respondText(
  stream: ServerHttp2Stream,
  status: number,
  message: string,
  hasBody: boolean,
  headers: http2.OutgoingHttpHeaders = {},
): void {
  if (stream.destroyed || stream.closed || stream.headersSent) return;
  const body = `${message}\n`;
  stream.respond({
    ...headers,
    ':status': status,
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(body),
  });
  // A request body nobody will read: once the answer is out, ask the responder to stop sending it.
  stream.end(body, () => {
    if (hasBody) stopUpload(stream);
  });
}
