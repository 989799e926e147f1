/**
 * The origin every contender forwards to: one nginx (one worker) serving a small body at /small,
 * a large static file at /files/large.bin, and passing uploads at /upload to a sink that reads
 * them to the end before it answers (upload-sink-main.ts); plus an h2c listener
 * (HTTP/2 with prior knowledge) for the direct HTTP/2 reference.
 */
import { mkdir, open, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, waitForBody } from './net.ts';
import { start, type Started } from './processes.ts';

const sinkMain = fileURLToPath(new URL('./upload-sink-main.ts', import.meta.url));

export const smallBody = 'revtun bench origin: a small body\n';

export interface Origin {
  readonly port: number;
  readonly h2Port: number;
  readonly url: string;
  readonly largeFile: string;
  readonly largeBytes: number;
  readonly process: Started;
  readonly sink: Started;
  stop(): Promise<void>;
}

/** nginx's temp paths and pid in `dir`, shared by the origin and the nginx contender. */
export function nginxPreamble(dir: string): string {
  return `
user root;
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 20000; }
`;
}

export function nginxHttpCommon(dir: string): string {
  return `
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_max_body_size 0;
`;
}

export async function startOrigin(
  workDir: string,
  nginx: string,
  largeBytes: number,
): Promise<Origin> {
  const dir = path.join(workDir, 'origin');
  await mkdir(path.join(dir, 'files'), { recursive: true });
  const largeFile = path.join(dir, 'files', 'large.bin');
  // Sparse: reading it costs no disk, so the figure is the path's, not the disk's.
  const handle = await open(largeFile, 'w');
  await handle.truncate(largeBytes);
  await handle.close();
  const port = await freePort();
  const h2Port = await freePort();
  const sinkPort = await freePort();
  const sink = start('origin upload sink', process.execPath, [
    '--import',
    'tsx',
    sinkMain,
    String(sinkPort),
  ]);
  await sink.waitForOutput(/^listening/m);
  const locations = `
    location = /small { default_type text/plain; return 200 '${smallBody.trimEnd()}\\n'; }
    location /files/ { root ${dir}; sendfile on; tcp_nopush on; }
    location = /upload {
      proxy_pass http://sink;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_request_buffering off;
    }
`;
  const conf = `${nginxPreamble(dir)}
http {
${nginxHttpCommon(dir)}
  upstream sink { server 127.0.0.1:${sinkPort}; keepalive 16; }
  server { listen 127.0.0.1:${port} reuseport backlog=4096; ${locations} }
  server { listen 127.0.0.1:${h2Port} http2; ${locations} }
}
`;
  const confFile = path.join(dir, 'nginx.conf');
  await writeFile(confFile, conf);
  const server = start('origin nginx', nginx, ['-p', dir, '-c', confFile]);
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitForBody(`${url}/small`, {}, smallBody.trim(), 'origin nginx');
  } catch (error) {
    await server.stop();
    await sink.stop();
    throw error;
  }
  const stop = async () => {
    await server.stop();
    await sink.stop();
  };
  return { port, h2Port, url, largeFile, largeBytes, process: server, sink, stop };
}
