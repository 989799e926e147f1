/**
 * One caller's request as the egress listener sees it, whatever protocol brought it: an HTTP/1.1
 * request and its `ServerResponse`, an HTTP/1.1 `Upgrade` (a request and the raw socket), or an
 * HTTP/2 stream. The admission checks and the forwarding (egress-listener.ts, egress-forward.ts)
 * are written once against these interfaces; what differs per protocol is here: how a header
 * line is counted, how an answer is written, and what "abort" means on the wire (the connection
 * destroyed for HTTP/1.1, RST_STREAM for HTTP/2).
 */
import http, {
  type IncomingHttpHeaders,
  type IncomingMessage,
  type ServerResponse,
} from 'node:http';
import http2, { type OutgoingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex, Readable, Writable } from 'node:stream';
import type { AccessRecord } from '../shared/access-format.ts';
import { contentLength, resetStream, stopUpload, watchEndStream } from '../shared/http2-stream.ts';

/** The request side: what the checks read. */
export interface CallerRequest {
  /** The caller's HTTP version as `via` writes it: `1.1`, `1.0` or `2`. */
  readonly version: string;
  readonly method: string;
  /** The request target in origin form (`:path`, or the HTTP/1.1 request line's). */
  readonly path: string;
  /** `:authority`, or `host` when there is none (RFC 9113 §8.3.1). */
  readonly authority: string | undefined;
  /** The header fields, names lower-case, without pseudo-headers. */
  readonly headers: IncomingHttpHeaders;
  /** Header fields received, pseudo-headers not counted. */
  readonly receivedFields: number;
  /** How many fields of the request carry this (lower-case) header. */
  receivedLines(name: string): number;
  /** Every `authorization` field, each as received. */
  readonly authorization: readonly string[] | undefined;
  /** The connection: its address and, over TLS, its client certificate. */
  readonly socket: Socket;
  /** The request has (or may have) a body after its head. */
  readonly hasBody: boolean;
  /** When the request arrived (performance.now(), ms): downstream_rq_time runs from here. */
  readonly startedAt: number;
  /** The access-log record, when the listener has an access log; filled in as the request goes. */
  access: AccessRecord | undefined;
}

/** Answers the listener writes itself (refusals, a request script's reply). */
export interface CallerReply {
  /** The response head is out: a failure can only abort now. */
  readonly headersSent: boolean;
  /** The connection is not reused after this exchange (HTTP/1.1; HTTP/2 has other streams). */
  closeAfter(): void;
  /** A whole response with this body; an abort if the head is already out. */
  reply(status: number, headers: OutgoingHttpHeaders, body: Buffer): void;
  /** The status of the response head sent, 0 while none is. */
  readonly status: number;
}

/** A request whose response the listener streams from the tunnel. */
export interface CallerExchange extends CallerRequest, CallerReply {
  readonly body: Readable;
  /** The body arrived to its end (END_STREAM, or HTTP/1.1's last chunk / content-length). */
  readonly bodyComplete: boolean;
  /** The caller's trailers, once its body ended, if it sent any. */
  readonly trailers: IncomingHttpHeaders | undefined;
  readonly expectsContinue: boolean;
  /** `100 Continue`. */
  sendContinue(): void;
  /** A `103 Early Hints` passed on from the tunnel. */
  sendEarlyHints(headers: OutgoingHttpHeaders): void;
  /**
   * The final response head; with `endStream` there is no body (HEAD, 204, 304, or a response
   * that ended with its headers, as gRPC's trailers-only responses). Returns the body's sink.
   */
  respond(status: number, headers: OutgoingHttpHeaders, endStream: boolean): Writable;
  /** Ends the response body, with trailers when the protocol can carry them (false if dropped). */
  end(trailers: OutgoingHttpHeaders | undefined): boolean;
  /** Fails the response so the caller can never take it for whole. */
  abort(reason: string): void;
  /** The caller's side is closed (its connection or stream): nobody is left to answer. */
  readonly gone: boolean;
  /**
   * Runs once the exchange is over on the caller's side, complete or not; at once if it is over
   * already.
   */
  onClose(listener: () => void): void;
  /** The whole response was handed to the connection (not cut off by an abort or the caller). */
  readonly completed: boolean;
}

/** The request part of an HTTP/1.1 request, for a plain request and an Upgrade alike. */
class Http1Request implements CallerRequest {
  readonly request: IncomingMessage;
  readonly startedAt = performance.now();
  access: AccessRecord | undefined = undefined;

  constructor(request: IncomingMessage) {
    this.request = request;
  }

  get version(): string {
    return `${this.request.httpVersionMajor}.${this.request.httpVersionMinor}`;
  }

  get method(): string {
    return this.request.method ?? 'GET';
  }

  get path(): string {
    return this.request.url ?? '/';
  }

  get authority(): string | undefined {
    return this.request.headers.host;
  }

  get headers(): IncomingHttpHeaders {
    return this.request.headers;
  }

  get receivedFields(): number {
    return this.request.rawHeaders.length / 2;
  }

  receivedLines(name: string): number {
    return countLines(this.request.rawHeaders, name, 0);
  }

  get authorization(): readonly string[] | undefined {
    return this.request.headersDistinct['authorization'];
  }

  get socket(): Socket {
    return this.request.socket;
  }

  get hasBody(): boolean {
    const length = this.request.headers['content-length'];
    return (
      this.request.headers['transfer-encoding'] !== undefined ||
      (length !== undefined && length !== '0')
    );
  }
}

/** An HTTP/1.1 request and its response. */
export class Http1Exchange extends Http1Request implements CallerExchange {
  readonly response: ServerResponse;
  readonly expectsContinue: boolean;

  constructor(request: IncomingMessage, response: ServerResponse, expectsContinue: boolean) {
    super(request);
    this.response = response;
    this.expectsContinue = expectsContinue;
  }

  get body(): Readable {
    return this.request;
  }

  get bodyComplete(): boolean {
    return this.request.complete;
  }

  get trailers(): IncomingHttpHeaders | undefined {
    return nonEmpty(this.request.trailers);
  }

  get headersSent(): boolean {
    return this.response.headersSent;
  }

  closeAfter(): void {
    this.response.shouldKeepAlive = false;
  }

  reply(status: number, headers: OutgoingHttpHeaders, body: Buffer): void {
    if (this.response.headersSent) {
      this.response.destroy();
      return;
    }
    const head = { ...headers, 'content-length': body.length };
    this.response.writeHead(status, head);
    this.response.end(body);
    if (this.access !== undefined) sentWhole(this.access, head, body);
  }

  get status(): number {
    return this.response.headersSent ? this.response.statusCode : 0;
  }

  get completed(): boolean {
    return this.response.writableFinished;
  }

  sendContinue(): void {
    this.response.writeContinue();
  }

  sendEarlyHints(headers: OutgoingHttpHeaders): void {
    // Node writes a 103 only with a `link` (lib/_http_server.js writeEarlyHints).
    this.response.writeEarlyHints(headers as Record<string, string | string[]>);
  }

  respond(status: number, headers: OutgoingHttpHeaders, endStream: boolean): Writable {
    if (this.access !== undefined) this.access.responseHeaders = headers;
    this.response.writeHead(status, headers);
    if (endStream) this.response.end();
    return this.response;
  }

  end(trailers: OutgoingHttpHeaders | undefined): boolean {
    // Only a chunked body has a place for trailers (RFC 9112 §7.1.2); Node sends them without
    // announcing them in `Trailer`, which RFC 9110 §6.6.2 allows.
    const carried = trailers === undefined || this.response.chunkedEncoding;
    if (trailers !== undefined && carried) {
      this.response.addTrailers(trailers);
    }
    this.response.end();
    return carried;
  }

  abort(): void {
    this.response.destroy();
  }

  get gone(): boolean {
    return this.response.destroyed || this.request.socket.destroyed;
  }

  onClose(listener: () => void): void {
    if (this.gone) listener();
    else this.response.once('close', listener);
  }
}

/**
 * An HTTP/1.1 `Upgrade` request, for the checks only: its answers are written on the raw socket,
 * and the connection is closed after them (Node has handed the socket over, its parser is gone).
 */
export class UpgradeRequest extends Http1Request implements CallerReply {
  readonly upgradeSocket: Duplex;
  #sent = false;
  #status = 0;

  constructor(request: IncomingMessage, socket: Duplex) {
    super(request);
    this.upgradeSocket = socket;
  }

  get headersSent(): boolean {
    return this.#sent;
  }

  closeAfter(): void {
    // Always: the socket is closed after any answer written here.
  }

  get status(): number {
    return this.#status;
  }

  /** The status egress-upgrade.ts wrote on the socket (101, or its refusal). */
  answered(status: number): void {
    this.#status = status;
    if (this.access !== undefined) this.access.status = status;
  }

  reply(status: number, headers: OutgoingHttpHeaders, body: Buffer): void {
    if (this.#sent) return;
    this.#sent = true;
    this.#status = status;
    if (this.access !== undefined) sentWhole(this.access, headers, body);
    const lines = [`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? 'Unknown'}`];
    for (const [name, value] of Object.entries({ ...headers, 'content-length': body.length })) {
      if (value === undefined) continue;
      for (const one of Array.isArray(value) ? value : [value]) lines.push(`${name}: ${one}`);
    }
    lines.push('connection: close');
    const socket = this.upgradeSocket;
    socket.end(Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), body]), () =>
      socket.destroy(),
    );
  }
}

/** An HTTP/2 caller's stream (a server stream of the listener's own HTTP/2 server). */
export class Http2Exchange implements CallerExchange {
  readonly stream: ServerHttp2Stream;
  readonly headers: IncomingHttpHeaders;
  readonly method: string;
  readonly path: string;
  readonly authority: string | undefined;
  readonly expectsContinue: boolean;
  readonly hasBody: boolean;
  readonly startedAt = performance.now();
  access: AccessRecord | undefined = undefined;
  readonly #rawHeaders: readonly string[];
  /** Whether the caller's upload ended with END_STREAM, not a reset that Node also ends with. */
  readonly #endedByPeer: () => boolean;
  #trailers: IncomingHttpHeaders | undefined;
  #responseTrailers: OutgoingHttpHeaders | undefined;

  constructor(
    stream: ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    rawHeaders: readonly string[],
  ) {
    this.stream = stream;
    this.#rawHeaders = rawHeaders;
    const fields: IncomingHttpHeaders = {};
    for (const [name, value] of Object.entries(headers)) {
      if (!name.startsWith(':') && value !== undefined) fields[name] = value;
    }
    this.method = String(headers[':method'] ?? 'GET');
    this.path = String(headers[':path'] ?? '/');
    this.authority = headers[':authority'] ?? headers.host;
    // What an HTTP/1.1 request would carry: a script and the route read `host` the same way.
    // :authority wins over a `host` beside it (RFC 9113 §8.3.1).
    if (this.authority !== undefined) fields.host = this.authority;
    this.headers = fields;
    this.expectsContinue = String(headers.expect ?? '').toLowerCase() === '100-continue';
    this.hasBody = !stream.endAfterHeaders;
    this.#endedByPeer = watchEndStream(stream, () => contentLength(headers['content-length']));
    stream.once('trailers', (trailers: http2.IncomingHttpHeaders) => {
      this.#trailers = nonEmpty(trailers);
    });
    stream.on('wantTrailers', () => {
      if (!stream.destroyed) stream.sendTrailers(this.#responseTrailers ?? {});
    });
  }

  get version(): string {
    return '2';
  }

  get receivedFields(): number {
    let fields = 0;
    for (let i = 0; i < this.#rawHeaders.length; i += 2) {
      if (!(this.#rawHeaders[i] as string).startsWith(':')) fields += 1;
    }
    return fields;
  }

  receivedLines(name: string): number {
    return countLines(this.#rawHeaders, name, 0);
  }

  get authorization(): readonly string[] | undefined {
    const values: string[] = [];
    for (let i = 0; i < this.#rawHeaders.length; i += 2) {
      if (this.#rawHeaders[i] === 'authorization') values.push(this.#rawHeaders[i + 1] as string);
    }
    return values.length === 0 ? undefined : values;
  }

  get socket(): Socket {
    // Node's proxy of the session's socket: reads (address, certificate) are passed through.
    return this.stream.session?.socket as Socket;
  }

  get body(): Readable {
    return this.stream;
  }

  get bodyComplete(): boolean {
    return this.stream.readableEnded && this.#endedByPeer();
  }

  get trailers(): IncomingHttpHeaders | undefined {
    return this.#trailers;
  }

  get headersSent(): boolean {
    return this.stream.headersSent;
  }

  closeAfter(): void {
    // The session's other streams go on.
  }

  reply(status: number, headers: OutgoingHttpHeaders, body: Buffer): void {
    const stream = this.stream;
    if (stream.destroyed) return;
    if (stream.headersSent) {
      this.abort('the response had begun');
      return;
    }
    // Node ends a HEAD's response with its HEADERS (and a 204's or 304's): no body may follow.
    const bodiless = this.method === 'HEAD' || status === 204 || status === 304;
    const head = { ...headers, 'content-length': body.length };
    stream.respond({ ...head, ':status': status }, { endStream: bodiless });
    if (!bodiless) stream.end(body);
    if (this.access !== undefined) sentWhole(this.access, head, bodiless ? Buffer.alloc(0) : body);
    // The caller may still be sending a body nobody will read: RST_STREAM(NO_ERROR) after the
    // response tells it to stop (RFC 9113 §8.1), once the response has left (stopUpload: a reset
    // sent at once overtakes it, and on Node 22 the caller gets no response at all).
    stopUpload(stream);
  }

  sendContinue(): void {
    if (!this.stream.destroyed && !this.stream.headersSent) {
      this.stream.additionalHeaders({ ':status': 100 });
    }
  }

  sendEarlyHints(headers: OutgoingHttpHeaders): void {
    if (!this.stream.destroyed && !this.stream.headersSent) {
      this.stream.additionalHeaders({ ...headers, ':status': 103 });
    }
  }

  get status(): number {
    return this.stream.headersSent ? Number(this.stream.sentHeaders[':status'] ?? 0) : 0;
  }

  get completed(): boolean {
    return this.stream.writableFinished && this.stream.rstCode === http2.constants.NGHTTP2_NO_ERROR;
  }

  respond(status: number, headers: OutgoingHttpHeaders, endStream: boolean): Writable {
    if (this.access !== undefined) this.access.responseHeaders = headers;
    this.stream.respond(
      { ...headers, ':status': status },
      endStream ? { endStream: true } : { waitForTrailers: true },
    );
    return this.stream;
  }

  end(trailers: OutgoingHttpHeaders | undefined): boolean {
    // Sent on 'wantTrailers'; none makes Node end the stream with an empty DATA frame instead.
    this.#responseTrailers = trailers;
    this.stream.end();
    return true;
  }

  abort(reason: string): void {
    resetStream(this.stream, http2.constants.NGHTTP2_INTERNAL_ERROR, reason);
  }

  get gone(): boolean {
    return this.stream.destroyed || this.stream.closed;
  }

  onClose(listener: () => void): void {
    if (this.gone) listener();
    else this.stream.once('close', listener);
  }
}

/** How many entries of a raw header list (name, value, …) are this lower-case name. */
function countLines(raw: readonly string[], name: string, from: number): number {
  let lines = 0;
  for (let i = from; i < raw.length; i += 2) {
    const field = raw[i] as string;
    if (field.length === name.length && field.toLowerCase() === name) lines += 1;
  }
  return lines;
}

function nonEmpty(headers: IncomingHttpHeaders): IncomingHttpHeaders | undefined {
  return Object.keys(headers).length === 0 ? undefined : headers;
}

/** A whole response the listener wrote itself: its headers and body size in the record. */
function sentWhole(access: AccessRecord, headers: OutgoingHttpHeaders, body: Buffer): void {
  access.responseHeaders = headers;
  access.bytesSent = body.length;
}
