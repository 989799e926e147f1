/**
 * The sandbox's downstream service: answers every request like the `nginxdemos/hello:plain-text`
 * image the Envoy sandbox runs behind its initiator (protocol reference, envoy-sandbox/
 * verify-steps.md):
 *
 *   Server address: 127.0.0.1:8080
 *   Server name: <host name>
 *   Date: 25/Sep/2025:21:25:38 +0000
 *   URI: /downstream_service
 *   Request ID: 41807e3cd1f6a0b601597b80f7e51513
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import os from 'node:os';
import { formatHostPort, type HostPort } from '../shared/address.ts';
import { closeServer, listen } from '../shared/listen.ts';

export interface DemoService {
  readonly address: HostPort;
  close(): Promise<void>;
}

const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** nginx's $time_local format, in UTC: 25/Sep/2025:21:25:38 +0000. */
function nginxTime(date: Date): string {
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${pad(date.getUTCDate())}/${months[date.getUTCMonth()]}/${date.getUTCFullYear()}:${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}:${pad(date.getUTCSeconds())} +0000`;
}

export async function startDemoService(address: HostPort): Promise<DemoService> {
  let bound: HostPort = address;
  const server = http.createServer((request, response) => {
    const now = new Date();
    const body =
      `Server address: ${formatHostPort(bound)}\n` +
      `Server name: ${os.hostname()}\n` +
      `Date: ${nginxTime(now)}\n` +
      `URI: ${request.url ?? '/'}\n` +
      `Request ID: ${randomBytes(16).toString('hex')}\n`;
    // Like nginx's hello image: the response is never cached.
    response.writeHead(200, {
      'content-type': 'text/plain',
      'content-length': Buffer.byteLength(body),
      expires: new Date(now.getTime() - 1000).toUTCString(),
      'cache-control': 'no-cache',
    });
    response.end(request.method === 'HEAD' ? undefined : body);
    request.resume();
  });
  bound = await listen(server, address, 'the demo service');
  return {
    address: bound,
    close: async () => {
      const closed = closeServer(server);
      server.closeAllConnections();
      await closed;
    },
  };
}
