// End-to-end test of the dashboard in real headless Chromium (Debian's package), driven by
// playwright-core. Run by tests/dashboard_e2e.rs against a real server; every wait is bounded and
// every step asserts what the operator would see. Env: FG_URL, FG_INITIAL_PASSWORD,
// FG_ADMIN_TOKEN (bootstrap token, used only to seed data), FG_WORKDIR (temp dir), FG_NODE_PATH,
// FG_SCREENSHOTS (optional: directory for one PNG per page).
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { writeFileSync, readFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

const URL = process.env.FG_URL;
const WORK = process.env.FG_WORKDIR;
const SHOTS = process.env.FG_SCREENSHOTS || '';
const ADMIN_TOKEN = process.env.FG_ADMIN_TOKEN;
const NEW_PASSWORD = 'e2e-Str0ng-password!';
const WAIT = 15000;

function step(msg) { console.log(`step: ${msg}`); }
function fail(msg) { throw new Error(msg); }
const el = (page, id) => page.locator(`[data-testid="${id}"], [id="${id}"]`).first();

async function shot(page, name) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

async function api(method, path, body) {
  const r = await fetch(URL + path, {
    method,
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  if (r.status >= 300) fail(`${method} ${path}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function login(page, username, password) {
  await page.goto(URL + '/');
  await el(page, 'login-username').fill(username);
  await el(page, 'login-password').fill(password);
  await el(page, 'login-submit').click();
}

const browser = await chromium.launch({
  executablePath: process.env.FG_CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
let device;
try {
  const ctx = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 860 } });
  const page = await ctx.newPage();
  page.setDefaultTimeout(WAIT);

  step('log in with the initial password; the first login asks for a new one');
  await page.goto(URL + '/');
  await shot(page, 'login');
  await login(page, 'admin', process.env.FG_INITIAL_PASSWORD);
  await el(page, 'new-password').waitFor();
  await shot(page, 'change-password');
  await el(page, 'new-password').fill(NEW_PASSWORD);
  await el(page, 'new-password-submit').click();
  await el(page, 'nav-devices').waitFor();

  step('add a device: id and token shown once, with the Node.js code');
  await el(page, 'nav-add-device').click();
  await el(page, 'add-name').fill('E2E lobby sensor');
  await shot(page, 'add-device');
  await el(page, 'add-submit').click();
  await el(page, 'created-token').waitFor();
  const deviceId = (await el(page, 'created-device-id').textContent()).trim();
  const token = (await el(page, 'created-token').textContent()).trim();
  if (!/^[0-9a-f-]{36}$/.test(deviceId)) fail(`device id shown: ${deviceId}`);
  if (!token.startsWith('tok_')) fail(`token shown: ${token}`);
  const code = await el(page, 'snippet-node').textContent();
  for (const needle of [deviceId, token, '/ws']) {
    if (!code.includes(needle)) fail(`the Node.js snippet lacks ${needle}`);
  }
  await shot(page, 'add-device-created');

  step('connect the device with the Node.js code the page shows');
  // The only addition: telemetry every 500 ms (the snippet's own interval is 30 s).
  const file = join(WORK, 'device.js');
  writeFileSync(file, code + '\nsetInterval(() => sendTelemetry({ temperature: 21.5 + Math.random(), humidity: 40 }), 500)\n');
  device = spawn('node', [file], { env: { ...process.env, NODE_PATH: process.env.FG_NODE_PATH }, stdio: ['ignore', 'pipe', 'pipe'] });
  let deviceOut = '';
  device.stdout.on('data', (d) => { deviceOut += d; });
  device.stderr.on('data', (d) => { deviceOut += d; });

  step('the device turns online on the Devices page without a reload');
  await el(page, 'nav-devices').click();
  const started = Date.now();
  await page.waitForFunction(
    (id) => document.querySelector(`[data-testid="device-status-${id}"], [id="device-status-${id}"]`)?.textContent.trim() === 'online',
    deviceId, { timeout: WAIT });
  console.log(`measured: online shown ${Date.now() - started} ms after the page showed the device list`);
  await shot(page, 'devices');

  step('device detail: the telemetry chart and latest values');
  await el(page, `device-row-${deviceId}`).click();
  await el(page, 'chart-temperature').waitFor();
  await page.waitForFunction(
    () => /\d/.test(document.querySelector('[data-testid="latest-temperature"], [id="latest-temperature"]')?.textContent || ''),
    null, { timeout: WAIT });

  step('send a command from the page; the device executes and acks it');
  await el(page, 'command-name').fill('unlock');
  await el(page, 'command-payload').fill('{"door": 1}');
  await el(page, 'command-submit').click();
  await page.waitForFunction(
    () => [...document.querySelectorAll('[data-testid^="command-status-"], [id^="command-status-"]')].some((e) => e.textContent.trim() === 'acked'),
    null, { timeout: WAIT });
  if (!deviceOut.includes('Executing command: unlock')) fail(`the device did not print the command: ${deviceOut}`);
  await shot(page, 'device-detail');

  step('device_connected is in the event stream');
  await el(page, 'nav-events').click();
  await page.waitForFunction(
    () => !!document.querySelector('[data-testid="events-list"] [data-type="device_connected"], #events-list [data-type="device_connected"]'),
    null, { timeout: WAIT });
  await shot(page, 'events');

  step('overview and pending pages render');
  await fetch(URL + '/api/device-http', { method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ cmd: 'reg', sn: 'E2E-PENDING-1', devinfo: { modelname: 'AI07F', firmware: 'v1' } }) });
  await el(page, 'nav-overview').click();
  await page.waitForTimeout(300);
  await shot(page, 'overview');
  await el(page, 'nav-pending').click();
  await page.getByText('E2E-PENDING-1').first().waitFor();
  await shot(page, 'pending');

  step('attendance: a punch is listed and exported as CSV');
  const http = await api('POST', '/api/devices', { name: 'E2E terminal', protocol: 'http', serial: 'E2E-SN-1' });
  const sent = await fetch(URL + '/api/device-http', { method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ cmd: 'sendlog', sn: 'E2E-SN-1', count: 1, logindex: 0,
      record: [{ enrollid: 4242, time: '2026-06-12T09:15:30', mode: 1, inout: 0, event: 0 }] }) });
  if (!(await sent.json()).result) fail('sendlog was not stored');
  await el(page, 'nav-attendance').click();
  await page.getByText('4242').first().waitFor();
  await shot(page, 'attendance');
  const [download] = await Promise.all([page.waitForEvent('download'), el(page, 'attendance-csv').click()]);
  const csv = readFileSync(await download.path(), 'utf8');
  if (!csv.startsWith('device_id,serial,enrollid,')) fail(`CSV header: ${csv.slice(0, 80)}`);
  if (!csv.includes(http.device_id) || !csv.includes('4242')) fail(`CSV lacks the punch: ${csv}`);

  step('people: add a person from the page; their punch shows their name; write them to a terminal');
  const zk = await api('POST', '/api/devices', { name: 'E2E ZKTeco', protocol: 'zkteco', serial: 'E2E-ZK-1' });
  await el(page, 'nav-people').click();
  await el(page, 'person-pin').fill('4242');
  await el(page, 'person-name').fill('Grace Hopper');
  await el(page, 'person-external-id').fill('EMP-4242');
  await el(page, 'person-submit').click();
  await el(page, 'person-row-4242').getByText('Grace Hopper').waitFor();
  await el(page, 'nav-attendance').click();
  await el(page, 'attendance-person').getByText('Grace Hopper').first().waitFor();
  await el(page, 'nav-people').click();
  await el(page, 'sync-person-4242').click();
  await el(page, 'sync-device-E2E-ZK-1').check();
  await shot(page, 'people');
  await el(page, 'sync-write').click();
  await page.getByText('command(s) queued').first().waitFor();
  const zkCmds = await api('GET', `/api/devices/${zk.device_id}/commands`);
  const setUser = (zkCmds.items || []).find((c) => c.command === 'set_user');
  if (!setUser || setUser.payload.enrollid !== 4242 || setUser.payload.name !== 'Grace Hopper') {
    fail(`the ZKTeco terminal was not given the person: ${JSON.stringify(zkCmds)}`);
  }

  step('webhooks: add an endpoint; its signing secret is shown once');
  await el(page, 'nav-webhooks').click();
  await el(page, 'hook-url').fill('https://hr.example.com/fleetgate');
  await el(page, 'hook-event-device_status').check();
  await el(page, 'hook-submit').click();
  const secret = (await el(page, 'hook-secret').textContent()).trim();
  if (!secret.startsWith('whsec_')) fail(`the signing secret shown: ${secret}`);
  const hooks = await api('GET', '/api/webhooks');
  const hook = (hooks.items || []).find((w) => w.url === 'https://hr.example.com/fleetgate');
  if (!hook || hook.events.join() !== 'attendance,device_status') fail(`the endpoint: ${JSON.stringify(hooks)}`);
  if (JSON.stringify(hooks).includes(secret)) fail('the secret is listed');
  await el(page, `hook-row-${hook.id}`).waitFor();
  await shot(page, 'webhooks');

  step('users and API token pages render');
  await el(page, 'nav-users').click();
  await page.getByText('admin').first().waitFor();
  await shot(page, 'users');
  await el(page, 'nav-tokens').click();
  await page.waitForTimeout(300);
  await shot(page, 'tokens');

  step('a viewer cannot send a command');
  await api('POST', '/api/users', { username: 'viewer1', password: 'viewer-password-123', role: 'viewer' });
  const vctx = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const vpage = await vctx.newPage();
  vpage.setDefaultTimeout(WAIT);
  await login(vpage, 'viewer1', 'viewer-password-123');
  await el(vpage, 'nav-devices').waitFor();
  await vpage.goto(`${URL}/#/devices/${deviceId}`);
  await el(vpage, 'chart-temperature').waitFor();
  const submit = el(vpage, 'command-submit');
  const usable = (await submit.count()) > 0 && (await submit.isVisible()) && (await submit.isEnabled());
  if (usable) fail('a viewer is offered an enabled command button');
  // And the server refuses it even if the page were bypassed.
  const status = await vpage.evaluate(async (id) => {
    const me = await (await fetch('/api/me')).json();
    const r = await fetch(`/api/devices/${id}/commands`, { method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': me.csrf_token }, body: '{"command":"unlock"}' });
    return r.status;
  }, deviceId);
  if (status !== 403) fail(`a viewer's command POST answered ${status}, not 403`);

  step('promoted while watching, the viewer gets the command button without a reload');
  await vpage.evaluate(() => { window.__notReloaded = true; });
  await api('PATCH', '/api/users/viewer1', { role: 'admin' });
  await el(vpage, 'command-submit').waitFor({ state: 'visible' });
  if (!(await vpage.evaluate(() => window.__notReloaded === true))) fail('the page was reloaded');

  step('deleted while watching, the user\'s open dashboard goes to the login page');
  await api('DELETE', '/api/users/viewer1');
  await el(vpage, 'login-username').waitFor({ state: 'visible' });

  step('mobile width renders the device list');
  await page.setViewportSize({ width: 375, height: 800 });
  await page.goto(`${URL}/#/devices`);
  await el(page, `device-status-${deviceId}`).waitFor();
  await shot(page, 'devices-mobile');
  console.log('E2E PASSED');
} finally {
  if (device) device.kill();
  await browser.close();
}
