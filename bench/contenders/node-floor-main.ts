/**
 * The least Node's own HTTP stacks can do per request, as a bound for revtun (node-floor.ts):
 *   node --import tsx bench/contenders/node-floor-main.ts proxy PORT ORIGIN_PORT
 *   node --import tsx bench/contenders/node-floor-main.ts front PORT BACK_PORT
 *   node --import tsx bench/contenders/node-floor-main.ts back  PORT ORIGIN_PORT
 *
 * `proxy` is one hop: a `node:http` server whose requests go to the origin through an undici
 * pool. `front` + `back` are revtun's data path with nothing else: `front` is a `node:http`
 * server that sends each request as a stream on one `node:http2` client session (the responder's
 * part), and `back` is the `node:http2` server on that session that sends it to the origin
 * through an undici pool (the initiator's part). No routing, no header checks, no stats, no
 * limits: whatever these cost, revtun cannot cost less.
 */
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { pipeline } from 'node:stream/promises';
import { Pool } from 'undici';

const [mode, port, next] = process.argv.slice(2);
if ((mode !== 'proxy' && mode !== 'front' && mode !== 'back') || !port || !next) {
  process.stderr.write('usage: node-floor-main.ts proxy|front|back PORT NEXT_PORT\n');
  process.exit(2);
}
process.on('SIGTERM', () => process.exit(0));

const hopByHop = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'host']);

function origin(): Pool {
  return new Pool(`http://127.0.0.1:${next}`, { connections: 256, pipelining: 1 });
}

/** Sends a request to the origin and answers with what it says, streaming both bodies. */
async function toOrigin(
  pool: Pool,
  method: string,
  path: string,
  headers: Record<string, string | string[]>,
  body: NodeJS.ReadableStream,
  answer: (status: number, headers: Record<string, string | string[]>) => NodeJS.WritableStream,
): Promise<void> {
  const hasBody = method !== 'GET' && method !== 'HEAD';
  await pool.stream(
    { method, path, headers, body: hasBody ? (body as never) : null },
    ({ statusCode, headers: received }) => {
      const out: Record<string, string | string[]> = {};
      for (const [name, value] of Object.entries(received)) {
        if (value !== undefined && !hopByHop.has(name)) out[name] = value;
      }
      return answer(statusCode, out) as never;
    },
  );
}

function copyHeaders(raw: http.IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(raw)) {
    if (value !== undefined && !hopByHop.has(name) && name[0] !== ':') out[name] = value;
  }
  return out;
}

if (mode === 'proxy') {
  const pool = origin();
  http
    .createServer((request, response) => {
      request.on('error', () => {});
      response.on('error', () => {});
      toOrigin(
        pool,
        request.method ?? 'GET',
        request.url ?? '/',
        copyHeaders(request.headers),
        request,
        (status, headers) => {
          response.writeHead(status, headers);
          return response;
        },
      ).catch(() => response.destroy());
    })
    .listen(Number(port), '127.0.0.1', () => process.stdout.write('listening\n'));
} else if (mode === 'back') {
  const pool = origin();
  const server = http2.createServer({ settings: { initialWindowSize: 1 << 20 } });
  server.on('sessionError', () => {});
  // Nagle off, as revtun (and Node's own http server) sets it.
  server.on('connection', (socket: net.Socket) => socket.setNoDelay(true));
  server.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    toOrigin(
      pool,
      String(headers[':method']),
      String(headers[':path']),
      copyHeaders(headers),
      stream,
      (status, out) => {
        stream.respond({ ':status': status, ...out });
        return stream;
      },
    ).catch(() => stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR));
  });
  server.listen(Number(port), '127.0.0.1', () => process.stdout.write('listening\n'));
} else {
  const session = http2.connect(`http://127.0.0.1:${next}`, {
    settings: { initialWindowSize: 1 << 20 },
    createConnection: () => net.connect({ host: '127.0.0.1', port: Number(next), noDelay: true }),
  });
  session.on('error', (error: Error) => {
    process.stderr.write(`session: ${error.message}\n`);
    process.exit(1);
  });
  session.on('connect', () => {
    session.setLocalWindowSize(16 << 20);
  });
  http
    .createServer((request, response) => {
      request.on('error', () => {});
      response.on('error', () => {});
      const method = request.method ?? 'GET';
      // A request without a body ends its stream with its HEADERS, as revtun's does.
      const bodyless =
        request.headers['content-length'] === undefined &&
        request.headers['transfer-encoding'] === undefined;
      const stream = session.request(
        {
          ':method': method,
          ':path': request.url ?? '/',
          ':authority': request.headers.host ?? 'localhost',
          ...copyHeaders(request.headers),
        },
        { endStream: bodyless },
      );
      stream.on('error', () => response.destroy());
      stream.on('response', (headers) => {
        const out = copyHeaders(headers);
        response.writeHead(Number(headers[':status']), out);
        pipeline(stream, response).catch(() => response.destroy());
      });
      if (bodyless) request.resume();
      else pipeline(request, stream).catch(() => stream.destroy());
    })
    .listen(Number(port), '127.0.0.1', () => process.stdout.write('listening\n'));
}
