/**
 * A revtun role (responder or initiator) in a child process of its own, so that its memory and fds
 * are its own: the soak (bench/soak.ts) and the backpressure test measure each role apart from the
 * load and the local service they drive. The parent talks to the child over the IPC channel of
 * `fork`: start, tunnels, sample, stop, each answered within a deadline. The child is this file,
 * started with `--role responder|initiator` and `--expose-gc` (so that a sample can be taken after
 * a full collection). A child that loses its parent closes its role and exits; `stop()` closes it
 * and, if it does not exit, kills it by its PID.
 *
 * SOAK_LOG=debug (or info, warn…) lets the roles log to stderr.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { startInitiator, type Initiator } from '../../src/initiator/initiator.ts';
import { startResponder, type Responder } from '../../src/responder/responder.ts';
import type { HostPort } from '../../src/shared/address.ts';
import { settledMemory } from '../security/memory.ts';
import { repoRoot } from './process.ts';

/** The initiator's node and cluster: what requests to the responder's egress listener name. */
export const nodeId = 'soak-node';
export const clusterId = 'soak-cluster';
/** How long a child may take to answer a sample or to start (the initiator waits for its tunnels). */
const callTimeoutMs = 15_000;
/** Grace given to the responder and the initiator when they close, then the wait for the exit. */
const closeGraceMs = 2_000;
const exitTimeoutMs = 5_000;

// ---------------------------------------------------------------------------------------------
// Figures of one process

export interface ProcessFigures {
  readonly rss: number;
  readonly heapUsed: number;
  readonly arrayBuffers: number;
  /**
   * Entries of /proc/self/fd (the one readdir opens included, in every sample alike); NaN where
   * there is no /proc (macOS): the memory figures come from `process.memoryUsage()` everywhere.
   */
  readonly fds: number;
}

/** The process's figures now, or after a full collection (`settledMemory`) when `collect`. */
export async function processFigures(collect: boolean): Promise<ProcessFigures> {
  const { rss, heapUsed, arrayBuffers } = collect ? await settledMemory() : process.memoryUsage();
  return { rss, heapUsed, arrayBuffers, fds: openFds() };
}

function openFds(): number {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return Number.NaN;
  }
}

// ---------------------------------------------------------------------------------------------
// The IPC protocol between the driver and a role

export type RoleName = 'responder' | 'initiator';

export interface InitiatorStart {
  readonly tunnel: HostPort;
  readonly target: string;
  readonly tunnels: number;
}

export type CallBody =
  | {
      readonly type: 'start';
      readonly initiator?: InitiatorStart;
      /** More of the role's config (tcp_listeners, tcp_targets …), over the defaults here. */
      readonly config?: Readonly<Record<string, unknown>>;
    }
  | { readonly type: 'tunnels'; readonly atLeast: number }
  | { readonly type: 'sample'; readonly collect: boolean }
  | { readonly type: 'stop' };

type Call = CallBody & { readonly id: number };

export interface RoleSample extends ProcessFigures {
  /** Responder: tunnels held; initiator: tunnels connected. */
  readonly tunnels: number;
  /** Tunnels closed since the start (responder: tunnel_closed; initiator: connection_closed). */
  readonly tunnelsClosed: number;
}

export interface Answer {
  readonly id: number;
  readonly ok: boolean;
  readonly error?: string;
  readonly sample?: RoleSample;
  readonly egress?: HostPort;
  readonly tunnel?: HostPort;
  /** The responder's TCP listeners, in config order. */
  readonly tcp?: readonly HostPort[];
}

/** The child side: runs one role and answers the driver's calls. */
function runRole(role: RoleName): void {
  const logger = pino(
    { level: process.env['SOAK_LOG'] ?? 'silent', base: { role } },
    pino.destination(2),
  );
  let responder: Responder | undefined;
  let initiator: Initiator | undefined;
  let connected = 0;
  let closed = 0;
  const tunnelWaiters = new Set<() => void>();
  const held = () =>
    responder === undefined
      ? connected - closed
      : responder.tunnels().reduce((sum, node) => sum + node.idle + node.sessions, 0);
  const wake = () => {
    for (const waiter of [...tunnelWaiters]) waiter();
  };
  // With a callback, a parent that is gone is an error passed here, not an 'error' event on
  // `process` that would kill the role: there is no one left to answer.
  const send = (answer: Answer) => process.send?.(answer, undefined, undefined, () => {});

  /** Resolves once `held()` reaches `atLeast`; rejects after `callTimeoutMs`. */
  const tunnelsAtLeast = (atLeast: number) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (held() < atLeast) return;
        finish();
        resolve();
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`${role}: ${held()} tunnels after ${callTimeoutMs} ms, not ${atLeast}`));
      }, callTimeoutMs - 1_000);
      const finish = () => {
        clearTimeout(timer);
        tunnelWaiters.delete(check);
      };
      tunnelWaiters.add(check);
      check();
    });

  const close = async () => {
    await Promise.all([
      responder?.close({ graceMs: closeGraceMs }),
      initiator?.close({ graceMs: closeGraceMs }),
    ]);
  };

  const handle = async (call: Call): Promise<Answer> => {
    switch (call.type) {
      case 'start':
        if (role === 'responder') {
          responder = await startResponder(
            {
              stat_prefix: 'reverse_connections',
              tunnel_listener: { address: '127.0.0.1:0' },
              egress_listeners: [{ address: '127.0.0.1:0' }],
              ...call.config,
            },
            { logger },
          );
          responder.on('tunnel_setup', wake);
          responder.on('tunnel_closed', () => {
            closed += 1;
            wake();
          });
          const { tunnel, egress, tcp } = responder.addresses;
          return { id: call.id, ok: true, tunnel, egress: egress[0] as HostPort, tcp };
        } else {
          const spec = call.initiator as InitiatorStart;
          initiator = await startInitiator(
            {
              node_id: nodeId,
              cluster_id: clusterId,
              tenant_id: 'soak-tenant',
              stat_prefix: 'downstream_reverse_connection',
              remote_clusters: [
                {
                  name: 'upstream-cluster',
                  hosts: [`${spec.tunnel.host}:${spec.tunnel.port}`],
                  tunnels_per_host: spec.tunnels,
                },
              ],
              local_routes: [{ prefix: '/', target: spec.target }],
              ...call.config,
            },
            { logger },
          );
          initiator.on('handshake_success', () => {
            connected += 1;
            wake();
          });
          initiator.on('connection_closed', () => {
            closed += 1;
            wake();
          });
          await tunnelsAtLeast(spec.tunnels);
          return { id: call.id, ok: true };
        }
      case 'tunnels':
        await tunnelsAtLeast(call.atLeast);
        return { id: call.id, ok: true };
      case 'sample': {
        const figures = await processFigures(call.collect);
        return {
          id: call.id,
          ok: true,
          sample: { ...figures, tunnels: held(), tunnelsClosed: closed },
        };
      }
      case 'stop':
        await close();
        return { id: call.id, ok: true };
    }
  };

  // The driver is in charge of stopping: a Ctrl-C reaches the whole process group, and the driver
  // answers it by stopping the load first and then its children.
  process.on('SIGINT', () => {});
  // Once the driver is gone (it disconnects after `stop`, or it died), close and let the event
  // loop drain: a role that keeps it alive after close is what the driver's kill-by-PID reports.
  // The unref'd timer only ends a child whose driver died and cannot kill it.
  process.on('disconnect', () => {
    void close().finally(() => setTimeout(() => process.exit(0), 2 * exitTimeoutMs).unref());
  });
  process.on('message', (call: Call) => {
    handle(call).then(send, (error: unknown) =>
      send({ id: call.id, ok: false, error: String(error) }),
    );
  });
}

/** The driver side of one child. */
export class RoleProcess {
  readonly name: RoleName;
  readonly child: ChildProcess;
  readonly #pending = new Map<number, (answer: Answer) => void>();
  #nextId = 0;
  #exited = false;
  readonly exited: Promise<void>;

  constructor(name: RoleName) {
    this.name = name;
    // Not the parent's execArgv: a test file's process carries the test runner's flags.
    this.child = fork(fileURLToPath(import.meta.url), ['--role', name], {
      cwd: repoRoot,
      execArgv: ['--import', 'tsx', '--expose-gc'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.child.on('message', (answer: Answer) => this.#pending.get(answer.id)?.(answer));
    // A failed spawn or send: the calls waiting for an answer fail with it ('exit' may not follow).
    this.child.on('error', (error) => {
      for (const answer of this.#pending.values()) {
        answer({ id: -1, ok: false, error: `the ${name} process: ${String(error)}` });
      }
    });
    this.exited = new Promise((resolve) =>
      this.child.once('exit', () => {
        this.#exited = true;
        for (const answer of this.#pending.values()) {
          answer({ id: -1, ok: false, error: `the ${name} process exited` });
        }
        resolve();
      }),
    );
  }

  get pid(): number {
    return this.child.pid as number;
  }

  /** Sends a call and resolves with its answer; rejects on an error, the exit, or the deadline. */
  call(call: CallBody, timeoutMs = callTimeoutMs): Promise<Answer> {
    if (this.#exited) return Promise.reject(new Error(`the ${this.name} process has exited`));
    const id = (this.#nextId += 1);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(
          new Error(`the ${this.name} process did not answer "${call.type}" in ${timeoutMs} ms`),
        );
      }, timeoutMs);
      this.#pending.set(id, (answer) => {
        clearTimeout(timer);
        this.#pending.delete(id);
        if (answer.ok) resolve(answer);
        else reject(new Error(`${this.name}: ${answer.error}`));
      });
      this.child.send({ ...call, id });
    });
  }

  async sample(collect = false): Promise<RoleSample> {
    return (await this.call({ type: 'sample', collect })).sample as RoleSample;
  }

  /**
   * Closes the role, then waits for the process to exit; kills it by PID if it does not (which
   * means something of the role's kept the event loop alive after close). Returns how it ended.
   */
  async stop(): Promise<'exited' | 'killed'> {
    if (this.#exited) return 'exited';
    try {
      await this.call({ type: 'stop' }, closeGraceMs + exitTimeoutMs);
    } catch {
      // Reported by the exit below.
    }
    if (this.child.connected) this.child.disconnect();
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'killed'>((resolve) => {
      timer = setTimeout(() => resolve('killed'), exitTimeoutMs);
    });
    const ended = await Promise.race([this.exited.then(() => 'exited' as const), late]);
    clearTimeout(timer);
    if (ended === 'killed') {
      process.kill(this.pid, 'SIGKILL');
      await this.exited;
    }
    return ended;
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const role = process.argv.indexOf('--role');
  runRole(process.argv[role + 1] as RoleName);
}
