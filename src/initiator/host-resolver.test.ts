import assert from 'node:assert/strict';
import type { LookupAddress } from 'node:dns';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { formatHostPort, type HostPort } from '../shared/address.ts';
import { silentLogger } from '../shared/logger.ts';
import { HostResolver, preferredAddresses, type HostLookup } from './host-resolver.ts';

const v4 = (address: string): LookupAddress => ({ address, family: 4 });
const v6 = (address: string): LookupAddress => ({ address, family: 6 });

/** A member that records its own story: what it dials, and whether it was retired. */
interface FakeMember {
  readonly target: string;
  retired: boolean;
}

/**
 * A lookup whose answer the test sets; `calls(n)` resolves at the n-th call (a deadline rejects
 * it, so that a test fails with a message instead of hanging).
 */
function fakeLookup(initial: readonly LookupAddress[] | Error) {
  let answer: readonly LookupAddress[] | Error = initial;
  let count = 0;
  const waiters: Array<{ n: number; resolve: () => void }> = [];
  const names: string[] = [];
  const lookup: HostLookup = (hostname) => {
    names.push(hostname);
    count += 1;
    for (const waiter of waiters.filter((w) => w.n <= count)) waiter.resolve();
    return answer instanceof Error ? Promise.reject(answer) : Promise.resolve(answer);
  };
  return {
    lookup,
    names,
    set(next: readonly LookupAddress[] | Error) {
      answer = next;
    },
    get count() {
      return count;
    },
    calls(n: number, timeoutMs = 5_000): Promise<void> {
      if (count >= n) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`lookup was called ${count} times, not ${n}`)),
          timeoutMs,
        );
        waiters.push({
          n,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
        });
      });
    },
  };
}

function resolverWith(
  lookup: HostLookup,
  options: { intervalMs?: number; lookupTimeoutMs?: number; logger?: typeof silentLogger } = {},
) {
  const members: FakeMember[] = [];
  const order: string[] = [];
  const resolver = new HostResolver<FakeMember>({
    cluster: 'upstream',
    host: { host: 'responders.test', port: 9000 },
    // Long enough that only refresh() resolves, unless a test asks for a short one.
    intervalMs: options.intervalMs ?? 3_600_000,
    lookup,
    ...(options.lookupTimeoutMs === undefined ? {} : { lookupTimeoutMs: options.lookupTimeoutMs }),
    logger: options.logger ?? silentLogger,
    add: (target: HostPort) => {
      const member = { target: formatHostPort(target), retired: false };
      members.push(member);
      order.push(`add ${member.target}`);
      return member;
    },
    retire: (member) => {
      member.retired = true;
      order.push(`retire ${member.target}`);
    },
  });
  const live = () => members.filter((member) => !member.retired).map((member) => member.target);
  return { resolver, members, order, live };
}

describe('HostResolver', () => {
  it('dials every address the name resolves to, on the configured port', async () => {
    const dns = fakeLookup([v4('127.0.0.2'), v4('127.0.0.3'), v4('127.0.0.4')]);
    const { resolver, live } = resolverWith(dns.lookup);
    await resolver.start();
    assert.deepEqual(dns.names, ['responders.test']);
    assert.deepEqual(live(), ['127.0.0.2:9000', '127.0.0.3:9000', '127.0.0.4:9000']);
    assert.deepEqual(resolver.targets, live());
    resolver.close();
  });

  it('adds new addresses and retires vanished ones at re-resolution, adding first', async () => {
    const dns = fakeLookup([v4('10.0.0.1'), v4('10.0.0.2')]);
    const { resolver, members, order, live } = resolverWith(dns.lookup);
    await resolver.start();
    dns.set([v4('10.0.0.2'), v4('10.0.0.3')]);
    await resolver.refresh();
    assert.deepEqual(live(), ['10.0.0.2:9000', '10.0.0.3:9000']);
    assert.deepEqual(order, [
      'add 10.0.0.1:9000',
      'add 10.0.0.2:9000',
      'add 10.0.0.3:9000',
      'retire 10.0.0.1:9000',
    ]);
    // The address that stayed kept its member: no re-dial, no drain.
    assert.equal(members.filter((member) => member.target === '10.0.0.2:9000').length, 1);
    resolver.close();
  });

  it('keeps the current hosts when a re-resolution fails, and logs a warning', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => lines.push(line) });
    const dns = fakeLookup([v4('10.0.0.1'), v4('10.0.0.2')]);
    const { resolver, live } = resolverWith(dns.lookup, { logger });
    await resolver.start();
    dns.set(
      Object.assign(new Error('getaddrinfo EAI_AGAIN responders.test'), { code: 'EAI_AGAIN' }),
    );
    await resolver.refresh();
    assert.deepEqual(live(), ['10.0.0.1:9000', '10.0.0.2:9000']);
    assert.equal(lines.length, 1);
    const record = JSON.parse(lines[0]!) as { msg: string; detail: string; keeping: string[] };
    assert.equal(record.msg, 'host name resolution failed; keeping the current hosts');
    assert.match(record.detail, /EAI_AGAIN/);
    assert.deepEqual(record.keeping, ['10.0.0.1:9000', '10.0.0.2:9000']);
    resolver.close();
  });

  it('treats an answer with no address as a failure, never retiring every host', async () => {
    const dns = fakeLookup([v4('10.0.0.1')]);
    const { resolver, live } = resolverWith(dns.lookup);
    await resolver.start();
    dns.set([]);
    await resolver.refresh();
    assert.deepEqual(live(), ['10.0.0.1:9000']);
    resolver.close();
  });

  it('dials the name itself when the first resolution fails, until one succeeds', async () => {
    const dns = fakeLookup(new Error('getaddrinfo ENOTFOUND responders.test'));
    const { resolver, order, live } = resolverWith(dns.lookup);
    await resolver.start();
    assert.deepEqual(live(), ['responders.test:9000']);
    await resolver.refresh();
    assert.deepEqual(live(), ['responders.test:9000'], 'a second failure changes nothing');
    dns.set([v4('10.0.0.1')]);
    await resolver.refresh();
    assert.deepEqual(live(), ['10.0.0.1:9000']);
    assert.deepEqual(order, [
      'add responders.test:9000',
      'add 10.0.0.1:9000',
      'retire responders.test:9000',
    ]);
    resolver.close();
  });

  it('counts a lookup slower than its deadline as failed', async () => {
    const { resolver, live } = resolverWith(() => new Promise(() => {}), { lookupTimeoutMs: 20 });
    await resolver.start();
    assert.deepEqual(live(), ['responders.test:9000']);
    resolver.close();
  });

  it('re-resolves every interval, from the end of the previous resolution', async () => {
    const dns = fakeLookup([v4('10.0.0.1')]);
    const { resolver, live } = resolverWith(dns.lookup, { intervalMs: 10 });
    await resolver.start();
    dns.set([v4('10.0.0.1'), v4('10.0.0.2')]);
    await dns.calls(2);
    await dns.calls(3); // the answer of call 2 is applied before call 3 starts
    assert.deepEqual(live(), ['10.0.0.1:9000', '10.0.0.2:9000']);
    resolver.close();
  });

  it('joins a resolution already in flight instead of starting another', async () => {
    let answer: (value: readonly LookupAddress[]) => void = () => {};
    let calls = 0;
    const { resolver, live } = resolverWith(() => {
      calls += 1;
      return new Promise((resolve) => (answer = resolve));
    });
    const first = resolver.start();
    const second = resolver.refresh();
    answer([v4('10.0.0.1')]);
    await Promise.all([first, second]);
    assert.equal(calls, 1);
    assert.deepEqual(live(), ['10.0.0.1:9000']);
    resolver.close();
  });

  it('stops on close: a pending lookup ends its wait, its answer is ignored, no timer is left', async () => {
    let answer: (value: readonly LookupAddress[]) => void = () => {};
    let calls = 0;
    const { resolver, members } = resolverWith(
      () => {
        calls += 1;
        return new Promise((resolve) => (answer = resolve));
      },
      { intervalMs: 10 },
    );
    const started = resolver.start();
    resolver.close();
    await started;
    answer([v4('10.0.0.1')]);
    await resolver.refresh();
    assert.equal(members.length, 0, 'nothing is dialled after close, not even the name');
    assert.equal(calls, 1);
  });
});

describe('preferredAddresses', () => {
  it('prefers IPv4, deduplicates, and keeps the answer order', () => {
    assert.deepEqual(
      preferredAddresses([v6('::1'), v4('127.0.0.1'), v4('10.0.0.2'), v4('127.0.0.1')], 80),
      [
        { host: '127.0.0.1', port: 80 },
        { host: '10.0.0.2', port: 80 },
      ],
    );
  });

  it('falls back to IPv6 when the name has no IPv4 address', () => {
    assert.deepEqual(preferredAddresses([v6('::1'), v6('fd00::2')], 80), [
      { host: '::1', port: 80 },
      { host: 'fd00::2', port: 80 },
    ]);
  });

  it('drops entries that are not addresses', () => {
    assert.deepEqual(preferredAddresses([v4('not-an-address')], 80), []);
  });
});
