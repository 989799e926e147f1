/**
 * The admin dashboard in a real browser: Debian's headless Chromium, driven by playwright-core.
 * The sandbox (demo service, responder, initiator) runs in this process on port 0; the page must
 * show the sandbox's node, then a second initiator's node without being reloaded. A screenshot is
 * saved under test-results/ (ignored by git). Needs /usr/bin/chromium.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { startInitiator, type Initiator } from '../../src/initiator/initiator.ts';
import { sandboxConfigs, startSandbox, type Sandbox } from '../../src/sandbox/sandbox.ts';
import { request } from '../helpers/http.ts';
import { tunnelsRegistered } from '../helpers/tunnels.ts';

const chromiumPath = '/usr/bin/chromium';
const results = new URL('../../test-results/', import.meta.url);
/** Playwright's own waits: bounded, so a missing row fails the test instead of hanging it. */
const waitMs = 15_000;

describe('the dashboard in headless Chromium', () => {
  let sandbox: Sandbox | undefined;
  let second: Initiator | undefined;
  let browser: Browser | undefined;
  let page: Page;

  before(async () => {
    assert.ok(existsSync(chromiumPath), `${chromiumPath} is needed (apt-get install chromium)`);
    sandbox = await startSandbox({
      initiatorAdmin: 0,
      responderAdmin: 0,
      tunnel: 0,
      egress: 0,
      service: 0,
    });
    assert.ok(await sandbox.tunnelUp(10_000), "the sandbox's tunnel came up");
    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    });
    page = await browser.newPage({ viewport: { width: 1366, height: 768 } });
  });

  after(async () => {
    try {
      await browser?.close();
    } finally {
      await second?.close({ graceMs: 0 });
      await sandbox?.close({ graceMs: 0 });
    }
  });

  it("shows the sandbox's node, then a second initiator's without a reload", async () => {
    const { responder, initiator } = sandbox!;
    const admin = responder.addresses.admin!;
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(error.message));
    // A failed load is not a script error: /stats?format=json is a 400 on a build without the
    // JSON form (the page falls back to the text form), and the browser asks for /favicon.ico.
    page.on('console', (message) => {
      if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
        errors.push(message.text());
      }
    });
    await page.goto(`http://127.0.0.1:${admin.port}/dashboard`);
    const rows = page.locator('#tunnel-table tbody tr');
    const firstNode = initiator.config.node_id;
    await rows.filter({ hasText: firstNode }).first().waitFor({ timeout: waitMs });
    assert.equal(await page.locator('#role').textContent(), 'responder');
    await page.locator('#status', { hasText: 'live' }).waitFor({ timeout: waitMs });

    let navigations = 0;
    page.on('framenavigated', () => (navigations += 1));
    const { initiator: config } = await sandboxConfigs({
      ...sandbox!.ports,
      initiatorAdmin: 0,
    });
    const secondNode = 'second-node';
    const registered = tunnelsRegistered(responder, secondNode);
    second = await startInitiator({ ...config, node_id: secondNode });
    await registered;
    await rows.filter({ hasText: secondNode }).first().waitFor({ timeout: waitMs });
    await page.locator('#nodes', { hasText: '2' }).waitFor({ timeout: waitMs });

    // A request through the tunnel shows in the request count (counter deltas make the rate).
    const egress = responder.addresses.egress[0]!;
    const reply = await request(egress, '/downstream_service', {
      headers: { 'x-node-id': firstNode },
    });
    assert.equal(reply.status, 200, reply.text);
    await page.locator('#requests', { hasText: /^[1-9]\d* total$/ }).waitFor({ timeout: waitMs });

    // A node nobody serves is one 503: one error on the page, though two counters saw it.
    const refused = await request(egress, '/downstream_service', {
      headers: { 'x-node-id': 'no-such-node' },
    });
    assert.equal(refused.status, 503, refused.text);
    await page.locator('#errors', { hasText: /^1$/ }).waitFor({ timeout: waitMs });
    await page.locator('#requests', { hasText: /^2 total$/ }).waitFor({ timeout: waitMs });
    await mkdir(results, { recursive: true });
    await page.screenshot({ path: new URL('dashboard.png', results).pathname, fullPage: true });
    assert.equal(navigations, 0, 'the page was not reloaded');
    assert.deepEqual(errors, []);
  });
});
