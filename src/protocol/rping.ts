/**
 * RPING, the idle-phase keepalive (protocol reference §5). A ping and its echo are the same five
 * raw bytes, `RPING` (52 50 49 4E 47), with no framing; only an exact 5-byte match counts.
 * Sources: envoy brt/common/rping_interceptor.cc and brt/upstream_socket_interface/
 * upstream_socket_manager.cc. Pure state machines, fed bytes by the socket code.
 */

export const RPING = Buffer.from('RPING', 'latin1');
const PING_LENGTH = RPING.length;

/**
 * Flood guard: at most 64 KiB of echoes per window (Envoy resets the budget whenever a read would
 * block; Node has no such signal, so the budget is per second, reference §5 "Node.js
 * consequences"). As in Envoy's rping_interceptor.cc, the echo that brings the window to 64 KiB
 * (the 13 108th) trips the guard.
 */
export const echoBudgetBytes = 64 * 1024;
export const echoBudgetWindowMs = 1000;

export interface InterceptResult {
  /** Complete leading RPINGs stripped from the input; write one echo for each. */
  readonly echoes: number;
  /** Data for HTTP/2, from the first byte that is not part of an RPING on; null while idle. */
  readonly data: Buffer | null;
  /** The echo budget is exhausted: reset the connection (the caller need not write `echoes`). */
  readonly flood: boolean;
}

/**
 * The initiator's echo-mode reader. It strips and counts every complete leading `RPING`, holds a
 * partial prefix until the next chunk completes or breaks it, and latches off for good at the first
 * byte that cannot continue an `RPING`: that byte, any held prefix before it and everything after
 * it (literal `RPING`s included) are data.
 */
export class RpingInterceptor {
  #held = 0;
  #latched = false;
  #windowStart = -Infinity;
  #windowBytes = 0;

  /** True once data has been seen: echo mode is over and the socket belongs to HTTP/2. */
  get latched(): boolean {
    return this.#latched;
  }

  /** Number of bytes of a partial `RPING` held back (0–4). */
  get held(): number {
    return this.#held;
  }

  feed(chunk: Buffer, nowMs: number): InterceptResult {
    if (this.#latched) return { echoes: 0, data: chunk, flood: false };
    if (nowMs - this.#windowStart >= echoBudgetWindowMs) {
      this.#windowStart = nowMs;
      this.#windowBytes = 0;
    }
    let echoes = 0;
    for (let i = 0; i < chunk.length; i += 1) {
      if (chunk[i] === RPING[this.#held]) {
        this.#held += 1;
        if (this.#held === PING_LENGTH) {
          this.#held = 0;
          echoes += 1;
          this.#windowBytes += PING_LENGTH;
          if (this.#windowBytes >= echoBudgetBytes) return { echoes, data: null, flood: true };
        }
        continue;
      }
      this.#latched = true;
      const held = RPING.subarray(0, this.#held);
      this.#held = 0;
      const rest = chunk.subarray(i);
      return { echoes, data: held.length === 0 ? rest : Buffer.concat([held, rest]), flood: false };
    }
    return { echoes, data: null, flood: false };
  }
}

export interface EchoReadResult {
  /** Complete echoes received. */
  readonly echoes: number;
  /** A byte that cannot be part of an echo arrived: the idle tunnel is broken. */
  readonly violation: boolean;
}

/**
 * The responder's idle-phase reader: counts complete `RPING` echoes and holds a split one. Any
 * other byte is a protocol violation; Envoy counts it as a miss and discards it, which corrupts a
 * later HTTP/2 connection, so revtun closes instead (reference §12 #7, `idle_protocol_error`).
 */
export class RpingEchoReader {
  #held = 0;

  /** Bytes of a partial echo held back (0–4): the echo is still owed in part. */
  get held(): number {
    return this.#held;
  }

  feed(chunk: Buffer): EchoReadResult {
    let echoes = 0;
    for (let i = 0; i < chunk.length; i += 1) {
      if (chunk[i] !== RPING[this.#held]) return { echoes, violation: true };
      this.#held += 1;
      if (this.#held === PING_LENGTH) {
        this.#held = 0;
        echoes += 1;
      }
    }
    return { echoes, violation: false };
  }
}
