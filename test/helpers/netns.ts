/**
 * Network namespaces for the system tests: each test gets hosts of its own, where the sandbox's
 * default ports are free whatever else runs on this machine. Needs root and iproute2's `ip`.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { runToEnd, type Result } from './process.ts';

/** Bounds every `ip …` and `curl …` a system test runs. */
export const commandDeadlineMs = 10_000;

/** Fails (never skips) when this machine cannot run the test, saying what is missing. */
export function requireRootAndTools(): void {
  if (process.getuid?.() !== 0) {
    assert.fail(
      'test/system needs root to create network namespaces: run it as root (sudo npm run test:system)',
    );
  }
  for (const [tool, args, pkg] of [
    ['ip', ['-V'], 'iproute2'],
    ['curl', ['--version'], 'curl'],
  ] as const) {
    const probe = spawnSync(tool, args, { timeout: commandDeadlineMs });
    if (probe.error !== undefined || probe.status !== 0) {
      assert.fail(
        `test/system needs \`${tool}\` on PATH (${pkg}): ${probe.error?.message ?? `exit ${probe.status}`}`,
      );
    }
  }
}

/** `ip …`, which must succeed. */
export async function ip(...args: string[]): Promise<void> {
  const result = await runToEnd(['ip', ...args], commandDeadlineMs);
  assert.equal(result.code, 0, `ip ${args.join(' ')}: ${result.stderr}`);
}

/**
 * The command line that runs `argv` inside `namespace`. `ip netns exec` execs, so the PID of the
 * child is that of the command itself.
 */
export const inNamespace = (namespace: string, argv: readonly string[]): string[] => [
  'ip',
  'netns',
  'exec',
  namespace,
  ...argv,
];

/** `ip netns exec NS sh -c '…'`, as a user would type it in the namespace. */
export const shellIn = (namespace: string, script: string): Promise<Result> =>
  runToEnd(inNamespace(namespace, ['sh', '-c', script]), commandDeadlineMs);

let namespacesAdded = 0;

/** The namespaces one test uses, each with a name no other test run has and its loopback up. */
export class Namespaces {
  readonly #names: string[] = [];

  /** Adds a namespace whose name ends in `role`, and resolves with the name. */
  async add(role: string): Promise<string> {
    namespacesAdded += 1;
    const name = `revtun-t-${process.pid}-${namespacesAdded}-${role}`;
    await ip('netns', 'add', name);
    this.#names.push(name);
    await ip('-n', name, 'link', 'set', 'lo', 'up');
    return name;
  }

  /** Deletes every namespace added, newest first; for `after`, and safe to call again. */
  async close(): Promise<void> {
    for (let name = this.#names.pop(); name !== undefined; name = this.#names.pop()) {
      await ip('netns', 'del', name);
    }
  }
}

export interface VethEnd {
  readonly namespace: string;
  readonly device: string;
  /** The end's address with its prefix length, e.g. `10.213.0.1/24`. */
  readonly address: string;
}

/** Joins two namespaces with a veth pair: one address at each end, both ends up. */
export async function joinWithVeth(a: VethEnd, b: VethEnd): Promise<void> {
  // Created straight inside the namespaces, so the interface names never meet the host's.
  await ip(
    'link',
    'add',
    'name',
    a.device,
    'netns',
    a.namespace,
    'type',
    'veth',
    'peer',
    'name',
    b.device,
    'netns',
    b.namespace,
  );
  for (const end of [a, b])
    await ip('-n', end.namespace, 'addr', 'add', end.address, 'dev', end.device);
  for (const end of [a, b]) await ip('-n', end.namespace, 'link', 'set', end.device, 'up');
}
