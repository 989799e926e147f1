/** Loopback helpers: free ports, waiting for a listener, one small HTTP request. */
import http from 'node:http';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export { freePort } from '../../test/helpers/ports.ts';

/** Resolves once `port` accepts a TCP connection on 127.0.0.1; rejects after `timeoutMs`. */
export async function waitForPort(port: number, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`${what}: nothing listening on 127.0.0.1:${port} after ${timeoutMs} ms`);
}

export interface Reply {
  readonly status: number;
  readonly body: string;
}

/** One GET with a deadline. */
export function get(url: string, headers: Record<string, string> = {}, timeoutMs = 5_000) {
  return new Promise<Reply>((resolve, reject) => {
    const request = http.get(url, { headers, timeout: timeoutMs, agent: false }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
      response.on('error', reject);
    });
    request.on('timeout', () =>
      request.destroy(new Error(`GET ${url}: no answer in ${timeoutMs} ms`)),
    );
    request.on('error', reject);
  });
}

/** Polls `url` until it answers 200 with `expect` in the body; rejects after `timeoutMs`. */
export async function waitForBody(
  url: string,
  headers: Record<string, string>,
  expect: string,
  what: string,
  timeoutMs = 15_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    try {
      const reply = await get(url, headers, 2_000);
      if (reply.status === 200 && reply.body.includes(expect)) return;
      last = `${reply.status} ${reply.body.slice(0, 200)}`;
    } catch (error) {
      last = (error as Error).message;
    }
    await sleep(100);
  }
  throw new Error(
    `${what}: ${url} did not answer 200 with the origin's body in ${timeoutMs} ms (last: ${last})`,
  );
}
