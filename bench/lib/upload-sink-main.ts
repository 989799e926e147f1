/**
 * The origin's upload sink, in a process of its own: reads a request body to its end, counting the
 * bytes, and only then answers `received N`. The origin nginx proxies /upload here unbuffered:
 * nginx's own `return` answers before the body arrives and discards it behind the response, so an
 * upload through a tunnel would be timed against an answer that came early.
 *   node --import tsx bench/lib/upload-sink-main.ts PORT
 */
import http from 'node:http';

const port = Number(process.argv[2]);
const server = http.createServer((request, response) => {
  let bytes = 0;
  request.on('data', (chunk: Buffer) => (bytes += chunk.length));
  request.on('end', () => {
    response.writeHead(200, { 'content-type': 'text/plain' });
    response.end(`received ${bytes}\n`);
  });
  request.on('error', () => response.destroy());
});
server.keepAliveTimeout = 300_000;
server.listen(port, '127.0.0.1', () => process.stdout.write(`listening ${port}\n`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
