/**
 * revtun: a responder and an initiator, each `revtun … --config FILE` in its own process, with the
 * default config (one tunnel, loopback, no TLS); callers send to the egress listener with
 * `x-node-id`. The egress listener speaks HTTP/1.1 only (HTTP/2 egress is issue 7).
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitForBody } from '../lib/net.ts';
import { smallBody } from '../lib/origin.ts';
import { start, type Started } from '../lib/processes.ts';
import { stopEach, type Contender, type Running } from './contender.ts';

export const cliMain = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
export const benchNode = 'bench-node';

/**
 * How revtun is run: from source through tsx (as the README does), or, with
 * BENCH_REVTUN_MAIN=dist/cli/main.js (after `npm run build`), the compiled JavaScript, to tell the
 * cost of tsx's hooks apart from revtun's own.
 */
function revtunCommand(): string[] {
  // Extra node flags for both roles, e.g. BENCH_REVTUN_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/p"
  // (--cpu-prof is not allowed in NODE_OPTIONS).
  const nodeArgs = (process.env.BENCH_REVTUN_NODE_ARGS ?? '')
    .split(' ')
    .filter((arg) => arg !== '');
  const main = process.env.BENCH_REVTUN_MAIN;
  if (main === undefined || main === '') return [...nodeArgs, '--import', 'tsx', cliMain];
  return main.endsWith('.ts') ? [...nodeArgs, '--import', 'tsx', main] : [...nodeArgs, main];
}

/** `revtun ROLE --config FILE` in a process of its own. */
export function revtunProcess(
  name: string,
  role: string,
  configFile: string,
  nofile?: number,
): Started {
  return start(
    name,
    process.execPath,
    [...revtunCommand(), role, '--config', configFile, '--log-level', 'warn'],
    nofile === undefined ? {} : { nofile },
  );
}

export async function startRevtunResponder(
  dir: string,
  name: string,
  tunnelAddress = '127.0.0.1:0',
  nofile?: number,
): Promise<{ process: Started; tunnel: number; egress: number; admin: number }> {
  const configFile = path.join(dir, `${name}.yaml`);
  // JSON is YAML.
  await writeFile(
    configFile,
    JSON.stringify({
      stat_prefix: 'reverse_connections',
      admin: { address: '127.0.0.1:0' },
      tunnel_listener: { address: tunnelAddress },
      egress_listeners: [{ address: '127.0.0.1:0' }],
    }),
  );
  const proc = revtunProcess(name, 'responder', configFile, nofile);
  try {
    const tunnel = await proc.waitForOutput(/tunnel listener 127\.0\.0\.1:(\d+)/);
    const egress = await proc.waitForOutput(/egress listener http:\/\/127\.0\.0\.1:(\d+)/);
    const admin = await proc.waitForOutput(/admin http:\/\/127\.0\.0\.1:(\d+)\/stats/);
    return {
      process: proc,
      tunnel: Number(tunnel[1]),
      egress: Number(egress[1]),
      admin: Number(admin[1]),
    };
  } catch (error) {
    await proc.stop();
    throw error;
  }
}

export const revtun: Contender = {
  name: 'revtun',
  description: 'revtun responder + initiator, default config (1 tunnel)',
  tools: [],
  role: 'subject',
  async start(context): Promise<Running> {
    const stops: (() => Promise<void>)[] = [];
    try {
      const responder = await startRevtunResponder(context.workDir, 'revtun-responder');
      stops.push(() => responder.process.stop());
      const initiatorConfig = path.join(context.workDir, 'revtun-initiator.yaml');
      await writeFile(
        initiatorConfig,
        JSON.stringify({
          node_id: benchNode,
          cluster_id: 'bench-cluster',
          tenant_id: 'bench-tenant',
          stat_prefix: 'downstream_reverse_connection',
          remote_clusters: [{ name: 'responder', hosts: [`127.0.0.1:${responder.tunnel}`] }],
          local_routes: [{ prefix: '/', target: context.origin.url }],
        }),
      );
      const initiator = revtunProcess('revtun initiator', 'initiator', initiatorConfig);
      stops.push(() => initiator.stop());
      const url = `http://127.0.0.1:${responder.egress}`;
      const headers = { 'x-node-id': benchNode };
      await waitForBody(`${url}/small`, headers, smallBody.trim(), 'revtun').catch(
        (error: Error) => {
          throw new Error(
            `${error.message}\nresponder: ${responder.process.output()}\ninitiator: ${initiator.output()}`,
          );
        },
      );
      return {
        url,
        headers,
        // h2load is tried anyway: the runner reports it unavailable if nothing succeeds.
        h2: { url },
        pids: [responder.process.pid, initiator.pid],
        stop: () => stopEach(stops),
      };
    } catch (error) {
      await stopEach(stops);
      throw error;
    }
  },
};
