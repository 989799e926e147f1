/**
 * HTTP/2 PING keepalive on tunnels in use (issue 5 §1): a link that dies under a checked-out tunnel
 * is found within ping_interval + ping_timeout by both roles, and the request on it fails loudly
 * (502) instead of hanging until TCP gives up. The link is black-holed by a relay that drops every
 * byte without closing anything.
 */
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { startInitiator, type Initiator } from '../../src/initiator/initiator.ts';
import { startResponder, type Responder } from '../../src/responder/responder.ts';
import type { HostPort } from '../../src/shared/address.ts';
import { request, startService, type TestService } from '../helpers/http.ts';
import { pollUntil } from '../helpers/process.ts';
import { FaultProxy } from '../helpers/fault-proxy.ts';
import { Relay } from '../helpers/relay.ts';
import { tunnelsRegistered, waitForEvent } from '../helpers/tunnels.ts';

const pingMs = 300;
/** The body sent over a throttled link: four seconds' worth at 128 KiB/s. */
const slowBodyBytes = 512 * 1024;
/** interval + its jitter + timeout, and room for timers on a loaded machine. */
const detectionBoundMs = pingMs * 1.15 + pingMs + 1_000;

describe('HTTP/2 keepalive on a tunnel in use', () => {
  let service: TestService;
  const held: ServerResponse[] = [];
  const running: Array<{ close(): Promise<void> }> = [];

  before(async () => {
    // Answers /hang never (until the test ends), anything else at once.
    service = await startService((req: IncomingMessage, res: ServerResponse) => {
      if (req.url === '/hang') held.push(res);
      else if (req.url === `/bytes/${slowBodyBytes}`) res.end(Buffer.alloc(slowBodyBytes, 7));
      else res.end('ok');
    });
  });

  after(async () => {
    for (const res of held) res.destroy();
    for (const item of running.reverse()) await item.close();
    await service.close();
  });

  /** Responder ← relay ← initiator, each with its own PING settings; one tunnel up. */
  function linked(responderPing: string, initiatorPing: string) {
    return linkedThrough((target) => new Relay(target).listen(), responderPing, initiatorPing);
  }

  /** Responder ← link ← initiator, where the test makes the link (a relay or a fault proxy). */
  async function linkedThrough<Link extends { address: { port: number }; close(): Promise<void> }>(
    link: (target: HostPort) => Promise<Link>,
    responderPing: string,
    initiatorPing: string,
  ) {
    const responder: Responder = await startResponder({
      tunnel_listener: { address: '127.0.0.1:0', ping_interval: '60s' },
      egress_listeners: [{ address: '127.0.0.1:0' }],
      http2: { ping_interval: responderPing, ping_timeout: responderPing },
    });
    running.push(responder);
    const relay = await link(responder.addresses.tunnel);
    running.push(relay);
    const registered = tunnelsRegistered(responder, 'n1');
    const initiator: Initiator = await startInitiator({
      node_id: 'n1',
      cluster_id: 'c1',
      tenant_id: 't1',
      http2: { ping_interval: initiatorPing, ping_timeout: initiatorPing },
      remote_clusters: [{ name: 'r', hosts: [`127.0.0.1:${relay.address.port}`] }],
      local_routes: [{ prefix: '/', target: service.target }],
    });
    running.push(initiator);
    await registered;
    // A request that completes checks the tunnel out: HTTP/2 runs on it from now on.
    const warm = await request(responder.addresses.egress[0]!, '/', {
      headers: { 'x-node-id': 'n1' },
    });
    assert.equal(warm.status, 200);
    return { responder, relay, initiator };
  }

  it('the responder fails the request with 502 and closes the tunnel within interval + timeout', async (t) => {
    const { responder, relay } = await linked(`${pingMs}ms`, '60s');
    const seen = held.length;
    const reply = request(responder.addresses.egress[0]!, '/hang', {
      headers: { 'x-node-id': 'n1' },
    });
    await pollUntil(
      'the request to reach the local service',
      () => Promise.resolve(held.length > seen),
      { timeoutMs: 5_000, intervalMs: 5 },
    );
    const closed = waitForEvent<[unknown, string]>(responder, 'tunnel_closed', () => true, 10_000);
    const blackHoledAt = Date.now();
    relay.blackHole();
    const [, reason] = await closed;
    const detectedMs = Date.now() - blackHoledAt;
    assert.equal(reason, 'http2_keepalive_timeout');
    const answer = await reply;
    const answeredMs = Date.now() - blackHoledAt;
    assert.equal(answer.status, 502);
    t.diagnostic(
      `black-holed link found after ${detectedMs} ms (ping ${pingMs} ms + timeout ${pingMs} ms), the caller got 502 after ${answeredMs} ms`,
    );
    assert.ok(detectedMs < detectionBoundMs, `found after ${detectedMs} ms`);
  });

  it('the initiator closes the tunnel within interval + timeout', async (t) => {
    const { initiator, relay } = await linked('60s', `${pingMs}ms`);
    const closed = waitForEvent<[string, string, string]>(
      initiator,
      'connection_closed',
      () => true,
      10_000,
    );
    const blackHoledAt = Date.now();
    relay.blackHole();
    const [, , reason] = await closed;
    const detectedMs = Date.now() - blackHoledAt;
    assert.equal(reason, 'http2_keepalive_timeout');
    t.diagnostic(`the initiator found the black-holed link after ${detectedMs} ms`);
    assert.ok(detectedMs < detectionBoundMs, `found after ${detectedMs} ms`);
  });

  it('keeps a slow link open while bytes arrive, though the ACK waits behind DATA', async (t) => {
    // 128 KiB/s from the initiator: a PING ACK queues behind up to a window (64 KiB) of DATA, so it
    // comes up to 0.5 s late, later than the responder's 200 ms timeout; but DATA keeps arriving.
    const bytesPerSecond = 128 * 1024;
    const { responder, initiator } = await linkedThrough(
      (target) => FaultProxy.start({ target, upstream: { bytesPerSecond } }),
      '200ms',
      '60s',
    );
    let closes = 0;
    responder.on('tunnel_closed', () => (closes += 1));
    initiator.on('connection_closed', () => (closes += 1));
    let acked = 0;
    let slowest = 0;
    responder.on('http2_ping_ack', (_identity: unknown, ms: number) => {
      acked += 1;
      slowest = Math.max(slowest, ms);
    });
    const started = Date.now();
    const reply = await request(responder.addresses.egress[0]!, `/bytes/${slowBodyBytes}`, {
      headers: { 'x-node-id': 'n1' },
      timeoutMs: 20_000,
    });
    assert.equal(reply.status, 200);
    assert.equal(reply.body.length, slowBodyBytes);
    t.diagnostic(
      `${slowBodyBytes / 1024} KiB at ${bytesPerSecond / 1024} KiB/s in ${Date.now() - started} ms; ` +
        `${acked} PINGs acknowledged, the slowest after ${Math.round(slowest)} ms (timeout 200 ms)`,
    );
    assert.equal(closes, 0);
    // Else the test proves nothing: the ACKs must have come later than the timeout.
    assert.ok(slowest > 200, `slowest ACK after ${slowest} ms`);
  });

  it('keeps a healthy tunnel in use open across many PINGs', async () => {
    const { responder, initiator } = await linked(`${pingMs}ms`, `${pingMs}ms`);
    let closes = 0;
    responder.on('tunnel_closed', () => (closes += 1));
    initiator.on('connection_closed', () => (closes += 1));
    // Ten acknowledged PING rounds, counted rather than slept through; the initiator pings at the
    // same rate meanwhile, so a false timeout on either side would close the tunnel.
    let acked = 0;
    await waitForEvent(responder, 'http2_ping_ack', () => ++acked >= 10, 20_000);
    const reply = await request(responder.addresses.egress[0]!, '/', {
      headers: { 'x-node-id': 'n1' },
    });
    assert.equal(reply.status, 200);
    assert.equal(closes, 0);
  });
});
