/** haproxy as a one-hop HTTP proxy, one thread, server-side connection reuse. */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { freePort } from '../lib/net.ts';
import { start } from '../lib/processes.ts';
import { runningPeer, type Contender } from './contender.ts';

export const haproxy: Contender = {
  name: 'haproxy',
  description: 'haproxy one-hop mode http, nbthread 1, http-reuse safe',
  tools: ['haproxy'],
  role: 'peer',
  async start({ origin, workDir, tools }) {
    const dir = path.join(workDir, 'haproxy');
    await mkdir(dir, { recursive: true });
    const port = await freePort();
    const conf = `global
  # Each connection is two fds; haproxy refuses to start if it cannot have 2 × maxconn.
  maxconn 8000
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  option http-keep-alive
frontend bench
  bind 127.0.0.1:${port}
  default_backend origin
backend origin
  http-reuse safe
  server origin 127.0.0.1:${origin.port} maxconn 8000
`;
    const confFile = path.join(dir, 'haproxy.cfg');
    await writeFile(confFile, conf);
    const proc = start('haproxy', tools.get('haproxy') ?? 'haproxy', ['-db', '-f', confFile]);
    return runningPeer(
      'haproxy',
      `http://127.0.0.1:${port}`,
      [proc.pid],
      () => proc.stop(),
      () => `haproxy: ${proc.output()}`,
    );
  },
};
