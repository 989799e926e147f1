/**
 * The `tunnel up: …` / `tunnel down: …` lines a running role prints on stdout, bounded: a responder
 * that 10,000 initiators dial at once must not print 10,000 lines. In each window of 10 s the first
 * 20 changes are printed one by one; the rest are counted and summed up in one line when the window
 * ends. A quiet role thus prints every change, as it happens.
 */
import type { Initiator } from '../initiator/initiator.ts';
import type { Responder } from '../responder/responder.ts';

export const linesPerWindow = 20;
export const windowMs = 10_000;

export class TunnelLines {
  readonly #print: (line: string) => void;
  readonly #windowMs: number;
  #printed = 0;
  #quietUp = 0;
  #quietDown = 0;
  #timer: NodeJS.Timeout | undefined;
  /** Tunnels up now, for the summary line. */
  open = 0;

  constructor(print: (line: string) => void, options: { windowMs?: number } = {}) {
    this.#print = print;
    this.#windowMs = options.windowMs ?? windowMs;
  }

  up(description: string): void {
    this.open += 1;
    if (this.#admit()) this.#print(`tunnel up: ${description}`);
    else this.#quietUp += 1;
  }

  down(description: string, reason: string): void {
    this.open = Math.max(0, this.open - 1);
    if (this.#admit()) this.#print(`tunnel down: ${description} (${reason})`);
    else this.#quietDown += 1;
  }

  /** Ends the window now: the summary of what was not printed, if anything. */
  endWindow(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#quietUp + this.#quietDown > 0) {
      this.#print(
        `tunnels: ${this.#quietUp} more up, ${this.#quietDown} more down in the last ${this.#windowMs / 1000} s; ${this.open} open`,
      );
    }
    this.#printed = 0;
    this.#quietUp = 0;
    this.#quietDown = 0;
  }

  /** Stops the window's timer (a stopping role prints no summary after its last lines). */
  close(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #admit(): boolean {
    if (this.#timer === undefined) {
      this.#timer = setTimeout(() => this.endWindow(), this.#windowMs);
      this.#timer.unref();
    }
    this.#printed += 1;
    return this.#printed <= linesPerWindow;
  }
}

/** `tunnel up: node n1 (cluster c1, tenant t1) #3` for each tunnel a responder accepts. */
export function printResponderTunnels(responder: Responder, lines: TunnelLines): void {
  responder.on('lifecycle', (record) => {
    const what = `node ${String(record['node_id'])} (cluster ${String(record['cluster_id'])}, tenant ${String(record['tenant_id'])}) #${String(record['fd'])}`;
    if (record.event === 'tunnel_setup') lines.up(what);
    else if (record.event === 'tunnel_closed') lines.down(what, String(record['close_reason']));
  });
}

/**
 * `tunnel up: upstream-cluster 127.0.0.1:9000 #1` for each handshake an initiator completes, and
 * `tunnel down` when such a tunnel closes (not for connections whose handshake failed).
 */
export function printInitiatorTunnels(initiator: Initiator, lines: TunnelLines): void {
  const up = new Set<string>();
  initiator.on('lifecycle', (record) => {
    const id = `${String(record['upstream_cluster'])} ${String(record['host_address'])} #${String(record['connection_id'])}`;
    if (record.event === 'handshake_success') {
      up.add(id);
      lines.up(id);
    } else if (record.event === 'connection_closed' && up.delete(id)) {
      lines.down(id, String(record['close_reason']));
    }
  });
}
