/**
 * The cheapest harness for the initiator's local router: an HTTP/2 server whose streams go to a
 * `LocalRouter` (as the initiator's tunnel session does), and an HTTP/2 client on it playing the
 * responder. Two relays turn that client into a responder's egress for tests: `h2Relay` passes
 * HTTP/2 caller streams on (for gRPC clients), `websocketRelay` turns an HTTP/1.1 WebSocket
 * upgrade into an RFC 8441 extended CONNECT (for `ws` clients).
 */
import http, { type IncomingMessage } from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import type { LocalRouteConfig, TcpTargetConfig } from '../../src/config/schema.ts';
import { validateInitiatorConfig } from '../../src/config/load.ts';
import { resetStreamWith } from '../../src/shared/http2-stream.ts';
import { websocketAccept } from '../../src/shared/websocket.ts';
import { LocalRouter } from '../../src/initiator/local-router.ts';
import { silentLogger } from '../../src/shared/logger.ts';

const { NGHTTP2_CANCEL, NGHTTP2_FLAG_END_STREAM } = http2.constants;

export interface RouteSpec {
  readonly target: string;
  readonly prefix?: string;
  readonly protocol?: 'http1' | 'http2';
  readonly connect_timeout?: number;
}

/** A local route config as the schema makes it, with the spec's values. */
export function localRoute(spec: RouteSpec): LocalRouteConfig {
  const config = validateInitiatorConfig({
    node_id: 'harness',
    cluster_id: 'harness',
    tenant_id: 'harness',
    remote_clusters: [{ name: 'r', hosts: ['127.0.0.1:1'] }],
    local_routes: [
      {
        prefix: spec.prefix ?? '/',
        target: spec.target,
        max_connections: 16,
        connect_timeout: `${spec.connect_timeout ?? 2_000}ms`,
        protocol: spec.protocol ?? 'http1',
      },
    ],
  });
  return config.local_routes[0] as LocalRouteConfig;
}

export interface RouterHarness {
  readonly router: LocalRouter;
  /** The responder's side of the tunnel. */
  readonly client: http2.ClientHttp2Session;
  close(): Promise<void>;
}

export async function routerHarness(
  routes: readonly LocalRouteConfig[],
  tcpTargets: readonly TcpTargetConfig[] = [],
): Promise<RouterHarness> {
  const router = new LocalRouter(routes, silentLogger, tcpTargets);
  const server = http2.createServer({ settings: { enableConnectProtocol: true } });
  server.on('stream', (stream, headers, flags) => router.handle(stream, headers, flags));
  server.on('sessionError', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const client = http2.connect(`http://127.0.0.1:${port}`);
  client.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    client.once('remoteSettings', () => resolve());
    client.once('error', reject);
  });
  return {
    router,
    client,
    close: async () => {
      client.destroy();
      router.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export interface Relay {
  readonly port: number;
  close(): Promise<void>;
}

/**
 * An h2c server that sends each caller stream on as a stream of `client` (the responder's egress,
 * HTTP/2 to HTTP/2): headers, body, trailers and resets both ways.
 */
export async function h2Relay(client: http2.ClientHttp2Session): Promise<Relay> {
  const server = http2.createServer();
  server.on('sessionError', () => {});
  server.on('stream', (caller, headers, flags) => {
    caller.on('error', () => {});
    const ended = (flags & NGHTTP2_FLAG_END_STREAM) !== 0;
    const tunnel = client.request(headers, { endStream: ended, waitForTrailers: !ended });
    tunnel.on('error', () => {});
    let requestTrailers: http2.OutgoingHttpHeaders = {};
    caller.on('trailers', (trailers) => (requestTrailers = trailers));
    tunnel.on('wantTrailers', () => tunnel.sendTrailers(requestTrailers));
    if (!ended) caller.pipe(tunnel);
    let responseTrailers: http2.OutgoingHttpHeaders = {};
    tunnel.on('trailers', (trailers: http2.IncomingHttpHeaders) => (responseTrailers = trailers));
    caller.on('wantTrailers', () => caller.sendTrailers(responseTrailers));
    tunnel.on('response', (response, responseFlags) => {
      if ((responseFlags & NGHTTP2_FLAG_END_STREAM) !== 0) {
        caller.respond(response, { endStream: true });
        return;
      }
      caller.respond(response, { waitForTrailers: true });
      tunnel.pipe(caller);
    });
    caller.on('close', () => {
      if (!tunnel.closed) resetStreamWith(tunnel, NGHTTP2_CANCEL);
    });
    tunnel.on('close', () => {
      if (!caller.closed && tunnel.rstCode !== undefined && tunnel.rstCode !== 0) {
        caller.close(tunnel.rstCode);
      }
    });
  });
  return listen(server);
}

/** What a relay's extended CONNECT ended with, for tests that check the tunnel stream itself. */
export interface WebSocketRelay extends Relay {
  /** The `:status` and headers of each extended CONNECT's answer, in order. */
  readonly answers: http2.IncomingHttpHeaders[];
}

/**
 * An HTTP/1.1 server that takes a WebSocket upgrade and opens it as an RFC 8441 extended CONNECT on
 * `client` (the responder's side of docs/streams.md §2): a 200 becomes a 101 with the accept value
 * of the caller's key, anything else an HTTP/1.1 response with its status and body.
 */
export async function websocketRelay(client: http2.ClientHttp2Session): Promise<WebSocketRelay> {
  const answers: http2.IncomingHttpHeaders[] = [];
  const server = http.createServer();
  server.on('upgrade', (request: IncomingMessage, socket: Socket, head: Buffer) => {
    socket.on('error', () => {});
    const headers: http2.OutgoingHttpHeaders = {
      ':method': 'CONNECT',
      ':protocol': 'websocket',
      ':scheme': 'http',
      ':path': request.url ?? '/',
      ':authority': request.headers.host ?? 'localhost',
      'sec-websocket-version': '13',
    };
    for (const name of ['sec-websocket-protocol', 'sec-websocket-extensions', 'origin']) {
      const value = request.headers[name];
      if (value !== undefined) headers[name] = value;
    }
    const tunnel = client.request(headers, { endStream: false });
    tunnel.on('error', () => socket.destroy());
    tunnel.on('response', (response) => {
      answers.push(response);
      const status = Number(response[':status']);
      if (status !== 200) {
        const chunks: Buffer[] = [];
        tunnel.on('data', (chunk: Buffer) => chunks.push(chunk));
        tunnel.on('end', () => {
          const body = Buffer.concat(chunks);
          socket.end(
            `HTTP/1.1 ${status} Refused\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body.toString('latin1')}`,
            'latin1',
          );
        });
        return;
      }
      const accept = websocketAccept(String(request.headers['sec-websocket-key']));
      const lines = [
        'HTTP/1.1 101 Switching Protocols',
        'upgrade: websocket',
        'connection: Upgrade',
        `sec-websocket-accept: ${accept}`,
      ];
      for (const name of ['sec-websocket-protocol', 'sec-websocket-extensions']) {
        const value = response[name];
        if (value !== undefined) lines.push(`${name}: ${String(value)}`);
      }
      socket.write(`${lines.join('\r\n')}\r\n\r\n`);
      if (head.length > 0) tunnel.write(head);
      socket.pipe(tunnel);
      tunnel.pipe(socket);
      socket.on('close', () => resetStreamWith(tunnel, NGHTTP2_CANCEL));
      tunnel.on('close', () => socket.destroy());
    });
  });
  const relay = await listen(server);
  return { ...relay, answers };
}

async function listen(server: http.Server | http2.Http2Server): Promise<Relay> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        if (server instanceof http.Server) server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Sends one request on the tunnel client and collects the whole answer, trailers included. */
export function exchange(
  client: http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
  body?: Buffer | string,
): Promise<{
  status: number | undefined;
  headers: http2.IncomingHttpHeaders;
  informational: http2.IncomingHttpHeaders[];
  body: Buffer;
  trailers: http2.IncomingHttpHeaders | undefined;
  rstCode: number | undefined;
}> {
  return new Promise((resolve, reject) => {
    const stream = client.request({ ':path': '/', ...headers }, { endStream: body === undefined });
    const informational: http2.IncomingHttpHeaders[] = [];
    let response: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders | undefined;
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      stream.destroy();
      reject(new Error('no complete answer within 10 s'));
    }, 10_000);
    stream.on('error', () => {});
    stream.on('headers', (h) => informational.push(h));
    stream.on('response', (h) => (response = h));
    stream.on('trailers', (t: http2.IncomingHttpHeaders) => (trailers = t));
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('close', () => {
      clearTimeout(timer);
      resolve({
        status: response[':status'] as number | undefined,
        headers: response,
        informational,
        body: Buffer.concat(chunks),
        trailers,
        rstCode: stream.rstCode,
      });
    });
    if (body !== undefined) stream.end(body);
  });
}
