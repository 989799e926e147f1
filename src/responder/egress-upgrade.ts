/**
 * WebSocket through the tunnel, responder side: an HTTP/1.1 `Upgrade: websocket` or an RFC 8441
 * extended CONNECT from a caller becomes an extended CONNECT stream on the tunnel (docs/streams.md
 * §2). Each hop of an upgrade has its own handshake: the caller's key is answered here, the
 * initiator makes a fresh one for the local service, and only the frames cross the tunnel.
 *
 * The egress listener has already admitted the request (authentication, route, host id, node) and
 * borrowed a session; these functions own the caller's connection or stream from then on.
 */
import http, { type IncomingMessage } from 'node:http';
import http2, {
  type ClientHttp2Stream,
  type IncomingHttpHeaders,
  type IncomingHttpStatusHeader,
  type OutgoingHttpHeaders,
  type ServerHttp2Stream,
} from 'node:http2';
import type { Duplex } from 'node:stream';
import { forEachEndToEndHeader } from '../shared/hop-by-hop.ts';
import type { Logger } from '../shared/logger.ts';
import { resetStreamWith, stopUpload, watchEndStream } from '../shared/http2-stream.ts';
import { pump } from '../shared/pump.ts';
import { resetSocket, splice } from '../shared/splice.ts';
import { websocketAccept } from '../shared/websocket.ts';
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
  /** An open WebSocket with no bytes either way for this long is closed, ms; 0: never. */
  readonly idleTimeoutMs: number;
  /** Told the status of the answer an HTTP/1.1 caller gets (101, or a refusal), for its log. */
  readonly onStatus?: ((status: number) => void) | undefined;
}

/**
 * A refusal's body is read to this many bytes at most (it is a short message, an error page): the
 * response is written with its length, so it cannot be streamed past a limit and cut off.
 */
export const maxRefusalBodyBytes = 64 * 1024;

/**
 * Fields each hop of an upgrade sets for itself (docs/streams.md §2), which never go on the
 * tunnel stream nor come back from it.
 */
const perHopFields = new Set([
  'sec-websocket-key',
  'sec-websocket-accept',
  'upgrade',
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'http2-settings',
]);

/** A key is 16 random bytes in base64 (RFC 6455 §4.1 item 7): 22 characters and `==`. */
const keyPattern = /^[A-Za-z0-9+/]{21}[AQgw]==$/;

type ResponseHeaders = IncomingHttpHeaders & IncomingHttpStatusHeader;

/** Why an HTTP/1.1 upgrade request is not a WebSocket handshake (RFC 6455 §4.2.1), or undefined. */
function handshakeProblem(
  request: IncomingMessage,
): { status: 400 | 426; reason: string } | undefined {
  if (request.method !== 'GET') return { status: 400, reason: 'a WebSocket handshake is a GET' };
  const upgrade = request.headers.upgrade ?? '';
  if (!upgrade.split(',').some((token) => token.trim().toLowerCase() === 'websocket')) {
    return { status: 400, reason: 'the Upgrade header does not name websocket' };
  }
  const key = request.headers['sec-websocket-key'];
  if (typeof key !== 'string' || !keyPattern.test(key.trim())) {
    return { status: 400, reason: 'Sec-WebSocket-Key must be 16 bytes in base64' };
  }
  if (request.headers['sec-websocket-version'] !== '13') {
    return { status: 426, reason: 'only Sec-WebSocket-Version 13 is supported' };
  }
  return undefined;
}

/** The extended CONNECT's headers: the target's, without any per-hop field (re-checked here). */
function connectHeaders(target: UpgradeTarget): OutgoingHttpHeaders {
  const headers: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(target.headers)) {
    if (value === undefined || perHopFields.has(name.toLowerCase())) continue;
    headers[name] = value;
  }
  headers[':method'] = 'CONNECT';
  headers[':protocol'] = 'websocket';
  headers['sec-websocket-version'] = '13';
  return headers;
}

/** The extended CONNECT on the tunnel, or undefined if the session closed since it was handed out. */
/**
 * Whether each open CONNECT's answer really ended with END_STREAM (watched from its opening):
 * Node also ends a stream's readable side at a reset, and a cut-off refusal must not reach the
 * caller as a whole one.
 */
const endedByPeer = new WeakMap<ClientHttp2Stream, () => boolean>();

function openConnect(target: UpgradeTarget): ClientHttp2Stream | undefined {
  try {
    const stream = target.session.request(connectHeaders(target), { endStream: false });
    endedByPeer.set(stream, watchEndStream(stream));
    return stream;
  } catch (error) {
    target.logger.debug({ err: error }, 'could not open a WebSocket stream on the tunnel');
    return undefined;
  }
}

/** An answer's end-to-end fields, for the caller (no pseudo-headers, no per-hop fields). */
function answerHeaders(headers: IncomingHttpHeaders): Record<string, string | string[]> {
  const kept: Record<string, string | string[]> = {};
  forEachEndToEndHeader(headers, (name, value) => {
    if (!perHopFields.has(name) && name !== 'content-length') kept[name] = value;
  });
  return kept;
}

/** The open WebSocket, both ways until both end (shared/splice.ts), then one line of figures. */
async function carry(
  caller: Duplex | ServerHttp2Stream,
  stream: ClientHttp2Stream,
  target: UpgradeTarget,
  head?: Buffer,
): Promise<void> {
  closeWhenIdle(caller, target);
  const startedAt = Date.now();
  const result = await splice(caller, stream, {
    head,
    resetCode: http2.constants.NGHTTP2_CANCEL,
  });
  target.logger.debug(
    {
      node_id: target.session.identity.nodeId,
      rx_bytes: result.rxBytes,
      tx_bytes: result.txBytes,
      duration_ms: Date.now() - startedAt,
      outcome: result.outcome,
    },
    'websocket closed',
  );
}

/**
 * `websocket_idle_timeout`: the caller's socket or stream timer restarts on every read and write,
 * so only a WebSocket with no bytes either way for that long is closed. Destroying the caller's
 * side makes the splice reset the tunnel stream (CANCEL), and the initiator closes its connection.
 */
function closeWhenIdle(caller: Duplex | ServerHttp2Stream, target: UpgradeTarget): void {
  if (target.idleTimeoutMs <= 0) return;
  // An HTTP/1.1 caller's is a net.Socket (or TLS socket), an HTTP/2 caller's an Http2Stream: both
  // have the timer.
  const timed = caller as { setTimeout?: (ms: number, onTimeout: () => void) => unknown };
  timed.setTimeout?.(target.idleTimeoutMs, () => {
    target.logger.debug(
      { node_id: target.session.identity.nodeId, idle_ms: target.idleTimeoutMs },
      'WebSocket idle for websocket_idle_timeout; closing it',
    );
    if ('rstCode' in caller) resetStreamWith(caller, http2.constants.NGHTTP2_CANCEL);
    else resetSocket(caller);
  });
}

/**
 * Opens the extended CONNECT on the tunnel and waits for the initiator's answer. Without one (the
 * initiator does not take extended CONNECT, the tunnel closed, `response_timeout` passed) the
 * caller is refused (502, or 504 after the deadline) and the stream reset; a caller gone
 * meanwhile resets it too. Either way undefined: there is nothing left to forward.
 */
async function connectAnswered(
  target: UpgradeTarget,
  caller: Duplex | ServerHttp2Stream,
  refuse: (status: number, text: string) => void,
): Promise<{ stream: ClientHttp2Stream; answer: ResponseHeaders } | undefined> {
  const { session, logger, responseTimeoutMs } = target;
  const node = session.identity.nodeId;
  if (!(await session.connectProtocol(responseTimeoutMs))) {
    refuse(502, noConnectProtocol(node));
    return undefined;
  }
  if (caller.destroyed) return undefined;
  const stream = openConnect(target);
  if (stream === undefined) {
    refuse(502, `the tunnel to node ${node} closed before the WebSocket stream\n`);
    return undefined;
  }
  const cancel = () => resetStreamWith(stream, http2.constants.NGHTTP2_CANCEL);
  caller.once('close', cancel);
  const answer = await answerOf(stream, responseTimeoutMs);
  caller.removeListener('close', cancel);
  if (answer === 'timeout') {
    cancel();
    logger.info({ node_id: node }, 'no answer to a WebSocket CONNECT within response_timeout');
    refuse(504, `node ${node} did not answer within response_timeout\n`);
    return undefined;
  }
  if (answer === 'closed') {
    cancel();
    refuse(502, `the tunnel to node ${node} closed the WebSocket stream\n`);
    return undefined;
  }
  if (caller.destroyed) {
    cancel();
    return undefined;
  }
  return { stream, answer };
}

/**
 * What the initiator answered: its response headers, or why there are none (a reset, a lost
 * tunnel, `timeout` after `ms`). Interim (1xx) answers are not final and are skipped.
 */
function answerOf(
  stream: ClientHttp2Stream,
  ms: number,
): Promise<ResponseHeaders | 'timeout' | 'closed'> {
  return new Promise((resolve) => {
    const done = (result: ResponseHeaders | 'timeout' | 'closed') => {
      clearTimeout(timer);
      stream.removeListener('response', onResponse);
      stream.removeListener('close', onClose);
      resolve(result);
    };
    const onResponse = (headers: ResponseHeaders) => done(headers);
    const onClose = () => done('closed');
    const timer = setTimeout(() => done('timeout'), ms);
    stream.on('response', onResponse);
    stream.on('close', onClose);
  });
}

/**
 * A refusal's body, at most `maxRefusalBodyBytes` within `ms`; undefined if it is longer, ends
 * with a reset, or is late.
 */
function refusalBody(stream: ClientHttp2Stream, ms: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (body: Buffer | undefined) => {
      clearTimeout(timer);
      stream.removeListener('data', onData);
      stream.removeListener('end', onEnd);
      stream.removeListener('close', onClose);
      if (body === undefined) resetStreamWith(stream, http2.constants.NGHTTP2_CANCEL);
      resolve(body);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxRefusalBodyBytes) done(undefined);
      else chunks.push(chunk);
    };
    const onEnd = () =>
      done(endedByPeer.get(stream)?.() === true ? Buffer.concat(chunks) : undefined);
    const onClose = () => done(undefined);
    const timer = setTimeout(() => done(undefined), ms);
    stream.on('data', onData);
    stream.on('end', onEnd);
    stream.on('close', onClose);
  });
}

/** Writes a whole HTTP/1.1 response on a raw socket and closes it. */
function answerRaw(
  socket: Duplex,
  status: number,
  headers: Record<string, string | string[]>,
  body: Buffer | string,
): void {
  const bytes = typeof body === 'string' ? Buffer.from(body) : body;
  const lines = [`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? 'Unknown'}`];
  for (const [name, value] of Object.entries(headers)) {
    for (const one of Array.isArray(value) ? value : [value]) lines.push(`${name}: ${one}`);
  }
  lines.push('connection: close', `content-length: ${bytes.length}`);
  if (socket.destroyed || !socket.writable) {
    socket.destroy();
    return;
  }
  socket.end(Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), bytes]), () =>
    socket.destroy(),
  );
}

const plainText = { 'content-type': 'text/plain; charset=utf-8' };

/** An HTTP/1.1 caller's `Upgrade: websocket`; `head` is what the caller sent after its head. */
export function forwardWebSocketUpgrade(
  request: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  target: UpgradeTarget,
): void {
  socket.on('error', () => {
    // Seen by the splice, or by the close that follows; never an uncaught exception.
  });
  // Nothing the caller sends is read before the tunnel stream is there to take it.
  socket.pause();
  const problem = handshakeProblem(request);
  if (problem !== undefined) {
    const extra: Record<string, string> =
      problem.status === 426 ? { 'sec-websocket-version': '13', upgrade: 'websocket' } : {};
    target.onStatus?.(problem.status);
    answerRaw(socket, problem.status, { ...plainText, ...extra }, `${problem.reason}\n`);
    return;
  }
  upgrade(request, socket, head, target).catch((error: unknown) => {
    // A bug or an unexpected failure costs this one connection, never the process.
    target.logger.error({ err: error }, 'websocket forwarding failed');
    socket.destroy();
  });
}

async function upgrade(
  request: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  target: UpgradeTarget,
): Promise<void> {
  const { session, responseTimeoutMs } = target;
  const node = session.identity.nodeId;
  const answer = (
    status: number,
    headers: Record<string, string | string[]>,
    body: Buffer | string,
  ) => {
    target.onStatus?.(status);
    answerRaw(socket, status, headers, body);
  };
  const connected = await connectAnswered(target, socket, (status, text) =>
    answer(status, plainText, text),
  );
  if (connected === undefined) return;
  const { stream, answer: connectAnswer } = connected;
  const status = connectAnswer[':status'] ?? 502;
  if (status !== 200) {
    // The CONNECT is over: nothing more goes up, and the answer is read whole (it is bounded).
    stream.end();
    const body = await refusalBody(stream, responseTimeoutMs);
    if (body === undefined) {
      answer(
        502,
        plainText,
        `node ${node} answered ${status} with a body cut off or over 64 KiB\n`,
      );
    } else {
      answer(status, answerHeaders(connectAnswer), body);
    }
    return;
  }
  if (socket.destroyed || !socket.writable) {
    resetStreamWith(stream, http2.constants.NGHTTP2_CANCEL);
    return;
  }
  const key = (request.headers['sec-websocket-key'] as string).trim();
  const lines = [
    'HTTP/1.1 101 Switching Protocols',
    'upgrade: websocket',
    'connection: Upgrade',
    `sec-websocket-accept: ${websocketAccept(key)}`,
  ];
  for (const name of ['sec-websocket-protocol', 'sec-websocket-extensions']) {
    const value = connectAnswer[name];
    if (typeof value === 'string') lines.push(`${name}: ${value}`);
  }
  target.onStatus?.(101);
  socket.write(`${lines.join('\r\n')}\r\n\r\n`, 'latin1');
  await carry(socket, stream, target, head);
}

function noConnectProtocol(node: string): string {
  return (
    `the initiator of node ${node} does not take WebSocket streams: its HTTP/2 SETTINGS did ` +
    'not enable the extended CONNECT protocol (RFC 8441)\n'
  );
}

/** An HTTP/2 caller's extended CONNECT (`:protocol` websocket). */
export function forwardExtendedConnect(caller: ServerHttp2Stream, target: UpgradeTarget): void {
  caller.on('error', () => {
    // Seen by the splice or the pump; never an uncaught exception.
  });
  extendedConnect(caller, target).catch((error: unknown) => {
    target.logger.error({ err: error }, 'websocket forwarding failed');
    resetStreamWith(caller, http2.constants.NGHTTP2_INTERNAL_ERROR);
  });
}

async function extendedConnect(caller: ServerHttp2Stream, target: UpgradeTarget): Promise<void> {
  // Nothing is read from the caller before the tunnel stream is there to take it.
  caller.pause();
  const refuse = (status: number, text: string) => {
    if (caller.destroyed || caller.headersSent) return;
    caller.respond({ ':status': status, ...plainText });
    caller.end(text);
  };
  const connected = await connectAnswered(target, caller, refuse);
  if (connected === undefined) return;
  const { stream, answer } = connected;
  const status = answer[':status'] ?? 502;
  caller.respond({ ':status': status, ...answerHeaders(answer) });
  if (status !== 200) {
    // A refusal is an ordinary response: its body streams as it comes, the CONNECT sends nothing
    // more, and the caller is asked to stop sending once the answer is complete.
    stream.end();
    try {
      await pump(stream, caller, { end: false });
    } catch {
      // pump destroyed both: the caller sees a reset, never a cut-off answer taken as whole.
      return;
    }
    if (endedByPeer.get(stream)?.() === true) {
      caller.end();
      stopUpload(caller);
    } else {
      resetStreamWith(caller, http2.constants.NGHTTP2_CANCEL);
    }
    return;
  }
  await carry(caller, stream, target);
}
