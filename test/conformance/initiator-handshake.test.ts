/**
 * The revtun initiator's handshake against a fake Envoy responder (protocol reference §2, §4, §7;
 * acceptance scenarios 12, 14, 15, 33, 35, 36): the request bytes, configurable path, prefix and
 * extra headers, Upgrade mode, the response deadline, `rc://` validation and IPv6 hosts.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { initiatorFromFlags } from '../../src/cli/flags.ts';
import { validateInitiatorConfig } from '../../src/config/load.ts';
import type { InitiatorConfigInput } from '../../src/config/schema.ts';
import { startInitiator, type Initiator } from '../../src/initiator/initiator.ts';
import { parseRcAddress } from '../../src/protocol/rc-address.ts';
import { FakeResponder, type FakeTunnel } from '../helpers/fake-responder.ts';
import {
  ackFlag,
  clientPreface,
  emptySettings,
  frameType,
  readFrame,
  settingsAck,
  readAckAndWindowUpdate,
  windowIncrementOf,
} from '../helpers/h2-frames.ts';
import { waitForEvent } from '../helpers/tunnels.ts';

type Overrides = Partial<Omit<InitiatorConfigInput, 'handshake'>> & {
  handshake?: NonNullable<InitiatorConfigInput['handshake']>;
};

/** An initiator for n1/c1/t1 dialling `fake` once; its local route is never used here. */
function initiatorFor(fake: FakeResponder, overrides: Overrides = {}): Promise<Initiator> {
  return startInitiator({
    node_id: 'n1',
    cluster_id: 'c1',
    tenant_id: 't1',
    remote_clusters: [{ name: 'upstream-cluster', hosts: [fake.hostText] }],
    local_routes: [{ prefix: '/', target: 'http://127.0.0.1:1' }],
    ...overrides,
  });
}

const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** The whole head a revtun initiator writes, as a regex: Envoy's order, case and CRLFs. */
function expectedHead(options: {
  host: string;
  path?: string;
  prefix?: string;
  upgrade?: boolean;
  cluster?: string;
  extra?: string[];
}): RegExp {
  const p = `${options.prefix ?? 'x-envoy'}-reverse-tunnel`;
  const lines = [
    `GET ${escape(options.path ?? '/reverse_connections/request')} HTTP/1\\.1`,
    `host: ${escape(options.host)}`,
    ...(options.upgrade === true ? ['connection: Upgrade', 'upgrade: reverse-tunnel'] : []),
    `${p}-node-id: n1`,
    `${p}-cluster-id: c1`,
    `${p}-tenant-id: t1`,
    `${p}-upstream-cluster-name: ${escape(options.cluster ?? 'upstream-cluster')}`,
    `${p}-initiation-time: \\d{13}`,
    ...(options.extra ?? []).map(escape),
    'content-length: 0',
  ];
  return new RegExp(`^${lines.join('\\r\\n')}\\r\\n\\r\\n$`);
}

describe('the request an initiator sends', () => {
  const cleanups: Array<() => Promise<void>> = [];
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  async function dialled(overrides: Overrides = {}, host = '127.0.0.1') {
    const fake = await FakeResponder.listen(host);
    const initiator = await initiatorFor(fake, overrides);
    cleanups.push(async () => {
      await initiator.close({ graceMs: 0 });
      await fake.close();
    });
    const tunnel = await fake.accept();
    return { fake, initiator, tunnel, seen: await tunnel.readHandshake() };
  }

  it('scenario 14: request line, headers and silence, then SETTINGS answered with SETTINGS and an ACK, and no byte between the 200 and the preface', async () => {
    const { fake, initiator, tunnel, seen } = await dialled();
    assert.match(seen.head, expectedHead({ host: fake.hostText }));
    assert.equal(await tunnel.silentFor(100), true, 'nothing before the answer');
    const connected = waitForEvent(initiator, 'handshake_success');
    tunnel.accept();
    await connected;
    assert.equal(await tunnel.silentFor(300), true, 'nothing between the 200 and the preface');
    tunnel.peer.write(Buffer.concat([Buffer.from(clientPreface, 'latin1'), emptySettings]));
    const settings = await readFrame(tunnel.peer);
    assert.deepEqual([settings.type, settings.flags, settings.stream], [frameType.settings, 0, 0]);
    const { ack, windowUpdate } = await readAckAndWindowUpdate(tunnel.peer);
    assert.deepEqual(
      [ack.type, ack.flags, ack.stream, ack.payload.length],
      [frameType.settings, ackFlag, 0, 0],
    );
    // The connection window opened from HTTP/2's 65 535 to http2.connection_window's default.
    assert.deepEqual(
      [windowUpdate.stream, windowIncrementOf(windowUpdate)],
      [0, 4 * 1024 * 1024 - 65_535],
    );
    tunnel.peer.write(settingsAck);
    assert.equal(await tunnel.silentFor(100), true, 'an idle HTTP/2 server sends nothing more');
  });

  it('scenario 15: request_path /custom/reverse is the request target', async () => {
    const { fake, seen } = await dialled({ handshake: { request_path: '/custom/reverse' } });
    assert.match(seen.head, expectedHead({ host: fake.hostText, path: '/custom/reverse' }));
  });

  it('scenario 33: header_prefix x-custom names every identity header x-custom-reverse-tunnel-*', async () => {
    const { fake, seen } = await dialled({ handshake: { header_prefix: 'x-custom' } });
    assert.match(seen.head, expectedHead({ host: fake.hostText, prefix: 'x-custom' }));
    assert.doesNotMatch(seen.head, /x-envoy/);
  });

  it('sends configured extra headers after the identity headers and before content-length', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'revtun-hs-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const file = join(dir, 'token');
    await writeFile(file, 'first-token\n');
    const { fake, seen } = await dialled({
      handshake: {
        headers: [
          { name: 'authorization', value: 'Bearer static' },
          { name: 'x-rotating', value_file: file },
        ],
      },
    });
    assert.match(
      seen.head,
      expectedHead({
        host: fake.hostText,
        extra: ['authorization: Bearer static', 'x-rotating: first-token'],
      }),
    );
  });

  it('re-reads a value_file at every dial, and a retry keeps the initiation time', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'revtun-hs-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const file = join(dir, 'token');
    await writeFile(file, 'token-1');
    const { fake, tunnel, seen } = await dialled({
      handshake: { headers: [{ name: 'authorization', value_file: file }] },
    });
    assert.equal(seen.get('authorization'), 'token-1');
    await writeFile(file, 'token-2');
    tunnel.answer(500);
    const retry = await fake.accept(3_000);
    const again = await retry.readHandshake();
    assert.equal(again.get('authorization'), 'token-2');
    assert.equal(
      again.get('x-envoy-reverse-tunnel-initiation-time'),
      seen.get('x-envoy-reverse-tunnel-initiation-time'),
      'the initiation time is that of the slot’s first attempt',
    );
  });

  it('scenario 36: dialling [::1] sends host: [::1]:port and keeps host stats under [::1]:port', async () => {
    const { fake, initiator, tunnel, seen } = await dialled({}, '::1');
    assert.match(fake.hostText, /^\[::1\]:\d+$/);
    assert.match(seen.head, expectedHead({ host: fake.hostText }));
    const connected = waitForEvent(initiator, 'handshake_success');
    tunnel.accept();
    await connected;
    const prefix = 'reverse_tunnel_initiator';
    assert.equal(initiator.stats.value(`${prefix}.host.${fake.hostText}.connected`), 1);
    assert.equal(initiator.stats.value(`${prefix}.worker_0.host.${fake.hostText}.connected`), 1);
  });
});

describe('Upgrade mode at the initiator', () => {
  const cleanups: Array<() => Promise<void>> = [];
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  async function twoSlots(upgrade: boolean) {
    const fake = await FakeResponder.listen();
    const initiator = await initiatorFor(fake, {
      handshake: { use_http_upgrade: upgrade },
      remote_clusters: [{ name: 'upstream-cluster', hosts: [fake.hostText], tunnels_per_host: 2 }],
    });
    cleanups.push(async () => {
      await initiator.close({ graceMs: 0 });
      await fake.close();
    });
    const tunnels: FakeTunnel[] = [await fake.accept(), await fake.accept()];
    return { fake, initiator, tunnels };
  }

  it('scenario 12: sends connection: Upgrade and upgrade: reverse-tunnel after host, fails a 200 and succeeds on a 101', async () => {
    const { fake, initiator, tunnels } = await twoSlots(true);
    for (const tunnel of tunnels) {
      assert.match(
        (await tunnel.readHandshake()).head,
        expectedHead({ host: fake.hostText, upgrade: true }),
      );
    }
    const failed = waitForEvent(initiator, 'handshake_failure');
    tunnels[0]!.accept();
    assert.equal((await failed)[2], 'http.200');
    await tunnels[0]!.peer.whenClosed();
    const connected = waitForEvent(initiator, 'handshake_success');
    // Tunnel bytes may follow the 101 at once: an RPING coalesced with it is echoed.
    tunnels[1]!.peer.write(
      'HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: reverse-tunnel\r\n\r\nRPING',
    );
    await connected;
    await tunnels[1]!.expectEcho();
    assert.equal(
      initiator.stats.value('reverse_tunnel_initiator.cluster.upstream-cluster.connected'),
      1,
    );
  });

  it('scenario 12: outside Upgrade mode a 101 is a failure (http.101)', async () => {
    const { initiator, tunnels } = await twoSlots(false);
    await tunnels[0]!.readHandshake();
    const failed = waitForEvent(initiator, 'handshake_failure');
    tunnels[0]!.peer.write(
      'HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: reverse-tunnel\r\n\r\n',
    );
    assert.equal((await failed)[2], 'http.101');
    await tunnels[0]!.peer.whenClosed();
  });
});

describe('failed answers', () => {
  const cleanups: Array<() => Promise<void>> = [];
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  async function dialled(overrides: Overrides = {}) {
    const fake = await FakeResponder.listen();
    const initiator = await initiatorFor(fake, overrides);
    cleanups.push(async () => {
      await initiator.close({ graceMs: 0 });
      await fake.close();
    });
    const tunnel = await fake.accept();
    await tunnel.readHandshake();
    return { initiator, tunnel };
  }

  it('gives up on an answer that does not come within handshake.timeout and closes the connection', async () => {
    const { initiator, tunnel } = await dialled({ handshake: { timeout: '300ms' } });
    const started = performance.now();
    const [, , reason] = await waitForEvent<[string, string, string]>(
      initiator,
      'handshake_failure',
    );
    const elapsed = performance.now() - started;
    assert.equal(reason, 'timeout');
    assert.ok(elapsed >= 250 && elapsed < 800, `timed out after ${Math.round(elapsed)} ms`);
    await tunnel.peer.whenClosed();
  });

  it("defaults the response deadline to 10 s (Envoy's)", () => {
    const config = validateInitiatorConfig({
      node_id: 'n1',
      cluster_id: 'c1',
      tenant_id: 't1',
      remote_clusters: [{ name: 'r', hosts: ['127.0.0.1:9'] }],
      local_routes: [{ prefix: '/', target: 'http://127.0.0.1:1' }],
    });
    assert.equal(config.handshake.timeout, 10_000);
  });

  it('treats a close before the complete answer as a failure', async () => {
    const { initiator, tunnel } = await dialled();
    const failed = waitForEvent(initiator, 'handshake_failure');
    tunnel.peer.write('HTTP/1.1 200 OK\r\n');
    tunnel.destroy();
    assert.equal((await failed)[2], 'closed');
  });

  it('reads a chunked rejection as a failure with its status', async () => {
    const { initiator, tunnel } = await dialled();
    const failed = waitForEvent(initiator, 'handshake_failure');
    tunnel.peer.write(
      'HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n11\r\nvalidation_failed\r\n0\r\n\r\n',
    );
    assert.equal((await failed)[2], 'http.403');
    await tunnel.peer.whenClosed();
  });
});

describe('scenario 35: rc:// addresses', () => {
  it('scenario 35: rc://n:c@r:1, rc://n:c:t@r, rc://n:c:@r:1 and rc://n:c:t@r:x are rejected at configuration time', () => {
    for (const address of ['rc://n:c@r:1', 'rc://n:c:t@r', 'rc://n:c:@r:1', 'rc://n:c:t@r:x']) {
      assert.throws(() => parseRcAddress(address), { code: 'ERR_RC_ADDRESS_INVALID' }, address);
      assert.throws(
        () =>
          initiatorFromFlags({
            rc: address,
            responder: ['127.0.0.1:9'],
            route: ['/=http://127.0.0.1:1'],
          }),
        { code: 'ERR_USAGE' },
        address,
      );
    }
  });

  it('scenario 35: rc://n:c:t@r:0 loads and dials nothing', async () => {
    const fake = await FakeResponder.listen();
    const input = initiatorFromFlags({
      rc: 'rc://n:c:t@r:0',
      responder: [fake.hostText],
      route: ['/=http://127.0.0.1:1'],
    });
    assert.equal(input.remote_clusters[0]?.tunnels_per_host, 0);
    const initiator = await startInitiator(input);
    try {
      await assert.rejects(fake.accept(300), /no connection within 300 ms/);
    } finally {
      await initiator.close({ graceMs: 0 });
      await fake.close();
    }
  });
});
