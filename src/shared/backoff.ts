/**
 * Reconnect backoff for one responder host: 1, 2, 4, 8, 16, 30, 30 … s after consecutive failures
 * (protocol reference §4; Envoy rc_connection_wrapper.cc), each delay plus up to 15 % jitter
 * (Envoy #45683). A success resets the failure count — always, unlike Envoy (reference §12 #8).
 */
export interface BackoffOptions {
  /** First delay, ms. Envoy: 1 s. */
  readonly baseMs: number;
  /** Cap, ms (`max_reconnect_backoff`). Envoy default 30 s, minimum 1 s. */
  readonly maxMs: number;
  /** Extra random delay, up to this fraction of the delay (0.15 adds 0–15 %). */
  readonly jitter: number;
  readonly random?: () => number;
}

export class Backoff {
  readonly #options: BackoffOptions;
  #failures = 0;

  constructor(options: BackoffOptions) {
    this.#options = options;
  }

  get failures(): number {
    return this.#failures;
  }

  /**
   * Records a failure and returns how long to wait before the next attempt, in ms. `atBase` keeps
   * the delay at the first step however many failures there were (a host that was just working).
   */
  fail(options: { readonly atBase?: boolean } = {}): number {
    this.#failures += 1;
    const { baseMs, maxMs, jitter, random = Math.random } = this.#options;
    const exponent = options.atBase === true ? 0 : Math.min(this.#failures - 1, 30);
    const delay = Math.min(maxMs, baseMs * 2 ** exponent);
    return Math.round(delay * (1 + jitter * random()));
  }

  reset(): void {
    this.#failures = 0;
  }
}
