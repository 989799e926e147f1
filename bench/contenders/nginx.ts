/**
 * nginx as a one-hop reverse proxy (one worker), with a keep-alive upstream pool, and neither
 * request nor response spooled to disk (else the 1 GiB figures measure the temp files).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { nginxHttpCommon, nginxPreamble } from '../lib/origin.ts';
import { freePort } from '../lib/net.ts';
import { start } from '../lib/processes.ts';
import { runningPeer, type Contender } from './contender.ts';

export const nginx: Contender = {
  name: 'nginx',
  description: 'nginx one-hop proxy_pass, 1 worker, upstream keepalive',
  tools: ['nginx'],
  role: 'peer',
  async start({ origin, workDir, tools }) {
    const dir = path.join(workDir, 'nginx-proxy');
    await mkdir(dir, { recursive: true });
    const port = await freePort();
    const conf = `${nginxPreamble(dir)}
http {
${nginxHttpCommon(dir)}
  upstream origin { server 127.0.0.1:${origin.port}; keepalive 512; }
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_request_buffering off;
      proxy_max_temp_file_size 0;
    }
  }
}
`;
    const confFile = path.join(dir, 'nginx.conf');
    await writeFile(confFile, conf);
    const proc = start('nginx proxy', tools.get('nginx') ?? 'nginx', ['-p', dir, '-c', confFile]);
    return runningPeer(
      'nginx proxy',
      `http://127.0.0.1:${port}`,
      [proc.pid],
      () => proc.stop(),
      () => `nginx: ${proc.output()}`,
    );
  },
};
