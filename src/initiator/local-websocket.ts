/**
 * A WebSocket the responder opened as an RFC 8441 extended CONNECT (docs/streams.md §2), sent to an
 * HTTP/1.1 local service as an RFC 6455 upgrade. Each hop of an upgrade has its own key: this one
 * makes a fresh `Sec-WebSocket-Key` and checks the service's `Sec-WebSocket-Accept` against it
 * (RFC 6455 §4.1). After the 101 the tunnel stream carries the WebSocket's bytes untouched, so
 * extensions such as permessage-deflate work end to end.
 */
import { randomBytes } from 'node:crypto';
import http, { type IncomingMessage } from 'node:http';
import http2, { type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import net, { type Socket } from 'node:net';
import { describeError } from '../shared/errors.ts';
import { forEachEndToEndHeader } from '../shared/hop-by-hop.ts';
import type { Logger } from '../shared/logger.ts';
import { resetStreamWith } from '../shared/http2-stream.ts';
import { splice } from '../shared/splice.ts';
import { websocketAccept } from '../shared/websocket.ts';
import { respondText, type EndpointOutcome } from './local-common.ts';

/** Fields of the caller's that belong to its own hop of the upgrade (docs/streams.md §2). */
const perHop = new Set(['sec-websocket-key', 'sec-websocket-accept', 'sec-websocket-version']);

/** Opens the WebSocket on the local service and splices it to the tunnel stream. */
export function forwardWebSocket(
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
  target: {
    readonly path: string;
    readonly endpoint: EndpointOutcome;
    readonly connectTimeoutMs: number;
  },
  logger: Logger,
): void {
  const { path, endpoint, connectTimeoutMs } = target;
  const origin = new URL(endpoint.origin);
  const key = randomBytes(16).toString('base64');
  const forwarded: Record<string, string | string[]> = {};
  forEachEndToEndHeader(headers, (name, value) => {
    if (!perHop.has(name)) forwarded[name] = value;
  });
  Object.assign(forwarded, {
    host: headers[':authority'] ?? origin.host,
    connection: 'Upgrade',
    upgrade: 'websocket',
    'sec-websocket-key': key,
    'sec-websocket-version': '13',
  });
  let settled = false;
  const fail = (status: number, message: string, error?: Error) => {
    if (settled) return;
    settled = true;
    // The caller went away first: nobody to answer, and no failure of the service's.
    if (stream.destroyed || stream.closed) return;
    endpoint.failed();
    logger.warn({ target: endpoint.origin, path, err: error }, message);
    respondText(stream, status, message, true);
  };
  // url.origin drops a default port, and a URL keeps an IPv6 host in brackets.
  const host = origin.hostname.replace(/^\[(.*)\]$/, '$1');
  const port = origin.port === '' ? 80 : Number(origin.port);
  const request = http.request({
    host,
    port,
    path,
    method: 'GET',
    headers: forwarded,
    agent: false,
    // A half-closed WebSocket is still open in the other direction (a TCP FIN, docs/streams.md §2).
    createConnection: () => net.connect({ host, port, allowHalfOpen: true }),
  });
  // Bounds the connect and the wait for the service's answer to the upgrade.
  const timer = setTimeout(() => {
    request.destroy(new Error(`no answer to the upgrade within ${connectTimeoutMs} ms`));
  }, connectTimeoutMs);
  const abort = () => {
    if (!settled) request.destroy(new Error('the tunnel stream closed'));
  };
  stream.once('close', abort);
  request.on('error', (error) => {
    clearTimeout(timer);
    fail(502, `local service ${endpoint.origin} failed: ${describeError(error)}`, error);
  });
  request.on('upgrade', (response: IncomingMessage, socket: Socket, head: Buffer) => {
    clearTimeout(timer);
    stream.removeListener('close', abort);
    if (settled || stream.destroyed || stream.closed) {
      socket.destroy();
      return;
    }
    if (response.headers['sec-websocket-accept'] !== websocketAccept(key)) {
      socket.destroy();
      fail(
        502,
        `local service ${endpoint.origin} answered the upgrade with a wrong Sec-WebSocket-Accept`,
      );
      return;
    }
    settled = true;
    endpoint.succeeded();
    const answer: http2.OutgoingHttpHeaders = { ':status': 200 };
    for (const name of ['sec-websocket-protocol', 'sec-websocket-extensions']) {
      const value = response.headers[name];
      if (value !== undefined) answer[name] = value;
    }
    stream.respond(answer);
    void splice(socket, stream, { head, resetCode: http2.constants.NGHTTP2_CANCEL });
  });
  request.on('response', (response: IncomingMessage) => {
    clearTimeout(timer);
    // Not upgraded: an ordinary answer (a 403, a 404, a 426 …), passed on as it is, then the end.
    const status = response.statusCode ?? 502;
    // A 2xx on an extended CONNECT means the WebSocket is open (RFC 8441 §5): a service that
    // answered the upgrade with a page did not upgrade, and RFC 9110's range is 200–599 (Node's
    // respond() throws outside it).
    if ((status >= 200 && status < 300) || status > 599) {
      response.destroy();
      fail(502, `local service ${endpoint.origin} answered the WebSocket upgrade with ${status}`);
      return;
    }
    settled = true;
    if (status >= 500) endpoint.failed();
    else endpoint.succeeded();
    stream.removeListener('close', abort);
    stream.once('close', () => response.destroy());
    response.on('error', () => resetStreamWith(stream, http2.constants.NGHTTP2_CANCEL));
    if (stream.destroyed || stream.closed) {
      response.destroy();
      return;
    }
    const answer: http2.OutgoingHttpHeaders = { ':status': status };
    forEachEndToEndHeader(response.headers, (name, value) => {
      answer[name] = value;
    });
    stream.respond(answer);
    response.pipe(stream, { end: false });
    response.once('end', () => {
      if (response.complete) stream.end();
      else resetStreamWith(stream, http2.constants.NGHTTP2_CANCEL);
    });
  });
  // The extended CONNECT's own DATA comes only after the 200; nothing is sent with the GET.
  request.end();
}
