/** An HTTP/2 client for tests: one session per test, requests that resolve with all they saw. */
import http2, { type ClientHttp2Session, type OutgoingHttpHeaders } from 'node:http2';
import type { HostPort } from '../../src/shared/address.ts';

export interface H2Reply {
  readonly status: number;
  readonly headers: http2.IncomingHttpHeaders;
  /** The informational (1xx) heads, in order. */
  readonly informational: readonly http2.IncomingHttpHeaders[];
  readonly body: Buffer;
  readonly text: string;
  readonly trailers: http2.IncomingHttpHeaders | undefined;
  /** The response ended with END_STREAM on its HEADERS (no body, no trailers). */
  readonly endAfterHeaders: boolean;
  /** RST_STREAM code the stream closed with (0: NO_ERROR). */
  readonly rstCode: number;
  /** The body ended cleanly ('end' before 'close'). */
  readonly ended: boolean;
}

export interface H2RequestOptions {
  readonly body?: Buffer | string;
  readonly trailers?: OutgoingHttpHeaders;
  readonly timeoutMs?: number;
}

/** Connects over cleartext (h2c with prior knowledge) or with `tls` options over TLS. */
export async function connectH2(
  address: HostPort,
  tls?: http2.SecureClientSessionOptions,
): Promise<ClientHttp2Session> {
  const scheme = tls === undefined ? 'http' : 'https';
  const session = http2.connect(`${scheme}://${address.host}:${address.port}`, tls ?? {});
  session.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    session.once('connect', () => resolve());
    session.once('error', reject);
  });
  return session;
}

/** Sends one request on `session`; resolves once its stream closed, whatever way. */
export function h2Request(
  session: ClientHttp2Session,
  headers: OutgoingHttpHeaders,
  options: H2RequestOptions = {},
): Promise<H2Reply> {
  return new Promise((resolve, reject) => {
    const withTrailers = options.trailers !== undefined;
    const noBody = options.body === undefined && !withTrailers;
    const stream = session.request(headers, {
      endStream: noBody,
      waitForTrailers: withTrailers,
    });
    const informational: http2.IncomingHttpHeaders[] = [];
    const chunks: Buffer[] = [];
    let response: http2.IncomingHttpHeaders | undefined;
    let endAfterHeaders = false;
    let trailers: http2.IncomingHttpHeaders | undefined;
    let ended = false;
    const timer = setTimeout(() => {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      reject(new Error(`no complete response within ${options.timeoutMs ?? 10_000} ms`));
    }, options.timeoutMs ?? 10_000);
    stream.on('error', () => {});
    stream.on('headers', (head) => informational.push(head));
    stream.on('response', (head, flags) => {
      response = head;
      endAfterHeaders = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0;
    });
    stream.on('trailers', (head: http2.IncomingHttpHeaders) => {
      trailers = head;
    });
    stream.on('wantTrailers', () => stream.sendTrailers(options.trailers ?? {}));
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => {
      ended = true;
    });
    stream.on('close', () => {
      clearTimeout(timer);
      const body = Buffer.concat(chunks);
      resolve({
        status: Number(response?.[':status'] ?? 0),
        headers: response ?? {},
        informational,
        body,
        text: body.toString('utf8'),
        trailers,
        endAfterHeaders,
        rstCode: stream.rstCode ?? 0,
        ended,
      });
    });
    if (!noBody) stream.end(options.body ?? '');
  });
}
