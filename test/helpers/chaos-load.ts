/**
 * The two ends of test/system/chaos.test.ts, each run in a network namespace with
 * `ip netns exec NS node --import tsx test/helpers/chaos-load.ts …`:
 *
 * - `service PORT`: the initiator host's local service on 127.0.0.1:PORT. `POST /echo` answers 200
 *   with the request body and its SHA-256 in `x-sha256`; `GET /slow?ms=N` prints `slow request
 *   started` and answers 200 `slow done` after N ms. Prints `listening` once up.
 * - `load URL HOST_ID DURATION_MS CONCURRENCY DEADLINE_MS [BIG_BYTES]`: for DURATION_MS,
 *   CONCURRENCY loops POST random bodies (0–32 KiB) to URL/echo with `x-cluster-id: HOST_ID` and
 *   check the echoed body's checksum; with BIG_BYTES, the first loop sends bodies of exactly that
 *   many bytes instead. Prints one JSON line per request (`{"start","end","bytes","kind","status"?,"error"?}`, times
 *   in ms since the epoch) and a last line `{"done":true}`. A request not answered within
 *   DEADLINE_MS is cut off and counted `hang`; so the script ends within DURATION_MS + DEADLINE_MS.
 */
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { setTimeout as delay } from 'node:timers/promises';

export type LoadKind = 'ok' | 'bad_checksum' | 'status' | 'error' | 'hang';

export interface LoadResult {
  readonly start: number;
  readonly end: number;
  /** The request body's length. */
  readonly bytes: number;
  readonly kind: LoadKind;
  readonly status?: number;
  readonly error?: string;
}

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

function readBody(stream: NodeJS.ReadableStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('error', reject);
    stream.on('aborted', () => reject(new Error('aborted')));
  });
}

function service(port: number): void {
  const server = http.createServer((request, response) => {
    const url = new URL(request.url ?? '/', 'http://localhost');
    if (request.method === 'POST' && url.pathname === '/echo') {
      readBody(request).then(
        (body) => {
          response.writeHead(200, {
            'content-type': 'application/octet-stream',
            'content-length': body.length,
            'x-sha256': sha256(body),
          });
          response.end(body);
        },
        () => response.destroy(),
      );
      return;
    }
    if (url.pathname === '/slow') {
      process.stdout.write('slow request started\n');
      const timer = setTimeout(() => response.end('slow done'), Number(url.searchParams.get('ms')));
      response.on('close', () => clearTimeout(timer));
      return;
    }
    response.writeHead(url.pathname === '/ok' ? 200 : 404).end(url.pathname);
  });
  server.listen(port, '127.0.0.1', () => process.stdout.write('listening\n'));
}

function once(
  url: URL,
  hostId: string,
  agent: http.Agent,
  deadlineMs: number,
  bodyBytes: number,
): Promise<LoadResult> {
  const body = randomBytes(bodyBytes);
  const start = Date.now();
  return new Promise((resolve) => {
    let settled = false;
    const settle = (result: Omit<LoadResult, 'start' | 'end' | 'bytes'>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ start, end: Date.now(), bytes: body.length, ...result });
    };
    const request = http.request(url, {
      method: 'POST',
      agent,
      headers: { 'x-cluster-id': hostId, 'content-length': body.length },
    });
    const timer = setTimeout(() => {
      settle({ kind: 'hang' });
      request.destroy();
    }, deadlineMs);
    request.on('error', (error) => settle({ kind: 'error', error: error.message }));
    request.on('response', (response) => {
      readBody(response).then(
        (received) => {
          const status = response.statusCode ?? 0;
          if (status !== 200) settle({ kind: 'status', status, error: received.toString().trim() });
          else if (
            sha256(received) !== sha256(body) ||
            response.headers['x-sha256'] !== sha256(body)
          )
            settle({ kind: 'bad_checksum', status });
          else settle({ kind: 'ok', status });
        },
        (error: Error) =>
          settle({ kind: 'error', status: response.statusCode ?? 0, error: error.message }),
      );
    });
    request.end(body);
  });
}

async function load(
  base: string,
  hostId: string,
  durationMs: number,
  concurrency: number,
  deadlineMs: number,
  bigBytes: number | undefined,
): Promise<void> {
  const url = new URL('/echo', base);
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const until = Date.now() + durationMs;
  const worker = async (index: number) => {
    while (Date.now() < until) {
      const bytes =
        index === 0 && bigBytes !== undefined ? bigBytes : Math.floor(Math.random() * 32 * 1024);
      const result = await once(url, hostId, agent, deadlineMs, bytes);
      process.stdout.write(`${JSON.stringify(result)}\n`);
      // Not a hot loop of 503s while the tunnel is down; a short pause between successes too.
      await delay(result.kind === 'ok' ? 2 : 25);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, (_, index) => worker(index)));
  agent.destroy();
  process.stdout.write(`${JSON.stringify({ done: true })}\n`);
}

if (process.argv[1]?.endsWith('chaos-load.ts') === true) {
  const [mode, ...args] = process.argv.slice(2);
  if (mode === 'service') service(Number(args[0]));
  else if (mode === 'load') {
    const [base = '', hostId = '', duration, concurrency, deadline, big] = args;
    const bigBytes = big === undefined ? undefined : Number(big);
    await load(base, hostId, Number(duration), Number(concurrency), Number(deadline), bigBytes);
  } else {
    process.stderr.write(
      'usage: chaos-load.ts service PORT | load URL HOST_ID MS N DEADLINE_MS [BIG_BYTES]\n',
    );
    process.exit(2);
  }
}
