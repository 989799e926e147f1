/**
 * Bounds, not peers: Node's own HTTP stacks with nothing else (node-floor-main.ts). `node-proxy`
 * is one `node:http` → undici hop; `node-h2-chain` is revtun's data path bare — `node:http` →
 * one `node:http2` session → `node:http2` server → undici, in two processes like the two roles.
 * revtun cannot beat `node-h2-chain` on req/s or CPU per request; the gap between them is what
 * revtun's own code costs.
 */
import { fileURLToPath } from 'node:url';
import { freePort } from '../lib/net.ts';
import { start } from '../lib/processes.ts';
import { runningPeer, stopEach, type Contender, type Running } from './contender.ts';

const main = fileURLToPath(new URL('./node-floor-main.ts', import.meta.url));

function floorProcess(name: string, mode: string, port: number, next: number) {
  return start(name, process.execPath, ['--import', 'tsx', main, mode, String(port), String(next)]);
}

export const nodeProxy: Contender = {
  name: 'node-proxy',
  description: 'bound: a bare node:http server proxying through an undici pool (one hop)',
  tools: [],
  role: 'bound',
  async start({ origin }): Promise<Running> {
    const port = await freePort();
    const proxy = floorProcess('node-proxy', 'proxy', port, origin.port);
    try {
      await proxy.waitForOutput(/^listening$/m);
      return await runningPeer(
        'node-proxy',
        `http://127.0.0.1:${port}`,
        [proxy.pid],
        () => proxy.stop(),
        () => `node-proxy: ${proxy.output()}`,
      );
    } catch (error) {
      await proxy.stop();
      throw error;
    }
  },
};

export const nodeH2Chain: Contender = {
  name: 'node-h2-chain',
  description:
    "bound: revtun's data path bare, node:http → one node:http2 session → node:http2 → undici, two processes",
  tools: [],
  role: 'bound',
  async start({ origin }): Promise<Running> {
    const stops: (() => Promise<void>)[] = [];
    try {
      const backPort = await freePort();
      const back = floorProcess('node-h2-chain back', 'back', backPort, origin.port);
      stops.push(() => back.stop());
      await back.waitForOutput(/^listening$/m);
      const frontPort = await freePort();
      const front = floorProcess('node-h2-chain front', 'front', frontPort, backPort);
      stops.push(() => front.stop());
      await front.waitForOutput(/^listening$/m);
      return await runningPeer(
        'node-h2-chain',
        `http://127.0.0.1:${frontPort}`,
        [front.pid, back.pid],
        () => stopEach(stops),
        () => `front: ${front.output()}\nback: ${back.output()}`,
      );
    } catch (error) {
      await stopEach(stops);
      throw error;
    }
  },
};
