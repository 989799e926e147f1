/**
 * What each contender is to the runner: something that starts on loopback in front of the shared
 * origin and gives back the URL (and headers) a load generator sends to, and a `stop()` that stops
 * every process it started, by PID.
 */
import { waitForBody } from '../lib/net.ts';
import { smallBody, type Origin } from '../lib/origin.ts';

export interface Context {
  readonly origin: Origin;
  /** A temporary directory of this run, removed at the end. */
  readonly workDir: string;
  /** Absolute paths of the tools found (tools.ts). */
  readonly tools: ReadonlyMap<string, string>;
}

export interface Running {
  /** Base URL, without a trailing slash: `${url}/small` is the small body. */
  readonly url: string;
  /** Headers every request carries (revtun's `x-node-id`, localtunnel's Host). */
  readonly headers: Readonly<Record<string, string>>;
  /** An HTTP/2 (h2c) URL if the contender serves HTTP/2 to callers, else why not. */
  readonly h2: { readonly url: string } | { readonly unavailable: string };
  /** The contender's own processes (not the origin's), for RSS. */
  readonly pids: readonly number[];
  stop(): Promise<void>;
}

export interface Contender {
  readonly name: string;
  readonly description: string;
  /** Commands from tools.ts this contender needs. */
  readonly tools: readonly string[];
  /**
   * Not a peer: `direct` is the reference, `revtun` the subject, and a bound (node-floor.ts) is
   * what Node's own stacks cost with nothing else; the rest are peers.
   */
  readonly role: 'reference' | 'subject' | 'peer' | 'bound';
  start(context: Context): Promise<Running>;
}

/** Stops each of `stops` (in reverse order of starting), even if one throws. */
export async function stopEach(stops: readonly (() => Promise<void>)[]): Promise<void> {
  for (const stop of [...stops].reverse()) {
    try {
      await stop();
    } catch {
      // Keep stopping the rest.
    }
  }
}

/**
 * A peer that serves plain HTTP/1.1 at `url` with no extra headers, once its small body comes
 * back through it; if it does not, `stop()` is called and the error carries `output()` (what its
 * processes printed).
 */
export async function runningPeer(
  name: string,
  url: string,
  pids: readonly number[],
  stop: () => Promise<void>,
  output: () => string,
): Promise<Running> {
  try {
    await waitForBody(`${url}/small`, {}, smallBody.trim(), name);
  } catch (error) {
    await stop();
    throw new Error(`${(error as Error).message}\n${output()}`, { cause: error });
  }
  return {
    url,
    headers: {},
    h2: { unavailable: 'not measured (HTTP/2 is measured for revtun and direct)' },
    pids,
    stop,
  };
}
