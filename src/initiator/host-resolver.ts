/**
 * Keeps one member (a HostDialler) per address a configured host name resolves to, so that every
 * initiator dials every responder behind the name and any responder can reach any initiator
 * (architecture decision 7). The name is resolved at start and every `resolve_interval`; a new
 * address gets a member, a vanished one is retired (its dialler stops dialling and drains: idle
 * tunnels close, active ones get GOAWAY and finish their streams). As Envoy's STRICT_DNS cluster,
 * the hosts are the addresses: each member is named `address:port` in stats and logs.
 *
 * A failed resolution keeps the current set and is retried at the next interval; an answer with no
 * address counts as failed, so a DNS hiccup never retires every responder. When the very first
 * resolution fails there is no set yet: the name itself becomes the only member and is dialled as
 * before this resolver existed (the socket resolves it at each dial; a name that does not resolve
 * is `cannot_connect`, with backoff) until a later resolution replaces it with the addresses.
 */
import dns, { type LookupAddress } from 'node:dns';
import net from 'node:net';
import { formatHostPort, type HostPort } from '../shared/address.ts';
import { describeError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';

/**
 * Resolves a host name to all its addresses, with the contract of
 * `dns.promises.lookup(hostname, { all: true })`: rejects when the name does not resolve.
 */
export type HostLookup = (hostname: string) => Promise<readonly LookupAddress[]>;

/** The operating system's resolver (getaddrinfo: /etc/hosts, then DNS), as `net.connect` uses. */
export const systemLookup: HostLookup = (hostname) => dns.promises.lookup(hostname, { all: true });

/** Default cap on one lookup (below `resolve_interval` when that is shorter). */
export const lookupTimeoutMs = 10_000;

export interface HostResolverOptions<M> {
  /** The remote cluster, for logs. */
  readonly cluster: string;
  /** The configured entry: a name, not an IP literal, and the port every address is dialled on. */
  readonly host: HostPort;
  /** Time from the end of one resolution to the start of the next, ms. */
  readonly intervalMs: number;
  readonly lookup: HostLookup;
  /** Deadline of one lookup, ms; a later answer counts as a failure (and is ignored). */
  readonly lookupTimeoutMs?: number;
  readonly logger: Logger;
  /** Creates and starts the member dialling `target`: an address, or the name itself (see above). */
  readonly add: (target: HostPort) => M;
  /** Retires a member whose address left the answer; the resolver forgets it at once. */
  readonly retire: (member: M) => void;
}

export class HostResolver<M> {
  readonly #options: HostResolverOptions<M>;
  readonly #name: string;
  /** By `address:port` (or the configured `name:port` before the first successful resolution). */
  readonly #members = new Map<string, M>();
  #timer: NodeJS.Timeout | undefined;
  #resolving: Promise<void> | undefined;
  #closed = false;
  /** Ends the pending lookup's wait when the resolver closes. */
  readonly #abort = new AbortController();

  constructor(options: HostResolverOptions<M>) {
    this.#options = options;
    this.#name = formatHostPort(options.host);
  }

  /** What is dialled now: `address:port` of every member, in the order they were added. */
  get targets(): string[] {
    return [...this.#members.keys()];
  }

  /** The first resolution; never rejects (a failure dials the name itself, see above). */
  start(): Promise<void> {
    return this.refresh();
  }

  /**
   * Resolves now and applies the answer; joins a resolution already in flight. The next periodic
   * one runs `intervalMs` after this one ends.
   */
  refresh(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#resolving ??= this.#resolve().finally(() => {
      this.#resolving = undefined;
      this.#schedule();
    });
    return this.#resolving;
  }

  /** Stops re-resolving. The members stay: the initiator closes them, the retired ones too. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#abort.abort();
  }

  #schedule(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#closed) return;
    // close() clears it, so it never keeps the process alive after the initiator closes.
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.refresh();
    }, this.#options.intervalMs);
  }

  async #resolve(): Promise<void> {
    const { host, intervalMs } = this.#options;
    const timeoutMs = Math.min(this.#options.lookupTimeoutMs ?? lookupTimeoutMs, intervalMs);
    let addresses: HostPort[];
    try {
      const answer = await withDeadline(
        this.#options.lookup(host.host),
        timeoutMs,
        this.#abort.signal,
      );
      addresses = preferredAddresses(answer, host.port);
      if (addresses.length === 0) throw new Error('the answer holds no address');
    } catch (error) {
      if (!this.#closed) this.#failed(error);
      return;
    }
    if (!this.#closed) this.#apply(addresses);
  }

  /** Adds the new addresses first, then retires the vanished ones, so no gap opens between. */
  #apply(addresses: readonly HostPort[]): void {
    const { add, retire, cluster, logger } = this.#options;
    const wanted = new Map(addresses.map((address) => [formatHostPort(address), address]));
    for (const [key, address] of wanted) {
      if (this.#members.has(key)) continue;
      this.#members.set(key, add(address));
      logger.info({ cluster, host: this.#name, address: key }, 'responder host added');
    }
    for (const [key, member] of this.#members) {
      if (wanted.has(key)) continue;
      this.#members.delete(key);
      retire(member);
      logger.info({ cluster, host: this.#name, address: key }, 'responder host retired');
    }
  }

  #failed(error: unknown): void {
    const { add, host, cluster, logger, intervalMs } = this.#options;
    if (this.#members.size === 0) this.#members.set(this.#name, add(host));
    logger.warn(
      {
        cluster,
        host: this.#name,
        detail: describeError(error),
        keeping: this.targets,
        retry_in_ms: intervalMs,
      },
      'host name resolution failed; keeping the current hosts',
    );
  }
}

/**
 * The addresses to dial, deduplicated, in answer order: the IPv4 ones when there are any, else the
 * IPv6 ones (Envoy's V4_PREFERRED lookup family). A name with both A and AAAA records (localhost
 * among them) usually names each responder once per family, and dialling both would double its
 * tunnels.
 */
export function preferredAddresses(answer: readonly LookupAddress[], port: number): HostPort[] {
  const valid = answer.filter((entry) => net.isIP(entry.address) !== 0);
  const v4 = valid.filter((entry) => net.isIPv4(entry.address));
  const chosen = v4.length > 0 ? v4 : valid;
  return [...new Set(chosen.map((entry) => entry.address))].map((address) => ({
    host: address,
    port,
  }));
}

/**
 * `promise`, or a rejection after `ms` or when `signal` aborts (the resolver's close(), which so
 * clears the timer). getaddrinfo cannot be cancelled
 * (it runs on libuv's thread pool), so a late answer is only ignored: the one place a wait here
 * leaves work running, bounded by the system resolver's own timeouts.
 */
function withDeadline<T>(promise: Promise<T>, ms: number, signal: AbortSignal): Promise<T> {
  return new Promise((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
    };
    const onAbort = () => {
      done();
      reject(new Error('the resolver closed'));
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`no answer within ${ms} ms`));
    }, ms);
    if (signal.aborted) {
      onAbort();
      return;
    }
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        done();
        resolve(value);
      },
      (error: unknown) => {
        done();
        reject(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });
}
