/** Small HTTP helpers for tests: one connection per request, so nothing stays open after a test. */
import http, { type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { HostPort } from '../../src/shared/address.ts';

export interface Reply {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
  readonly text: string;
}

export interface RequestOptions {
  readonly method?: string;
  readonly headers?: OutgoingHttpHeaders;
  readonly body?: Buffer | string | AsyncIterable<Buffer>;
  /** Deadline in ms for the whole response; the request is destroyed after it. None by default. */
  readonly timeoutMs?: number;
}

/**
 * Sends one request and resolves with the whole response; rejects if the response is aborted or,
 * with `timeoutMs`, late.
 */
export function request(
  target: HostPort,
  path: string,
  options: RequestOptions = {},
): Promise<Reply> {
  const method = options.method ?? 'GET';
  return new Promise((resolve, reject) => {
    const outgoing = http.request(
      {
        host: target.host,
        port: target.port,
        path,
        method,
        headers: options.headers,
        agent: false,
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('error', reject);
        response.on('aborted', () => reject(new Error('response aborted')));
        response.on('end', () => {
          if (!response.complete) {
            reject(new Error('response ended incomplete'));
            return;
          }
          clearTimeout(deadline);
          const body = Buffer.concat(chunks);
          resolve({
            status: response.statusCode ?? 0,
            headers: response.headers,
            body,
            text: body.toString('utf8'),
          });
        });
      },
    );
    outgoing.on('error', reject);
    const { timeoutMs } = options;
    const deadline =
      timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            const error = new Error(
              `${method} ${path} on ${target.host}:${target.port}: no answer in ${timeoutMs} ms`,
            );
            reject(error);
            outgoing.destroy(error);
          }, timeoutMs);
    outgoing.on('close', () => clearTimeout(deadline));
    const { body } = options;
    if (body === undefined || typeof body === 'string' || Buffer.isBuffer(body)) {
      outgoing.end(body);
      return;
    }
    void (async () => {
      try {
        for await (const chunk of body) {
          if (!outgoing.write(chunk)) await new Promise((done) => outgoing.once('drain', done));
        }
        outgoing.end();
      } catch (error) {
        outgoing.destroy(error as Error);
      }
    })();
  });
}

export interface TestService {
  readonly address: HostPort;
  readonly target: string;
  close(): Promise<void>;
}

/** An HTTP/1.1 service on 127.0.0.1, port 0. */
export async function startService(handler: http.RequestListener): Promise<TestService> {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    address: { host: '127.0.0.1', port },
    target: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A service that answers with its name and the request's method, path and headers as JSON. */
export function startNamedService(name: string): Promise<TestService> {
  return startService((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = JSON.stringify({
        name,
        method: req.method,
        url: req.url,
        headers: req.headers,
        bodyLength: Buffer.concat(chunks).length,
      });
      res.writeHead(200, { 'content-type': 'application/json', 'x-served-by': name });
      res.end(body);
    });
  });
}
