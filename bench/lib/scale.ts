/**
 * revtun's scale figures, each with a responder in its own process and the tunnel holder
 * (tunnel-holder-main.ts) as the initiators' process:
 *  - responder RSS per idle tunnel, with N tunnels up: (RSS with N − RSS with none) / N;
 *  - tunnels established per second: N / time from the holder's first dial to N at the responder;
 *  - recovery: M initiators with one tunnel each, the responder SIGKILLed and restarted on the
 *    same tunnel port; the time from the new one listening to all M nodes back (as
 *    test/e2e/recovery.test.ts does for 200).
 * Tunnels are counted from the responder's admin /stats (`reverse_connections.nodes.<id>`).
 */
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { startRevtunResponder } from '../contenders/revtun.ts';
import { freePort, get } from './net.ts';
import { nofileFor, rssBytes, start, type Started } from './processes.ts';

const holderMain = fileURLToPath(new URL('./tunnel-holder-main.ts', import.meta.url));
/** tunnels_per_host is at most 1024; one initiator holds at most this many here. */
const tunnelsPerInitiator = 1000;
/** Open files beyond the tunnels' a process keeps (modules, listeners, pipes). */
const spareFds = 1024;

/** The open-files limit for processes holding `sockets` sockets; throws if it cannot be had. */
async function nofileForSockets(sockets: number): Promise<number | undefined> {
  const { nofile, short } = await nofileFor(sockets + spareFds);
  if (short !== undefined)
    throw new Error(`${short}: raise the hard limit (ulimit -Hn, as root) to run this figure`);
  return nofile;
}

/** Tunnels and nodes the responder reports now. */
export async function responderTunnels(
  adminPort: number,
): Promise<{ tunnels: number; nodes: number }> {
  const reply = await get(`http://127.0.0.1:${adminPort}/stats`, {}, 5_000);
  let tunnels = 0;
  let nodes = 0;
  for (const match of reply.body.matchAll(/^reverse_connections\.nodes\.[^:\s]+: (\d+)$/gm)) {
    const value = Number(match[1]);
    tunnels += value;
    if (value > 0) nodes += 1;
  }
  return { tunnels, nodes };
}

async function until(
  what: string,
  adminPort: number,
  done: (state: { tunnels: number; nodes: number }) => boolean,
  timeoutMs: number,
): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let last = { tunnels: 0, nodes: 0 };
  while (Date.now() < deadline) {
    try {
      last = await responderTunnels(adminPort);
      if (done(last)) return Date.now();
    } catch {
      // A responder being restarted does not answer for a moment.
    }
    await sleep(50);
  }
  throw new Error(
    `${what}: not reached in ${timeoutMs} ms (last seen ${last.tunnels} tunnels, ${last.nodes} nodes)`,
  );
}

function holder(
  tunnelPort: number,
  count: number,
  tunnels: number,
  originUrl: string,
  nofile: number | undefined,
): Started {
  return start(
    'tunnel holder',
    process.execPath,
    ['--import', 'tsx', holderMain, String(tunnelPort), String(count), String(tunnels), originUrl],
    nofile === undefined ? {} : { nofile },
  );
}

export interface TunnelFigures {
  readonly tunnels: number;
  readonly rssIdleBytes: number;
  readonly rssWithTunnelsBytes: number;
  readonly rssPerTunnelBytes: number;
  readonly establishSeconds: number;
  readonly tunnelsPerSecond: number;
}

export async function measureTunnels(
  workDir: string,
  tunnels: number,
  originUrl: string,
  settleSeconds: number,
): Promise<TunnelFigures> {
  const nofile = await nofileForSockets(tunnels);
  const responder = await startRevtunResponder(workDir, 'scale-responder', '127.0.0.1:0', nofile);
  let load: Started | undefined;
  try {
    await sleep(1_000);
    const rssIdleBytes = await rssBytes(responder.process.pid);
    const count = Math.ceil(tunnels / tunnelsPerInitiator);
    const each = Math.ceil(tunnels / count);
    load = holder(responder.tunnel, count, each, originUrl, nofile);
    await load.waitForOutput(/^dialling$/m, 30_000);
    const dialledAt = Date.now();
    const upAt = await until(
      `${count * each} tunnels up`,
      responder.admin,
      (s) => s.tunnels >= count * each,
      300_000,
    );
    // Idle: past RPING intervals (2 s) so that what is counted is what an idle tunnel keeps.
    await sleep(settleSeconds * 1000);
    const rssWithTunnelsBytes = await rssBytes(responder.process.pid);
    const establishSeconds = (upAt - dialledAt) / 1000;
    return {
      tunnels: count * each,
      rssIdleBytes,
      rssWithTunnelsBytes,
      rssPerTunnelBytes: (rssWithTunnelsBytes - rssIdleBytes) / (count * each),
      establishSeconds,
      tunnelsPerSecond: (count * each) / establishSeconds,
    };
  } finally {
    await load?.stop();
    await responder.process.stop();
  }
}

export interface RecoveryFigures {
  readonly initiators: number;
  /** From the restarted responder printing its tunnel listener to every node back. */
  readonly recoverySeconds: number;
  /** From the SIGKILL to every node back. */
  readonly sinceKillSeconds: number;
}

export async function measureRecovery(
  workDir: string,
  initiators: number,
  originUrl: string,
): Promise<RecoveryFigures> {
  const port = await freePort();
  const address = `127.0.0.1:${port}`;
  const nofile = await nofileForSockets(initiators);
  let responder = await startRevtunResponder(workDir, 'recovery-responder-1', address, nofile);
  const load = holder(port, initiators, 1, originUrl, nofile);
  try {
    await until(
      `${initiators} initiators up`,
      responder.admin,
      (s) => s.nodes >= initiators,
      300_000,
    );
    const killedAt = Date.now();
    process.kill(-responder.process.pid, 'SIGKILL');
    await responder.process.stop();
    responder = await startRevtunResponder(workDir, 'recovery-responder-2', address, nofile);
    const listeningAt = Date.now();
    const backAt = await until(
      `${initiators} initiators back`,
      responder.admin,
      (s) => s.nodes >= initiators,
      300_000,
    );
    return {
      initiators,
      recoverySeconds: (backAt - listeningAt) / 1000,
      sinceKillSeconds: (backAt - killedAt) / 1000,
    };
  } finally {
    await load.stop();
    await responder.process.stop();
  }
}
