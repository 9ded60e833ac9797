// Drives the Floe console in headless Chromium (Playwright, Debian's /usr/bin/chromium) for
// tests/tests/console_browser.rs. Everything it needs comes from the environment; it prints
// one line `RESULT <json>` at the end and exits non-zero on the first failed step, naming it.
//
//   FLOE_URL, FLOE_TOKEN   the coordinator (console at /) and its API token
//   SHOTS                  where the screenshots go
//   MODE                   "scenario" (default) or "loadtime"
//   FLOW_ID, DRAFT_ID      a published flow to deploy; a draft that does not validate
//   DEVICES                device ids for the new deployment, comma-separated
//   ROLLBACK_ID            a running deployment to roll back from its page
//   CHROMIUM               the browser (default /usr/bin/chromium)
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const env = (k, d) => {
  const v = process.env[k] ?? d;
  if (v === undefined) throw new Error(`${k} is not set`);
  return v;
};
const url = env('FLOE_URL');
const token = env('FLOE_TOKEN');
const shots = env('SHOTS');
const mode = env('MODE', 'scenario');
const result = { screenshots: [], seconds: {} };
let step = 'launch';
let stepStarted = Date.now();
// Names the step that runs now and records how long the previous one took.
function begin(name) {
  result.seconds[step] = Math.round((Date.now() - stepStarted) / 100) / 10;
  step = name;
  stepStarted = Date.now();
}

async function shot(page, name) {
  const path = join(shots, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  result.screenshots.push(path);
}

const profile = mkdtempSync(join(tmpdir(), 'floe-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: env('CHROMIUM', '/usr/bin/chromium'),
  headless: true,
  viewport: { width: 1400, height: 900 },
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
const page = context.pages()[0] ?? (await context.newPage());
page.setDefaultTimeout(30_000);
page.on('dialog', (d) => d.accept());
const external = [];
page.on('request', (r) => {
  if (!r.url().startsWith(url) && !r.url().startsWith('data:')) external.push(r.url());
});
const consoleErrors = [];
page.on('pageerror', (e) => consoleErrors.push(String(e)));

try {
  if (mode === 'loadtime') {
    // The first page with a large registry: token already in the session, time from
    // navigation to the first device rows on screen.
    begin('first page load');
    await page.addInitScript((t) => sessionStorage.setItem('floe.token', t), token);
    const t0 = Date.now();
    await page.goto(`${url}/#/fleet`);
    await page.locator('#devices tbody tr[data-device]').first().waitFor();
    result.first_load_ms = Date.now() - t0;
    result.rows = await page.locator('#devices tbody tr[data-device]').count();
    // How much of it was the API's answer (GET /devices?limit=50) itself.
    result.api_ms = await page.evaluate(() => {
      const r = performance.getEntriesByType('resource').find((e) => e.name.includes('/api/v1/devices'));
      return r ? Math.round(r.duration) : null;
    });
    result.nav = await page.evaluate(() => {
      const n = performance.getEntriesByType('navigation')[0];
      return n ? { dom_content_loaded_ms: Math.round(n.domContentLoadedEventEnd), load_ms: Math.round(n.loadEventEnd) } : null;
    });
    begin('next page');
    const first = await page.locator('#devices tbody tr[data-device]').first().getAttribute('data-device');
    const t1 = Date.now();
    await page.getByRole('button', { name: 'Next →' }).click();
    await page.waitForFunction((f) => {
      const r = document.querySelector('#devices tbody tr[data-device]');
      return r && r.getAttribute('data-device') !== f;
    }, first);
    result.next_page_ms = Date.now() - t1;
    await shot(page, 'fleet-100k');
  } else {
    const flowId = env('FLOW_ID');
    const draftId = env('DRAFT_ID');
    const devices = env('DEVICES').split(',');
    const rollbackId = env('ROLLBACK_ID');

    begin('sign in with a wrong token');
    await page.goto(url);
    await page.fill('#token', 'not-the-token');
    await page.click('button[type=submit]');
    await page.getByText('not valid').waitFor();
    await shot(page, '01-sign-in');

    begin('sign in');
    await page.fill('#token', token);
    await page.click('button[type=submit]');
    await page.evaluate(() => (window.__floeNoReload = true));

    begin('fleet');
    await page.waitForFunction((n) => document.querySelectorAll('#devices tbody tr[data-device]').length >= n, devices.length);
    for (const d of devices) await page.locator(`tr[data-device="${d}"]`).getByText('online').waitFor();
    await shot(page, '02-fleet');

    begin('flow graph');
    await page.click('header nav a[href="#/flows"]');
    await page.click(`a[data-flow="${flowId}"]`);
    await page.locator('#flow-graph g.node').first().waitFor();
    result.graph_nodes = await page.locator('#flow-graph g.node').count();
    result.graph_wires = await page.locator('#flow-graph path.wire').count();
    await page.locator('#flow-graph g.node').first().click();
    await page.locator('#node-panel pre').waitFor();
    await shot(page, '03-flow-graph');

    begin('flow validation problems');
    await page.click(`a[data-flow="${draftId}"]`);
    await page.getByRole('button', { name: 'Publish' }).click();
    await page.locator('#flow-problems').waitFor();
    await page.locator('#flow-graph g.node.invalid').first().waitFor();
    result.invalid_nodes = await page.locator('#flow-graph g.node.invalid').count();
    result.problem = await page.locator('#flow-problems li').first().innerText();
    await shot(page, '04-flow-problems');

    begin('create a canary+waves deployment');
    await page.click('header nav a[href="#/deployments"]');
    await page.click('#new-deployment');
    await page.locator('select[name=flow]').selectOption(flowId);
    await page.locator('select[name=strategy]').selectOption('canary-waves');
    // The reference's defaults are filled in; shorten the soaks for a test.
    await page.locator('input[name=canary_percentage]').waitFor();
    result.default_canary_percentage = await page.inputValue('input[name=canary_percentage]');
    result.default_wave_count = await page.locator('#waves tbody tr').count();
    await page.fill('input[name=devices]', devices.join(','));
    await page.fill('input[name=canary_delay]', '1s');
    await page.fill('input[name=timeout]', '60s');
    for (let i = 0; i < result.default_wave_count; i++) await page.fill(`input[name=wave${i}_soak]`, '1s');
    await shot(page, '05-new-deployment');
    await page.click('#create');

    begin('start it and wait for the approval');
    await page.locator('#deployment[data-status=pending]').waitFor();
    result.deployment_id = await page.evaluate(() => location.hash.split('/')[2]);
    await page.click('button[data-command=start]');
    await page.locator('button[data-command=approve]:enabled').waitFor({ timeout: 90_000 });
    await shot(page, '06-awaiting-approval');
    begin('approve it and watch it complete without reloading');
    await page.click('button[data-command=approve]');
    await page.locator('#deployment[data-status=completed]').waitFor({ timeout: 150_000 });
    result.live_mode = await page.locator('.live').innerText();
    result.no_reload = await page.evaluate(() => window.__floeNoReload === true);
    if (!result.no_reload) throw new Error('the page reloaded');
    await shot(page, '07-deployment-completed');
    await page.click('#report-tab');
    await page.locator('#report').getByText('completed').first().waitFor();
    await shot(page, '08-report');

    begin('roll back a second deployment from its page');
    await page.goto(`${url}/#/deployments/${rollbackId}`);
    await page.locator('button[data-command=rollback]:enabled').waitFor({ timeout: 60_000 });
    await page.click('button[data-command=rollback]');
    await page.locator('#deployment[data-status=rolled_back]').waitFor({ timeout: 120_000 });
    await shot(page, '09-rolled-back');

    begin('audit');
    await page.click('header nav a[href="#/audit"]');
    await page.locator('#audit tbody tr').first().waitFor();
    result.audit_rows = await page.locator('#audit tbody tr').count();
    await shot(page, '10-audit');

    begin('sign in as a viewer: read-only');
    await page.click('header button.link');
    await page.fill('#token', env('VIEWER_TOKEN'));
    await page.click('button[type=submit]');
    await page.locator('#who').waitFor();
    result.viewer_who = (await page.locator('#who').textContent()).trim();
    await page.click('header nav a[href="#/deployments"]');
    await page.locator('h2', { hasText: 'Deployments' }).waitFor();
    let writes = await page.locator('#new-deployment').count();
    await page.goto(`${url}/#/deployments/${rollbackId}`);
    await page.locator('#deployment[data-status=rolled_back]').waitFor();
    writes += await page.locator('#commands button:visible').count();
    await page.click('header nav a[href="#/flows"]');
    await page.click(`a[data-flow="${flowId}"]`);
    await page.locator('#flow-graph g.node').first().waitFor();
    writes += await page.getByRole('button', { name: 'Publish' }).filter({ visible: true }).count();
    result.viewer_write_controls = writes;
    await shot(page, '11-viewer');
  }
  begin('done');
  if (external.length) throw new Error(`requests outside the coordinator: ${external.join(', ')}`);
  if (consoleErrors.length) throw new Error(`page errors: ${consoleErrors.join('; ')}`);
  console.log(`RESULT ${JSON.stringify(result)}`);
} catch (e) {
  try {
    await shot(page, `failed-${step.replace(/\W+/g, '-')}`);
  } catch {
    /* the page may be gone */
  }
  console.error(`step "${step}" failed: ${e.stack || e}`);
  console.log(`RESULT ${JSON.stringify({ ...result, failed: step })}`);
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
