/**
 * WebSocket through the tunnel, responder side: an HTTP/1.1 `Upgrade: websocket` or an RFC 8441
 * extended CONNECT from a caller becomes an extended CONNECT stream on the tunnel (docs/streams.md).
 *
 * The egress listener has already admitted the request (authentication, route, host id, node) and
 * borrowed a session; these functions own the caller's connection or stream from then on.
 *
 * A stub until issue 7's WebSocket work lands: both answer 501.
 */
import type { IncomingMessage } from 'node:http';
import type { OutgoingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import type { Duplex } from 'node:stream';
import type { Logger } from '../shared/logger.ts';
import type { TunnelSession } from './tunnel-session.ts';

export interface UpgradeTarget {
  readonly session: TunnelSession;
  /**
   * The extended CONNECT's headers: `:method` CONNECT, `:protocol` websocket, `:scheme`, `:path`,
   * `:authority`, and the end-to-end headers to forward (routing, identity and hop-by-hop headers
   * already removed, `x-forwarded-*` already added).
   */
  readonly headers: OutgoingHttpHeaders;
  readonly logger: Logger;
  /** The deadline for the initiator's answer to the CONNECT, ms (the listener's response_timeout). */
  readonly responseTimeoutMs: number;
}

/** An HTTP/1.1 caller's `Upgrade: websocket`; `head` is what the caller sent after its head. */
export function forwardWebSocketUpgrade(
  _request: IncomingMessage,
  socket: Duplex,
  _head: Buffer,
  _target: UpgradeTarget,
): void {
  const body = 'WebSocket is not carried yet\n';
  socket.end(
    `HTTP/1.1 501 Not Implemented\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}

/** An HTTP/2 caller's extended CONNECT (`:protocol` websocket). */
export function forwardExtendedConnect(stream: ServerHttp2Stream, _target: UpgradeTarget): void {
  stream.respond({ ':status': 501, 'content-type': 'text/plain; charset=utf-8' });
  stream.end('WebSocket is not carried yet\n');
}
