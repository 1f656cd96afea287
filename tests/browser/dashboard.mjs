// The dashboard in a real browser: Debian's Chromium driven by playwright-core, axe-core on
// every page. Started by tests/tests/ui.rs against a server it prepared (queues, dead letters,
// a schedule, tokens); see that file for what exists before this runs.
//
// Environment: SPOOL_URL, SPOOL_ADMIN_TOKEN, SPOOL_READER_TOKEN, SPOOL_PRODUCER_TOKEN,
// SPOOL_PLUGIN (a .wasm to upload), SPOOL_SCHEDULE (an id), SPOOL_SCREENSHOTS (a directory),
// SPOOL_BROWSER_TOOLS (where scripts/ensure-browser.sh installed the npm packages),
// CHROMIUM (default /usr/bin/chromium). Every wait is bounded; the first failure exits 1.
import {createRequire} from 'node:module';
import {mkdirSync, readFileSync} from 'node:fs';
import {join} from 'node:path';
import {gzipSync} from 'node:zlib';

const env = name => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const BASE = env('SPOOL_URL');
const ADMIN = env('SPOOL_ADMIN_TOKEN');
const READER = env('SPOOL_READER_TOKEN');
const PRODUCER = env('SPOOL_PRODUCER_TOKEN');
const PLUGIN = env('SPOOL_PLUGIN');
const SCHEDULE = env('SPOOL_SCHEDULE');
const SHOTS = env('SPOOL_SCREENSHOTS');
const require = createRequire(join(env('SPOOL_BROWSER_TOOLS'), 'package.json'));
const {chromium} = require('playwright-core');
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const WAIT = 15000;

mkdirSync(SHOTS, {recursive: true});

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

// Polls `read` (an API call) every 100 ms until `done` holds of its answer, for at most 10 s;
// returns the last answer, for the caller to check.
async function eventually(read, done) {
  let value = await read();
  for (let i = 0; i < 100 && !done(value); i++) {
    await new Promise(r => setTimeout(r, 100));
    value = await read();
  }
  return value;
}

async function apiCall(method, path, body, token = ADMIN) {
  const r = await fetch(BASE + path, {
    method,
    headers: {Authorization: `Bearer ${token}`, 'Content-Type': 'application/json'},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

// The assets the page loads, gzip-compressed, must stay small.
async function assetSizes() {
  let raw = 0;
  let gz = 0;
  for (const f of ['', 'app.js', 'app.css', 'uplot.min.js', 'uplot.min.css']) {
    const r = await fetch(`${BASE}/ui/${f}`);
    check(r.ok, `/ui/${f} is served (${r.status})`);
    check((r.headers.get('content-security-policy') || '').includes("script-src 'self'"), `/ui/${f} carries the CSP`);
    const body = Buffer.from(await r.arrayBuffer());
    raw += body.length;
    gz += gzipSync(body, {level: 9}).length;
  }
  console.log(`assets: ${raw} bytes, ${gz} bytes gzip-compressed`);
  check(gz <= 300 * 1024, `assets are at most 300 KB compressed (${gz})`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  timeout: 60000,
});

// A signed-in page of its own context. Console errors, page errors and CSP violations fail
// the run: the CSP is not bypassed, so the app must work under it.
async function signedIn(token, name) {
  const context = await browser.newContext({viewport: {width: 1400, height: 1000}});
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const problems = [];
  page.on('pageerror', e => problems.push(`${name}: page error: ${e.message}`));
  page.on('console', m => {
    // A refused request is reported on the console too; those the test causes are expected.
    if (m.type() === 'error' && !/status of (401|403|404)/.test(m.text())) {
      problems.push(`${name}: console: ${m.text()}`);
    }
  });
  page.problems = problems;
  await page.goto(`${BASE}/ui/`);
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', {name: 'Sign in'}).click();
  await page.locator('#nav a').first().waitFor();
  return page;
}

// Shows a page afresh: going to the URL already shown changes nothing, so that one is reloaded.
async function visit(page, hash, heading) {
  const url = `${BASE}/ui/${hash}`;
  if (page.url() === url) await page.reload();
  else await page.goto(url);
  await page.getByRole('heading', {level: 1, name: heading}).waitFor();
  await page.locator('#updated:has-text("updated")').waitFor();
}

async function axe(page, name) {
  await page.evaluate(AXE);
  const result = await page.evaluate(() => window.axe.run(document, {resultTypes: ['violations']}));
  const serious = result.violations.filter(v => v.impact === 'serious' || v.impact === 'critical');
  for (const v of serious) {
    console.error(`axe ${name}: ${v.id} (${v.impact}): ${v.help}; ${v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(' | ')}`);
  }
  check(serious.length === 0, `no serious axe violations on ${name}`);
}

async function shot(page, name) {
  await page.screenshot({path: join(SHOTS, `${name}.png`), fullPage: true});
}

let failed = false;
async function step(name, fn) {
  const started = Date.now();
  try {
    await fn();
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    failed = true;
    console.error(`FAIL ${name}: ${e.stack || e}`);
  }
}

await step('assets are embedded, small and under a CSP', assetSizes);

const admin = await signedIn(ADMIN, 'admin');

const pages = [
  ['overview', '#/', 'Overview'],
  ['queue', '#/queues/orders', 'Queue orders'],
  ['dead-letters', '#/dlq', 'Dead letters'],
  ['plugins', '#/plugins', 'Plugins'],
  ['plugin', '#/plugins/echo', 'Plugin echo'],
  ['routes', '#/routes', 'Routes'],
  ['schedules', '#/schedules', 'Schedules'],
  ['enqueue', '#/enqueue', 'Enqueue a message'],
  ['server', '#/server', 'Server'],
];
for (const [name, hash, heading] of pages) {
  await step(`admin: ${name} loads, passes axe, screenshot`, async () => {
    await visit(admin, hash, heading);
    await axe(admin, name);
    await shot(admin, name);
  });
}

await step('keyboard: the skip link comes first and moves focus to the content', async () => {
  await visit(admin, '#/', 'Overview');
  await admin.reload();
  await admin.locator('#updated:has-text("updated")').waitFor();
  await admin.keyboard.press('Tab');
  check(await admin.evaluate(() => document.activeElement.textContent) === 'Skip to content', 'skip link focused first');
  await admin.keyboard.press('Enter');
  check(await admin.evaluate(() => document.activeElement.id) === 'main', 'focus moved to main');
  check(await admin.evaluate(() => location.hash) === '#/', 'the page stayed');
  await admin.keyboard.press('Tab');
  check(await admin.evaluate(() => document.activeElement.closest('main') !== null), 'Tab goes on inside the content');
});

await step('overview: the depth chart follows messages as they arrive', async () => {
  await visit(admin, '#/', 'Overview');
  const chart = admin.locator('.chart[data-last]').first();
  await chart.waitFor();
  const before = Number(await chart.getAttribute('data-last'));
  for (let i = 0; i < 5; i++) {
    await apiCall('POST', '/v1/queues/orders/messages', {messages: Array.from({length: 20}, (_, j) => ({payload: {i, j}}))});
  }
  await admin.waitForFunction(b => Number(document.querySelector('.chart[data-last]').dataset.last) >= b + 100, before, {timeout: WAIT});
  const row = admin.locator('tr[data-queue="orders"]');
  check(await row.isVisible(), 'the orders row is shown');
  await shot(admin, 'overview-live');
});

await step('queue: find a message by idempotency key, open it, see its trace', async () => {
  const r = await apiCall('POST', '/v1/queues/orders/messages', {payload: {find: 'me'}, idempotency_key: 'order-4711'});
  const id = r.ids[0];
  await visit(admin, '#/queues/orders', 'Queue orders');
  await admin.getByLabel('Message id or idempotency key').fill('order-4711');
  await admin.getByRole('button', {name: 'Search'}).click();
  await admin.locator(`tr[data-id="${id}"]`).waitFor();
  check(await admin.locator('tbody tr[data-id]').count() === 1, 'only the keyed message is listed');
  await admin.getByLabel('Message id or idempotency key').fill(id);
  await admin.getByRole('button', {name: 'Search'}).click();
  await admin.locator(`tr[data-id="${id}"]`).waitFor();
  check(await admin.locator('tbody tr[data-id]').count() === 1, 'the id finds its message');
  await admin.locator(`tr[data-id="${id}"] a`).click();
  await admin.getByRole('heading', {level: 1, name: `Message ${id}`}).waitFor();
  await admin.getByText('"find": "me"').waitFor();
  await admin.getByText('Correlation id').first().waitFor();
  await axe(admin, 'message');
  await shot(admin, 'message');
});

await step('queue: enqueue from the form, edit the config, pause and resume', async () => {
  await visit(admin, '#/queues/orders', 'Queue orders');
  const form = admin.getByRole('form', {name: 'Enqueue a message'});
  await form.getByLabel('Payload (JSON)').fill('{"from": "the form"}');
  await form.getByLabel('Priority').fill('7');
  await form.getByRole('button', {name: 'Enqueue'}).click();
  const link = form.locator('[role=status] a');
  await link.waitFor();
  const id = await link.textContent();
  const m = await apiCall('GET', `/v1/messages/${id}`);
  check(m.priority === 7 && m.payload.from === 'the form', 'the form enqueued what it said');

  const config = admin.getByRole('form', {name: 'Queue configuration'});
  await config.getByLabel('Max attempts').fill('9');
  await config.getByRole('button', {name: 'Save configuration'}).click();
  const orders = await eventually(() => apiCall('GET', '/v1/queues/orders'), q => q.config.max_attempts === 9);
  check(orders.config.max_attempts === 9, 'max_attempts saved');

  await admin.getByRole('button', {name: 'Resume'}).click();
  await admin.getByRole('button', {name: 'Pause'}).waitFor();
  check((await apiCall('GET', '/v1/queues/orders')).config.paused === false, 'resumed');
  await admin.getByRole('button', {name: 'Pause'}).click();
  await admin.getByRole('button', {name: 'Resume'}).waitFor();
  check((await apiCall('GET', '/v1/queues/orders')).config.paused === true, 'paused again');
});

await step('dead letters: replay one by clicking', async () => {
  const dead = await apiCall('GET', '/v1/dlq?queue=failing');
  check(dead.items.length >= 1, 'a dead letter of failing exists');
  const id = dead.items[0].id;
  await visit(admin, '#/dlq', 'Dead letters');
  const row = admin.locator(`tr[data-id="${id}"]`);
  await row.getByRole('button', {name: 'Replay'}).click();
  await row.waitFor({state: 'detached'});
  const m = await apiCall('GET', `/v1/messages/${id}`);
  check(m.state === 'ready', `the replayed message is ready again (${m.state})`);
});

await step('dead letters: purge the whole filter result after a confirmation with the count', async () => {
  const before = (await apiCall('GET', '/v1/dlq?queue=bulk')).items.length;
  check(before === 3, `three dead letters in bulk (${before})`);
  await visit(admin, '#/dlq', 'Dead letters');
  await admin.getByLabel('Queue').selectOption('bulk');
  await admin.locator('tbody tr[data-id]').nth(2).waitFor();
  await admin.getByRole('button', {name: 'Purge all matching…'}).click();
  const dialog = admin.getByRole('dialog');
  await dialog.waitFor();
  const text = await dialog.textContent();
  check(text.includes('all 3 dead letters matching queue bulk'), `the confirmation names the count: ${text}`);
  await shot(admin, 'dead-letters-confirm');
  await dialog.getByRole('button', {name: 'Purge 3'}).click();
  await admin.getByText('No dead letters match the filter.').waitFor();
  check((await apiCall('GET', '/v1/dlq?queue=bulk')).items.length === 0, 'bulk has no dead letters');
  check((await apiCall('GET', '/v1/dlq?queue=keep')).items.length === 1, 'other queues keep theirs');
});

await step('dead letters: inspect a payload and mark it reviewed', async () => {
  const id = (await apiCall('GET', '/v1/dlq?queue=keep')).items[0].id;
  await visit(admin, '#/dlq', 'Dead letters');
  const row = admin.locator(`tr[data-id="${id}"]`);
  await row.getByText('Inspect').click();
  await row.getByText('"do": "trap"').waitFor();
  await row.getByRole('button', {name: 'Mark reviewed'}).click();
  await row.getByText('reviewed', {exact: true}).waitFor();
  check((await apiCall('GET', '/v1/dlq?queue=keep')).items[0].reviewed === true, 'marked reviewed');
});

await step('plugins: deploy by upload with progress, then roll back and activate', async () => {
  await visit(admin, '#/plugins', 'Plugins');
  const form = admin.getByRole('form', {name: 'Deploy a plugin'});
  await form.getByLabel('Plugin name').fill('uploaded');
  await form.getByLabel('Component (.wasm)').setInputFiles(PLUGIN);
  await form.getByRole('button', {name: 'Deploy'}).click();
  await form.getByText('Deployed uploaded version 1').waitFor({timeout: 60000});
  check(await form.locator('progress').evaluate(p => p.value) === 100, 'progress reached 100');
  const p = await apiCall('GET', '/v1/plugins/uploaded');
  check(p.active_version === 1, 'uploaded@1 is active');
  await admin.locator('tr[data-plugin="uploaded"]').waitFor();

  await visit(admin, '#/plugins/echo', 'Plugin echo');
  await admin.getByRole('button', {name: 'Activate 1'}).click();
  await admin.locator('tr[data-version="1"]').getByText('active').waitFor();
  check((await apiCall('GET', '/v1/plugins/echo')).active_version === 1, 'echo@1 activated');
  await admin.getByRole('button', {name: 'Activate 2'}).click();
  await admin.locator('tr[data-version="2"]').getByText('active').waitFor();
  check((await apiCall('GET', '/v1/plugins/echo')).active_version === 2, 'echo@2 activated again');
});

await step('schedules: run now', async () => {
  const manual = async () => ((await apiCall('GET', `/v1/schedules/${SCHEDULE}`)).fires || []).filter(f => f.manual).length;
  const before = await manual();
  await visit(admin, '#/schedules', 'Schedules');
  await admin.locator(`tr[data-schedule="${SCHEDULE}"]`).getByRole('button', {name: 'Run now'}).click();
  check(await eventually(manual, n => n !== before) === before + 1, 'the schedule ran once, by hand');
  const row = admin.locator(`tr[data-schedule="${SCHEDULE}"]`);
  await row.getByText('Show').click();
  await row.getByText('(run now)').waitFor();
  await shot(admin, 'schedules-fired');
});

await step('schedules: change one from its Edit form', async () => {
  await visit(admin, '#/schedules', 'Schedules');
  await admin.locator(`tr[data-schedule="${SCHEDULE}"]`).getByRole('button', {name: 'Edit'}).click();
  const form = admin.getByRole('form', {name: `Change schedule ${SCHEDULE}`});
  await form.getByLabel('Priority').fill('3');
  await form.getByRole('button', {name: `Save schedule ${SCHEDULE}`}).click();
  const s = await eventually(() => apiCall('GET', `/v1/schedules/${SCHEDULE}`), x => x.priority === 3);
  check(s.priority === 3 && s.cron === '0 0 1 1 *', `priority changed, the rest kept: ${JSON.stringify(s)}`);
});

await step('overview: create a queue from the form', async () => {
  await visit(admin, '#/', 'Overview');
  const form = admin.getByRole('form', {name: 'Create a queue'});
  await form.getByLabel('Name').fill('made-in-ui');
  await form.getByLabel('Handler').fill('echo');
  await form.getByRole('button', {name: 'Create queue'}).click();
  await admin.getByRole('heading', {level: 1, name: 'Queue made-in-ui'}).waitFor();
  check((await apiCall('GET', '/v1/queues/made-in-ui')).config.handler === 'echo', 'the queue exists with its handler');
});

await step('enqueue page: publish to a topic', async () => {
  await visit(admin, '#/enqueue', 'Enqueue a message');
  const form = admin.getByRole('form', {name: 'Enqueue a message'});
  await form.getByLabel('Send to').selectOption('topic');
  await form.getByLabel('Topic').fill('orders.eu.paid');
  await form.getByRole('button', {name: 'Enqueue'}).click();
  await form.getByText('Published to orders.eu.paid').waitFor();
  const id = await form.locator('[role=status] a').first().textContent();
  check((await apiCall('GET', `/v1/messages/${id}`)).queue === 'orders', 'the route delivered it to orders');
});

await step('plugin page: grants and configuration', async () => {
  await visit(admin, '#/plugins/echo', 'Plugin echo');
  const grants = admin.getByRole('form', {name: 'Grants'});
  await grants.getByLabel('Key-value keys at most').fill('10');
  await grants.getByRole('button', {name: 'Save grants'}).click();
  const granted = await eventually(() => apiCall('GET', '/v1/plugins/echo/grants'), g => g.api_grants.kv_max_keys === 10);
  check(granted.api_grants.kv_max_keys === 10, 'the grant was saved');
  const config = admin.getByRole('form', {name: 'Set configuration'});
  await config.getByLabel('Key', {exact: true}).fill('api_key');
  await config.getByLabel('Value').fill('s3cr3t-value');
  await config.getByLabel('Secret (write-only)').check();
  await config.getByRole('button', {name: 'Set'}).click();
  await admin.getByText('api_key').first().waitFor();
  // The form clears the value once the server has taken it.
  await admin.waitForFunction(() => document.querySelector('form[aria-label="Set configuration"] input[name=value]').value === '');
  check(!(await admin.locator('main').innerText()).includes('s3cr3t-value'), 'the secret is not shown back');
  check((await apiCall('GET', '/v1/plugins/echo/config')).secrets.includes('api_key'), 'the secret was stored');
});

await step('routes: which routes would this topic reach', async () => {
  await visit(admin, '#/routes', 'Routes');
  await admin.getByRole('textbox', {name: 'Topic'}).fill('orders.eu.paid');
  await admin.getByRole('button', {name: 'Check'}).click();
  await admin.getByText('1 route match orders.eu.paid').waitFor();
  await admin.getByText('nowhere: the publish is refused').waitFor();
  await shot(admin, 'routes-reach');

  const form = admin.getByRole('form', {name: 'Add a route'});
  await form.getByLabel('Pattern').fill('audit.#');
  await form.getByLabel('Queue').selectOption('keep');
  await form.getByRole('button', {name: 'Add route'}).click();
  const routes = await eventually(() => apiCall('GET', '/v1/routes'), r => r.routes.some(x => x.pattern === 'audit.#'));
  const added = routes.routes.find(x => x.pattern === 'audit.#');
  check(added && added.queue === 'keep', 'the route was added');
  const row = admin.locator(`tr[data-route="${added.id}"]`);
  await row.getByRole('button', {name: 'Delete'}).click();
  await admin.getByRole('dialog').getByRole('button', {name: 'Delete route'}).click();
  await row.waitFor({state: 'detached'});
  check(!(await apiCall('GET', '/v1/routes')).routes.some(x => x.id === added.id), 'the route was deleted');
});

check(admin.problems.length === 0, admin.problems.join('\n'));

// What a reader sees: every page, no control that changes anything.
const READ_ONLY_BUTTONS = new Set(['Search', 'Show', 'Check', 'Load more']);
const reader = await signedIn(READER, 'reader');
for (const [name, hash, heading] of pages.filter(p => p[0] !== 'enqueue')) {
  await step(`reader: ${name} has no action controls`, async () => {
    await visit(reader, hash, heading);
    const buttons = await reader.locator('main button').allTextContents();
    const actions = buttons.filter(b => !READ_ONLY_BUTTONS.has(b.trim()));
    check(actions.length === 0, `no action buttons for a reader on ${name}: ${actions.join(', ')}`);
    check(await reader.locator('main input[type=file], main input[type=checkbox]').count() === 0, 'no upload or selection');
    if (name === 'overview') await shot(reader, 'reader-overview');
  });
}
await step('reader: the enqueue page is not offered', async () => {
  const links = await reader.locator('#nav a').allTextContents();
  check(!links.includes('Enqueue'), `no Enqueue link for a reader: ${links}`);
});
check(reader.problems.length === 0, reader.problems.join('\n'));

// A producer: enqueue, and read back only its own messages.
const producer = await signedIn(PRODUCER, 'producer');
await step('producer: enqueues from the form and reads back only its own message', async () => {
  const links = await producer.locator('#nav a').allTextContents();
  check(links.join(',') === 'Find message,Enqueue', `a producer is offered only its pages: ${links}`);
  await visit(producer, '#/enqueue', 'Enqueue a message');
  const form = producer.getByRole('form', {name: 'Enqueue a message'});
  await form.getByLabel('Queue').fill('orders');
  await form.getByRole('button', {name: 'Enqueue'}).click();
  const link = form.locator('[role=status] a');
  await link.waitFor();
  const id = await link.textContent();
  await producer.locator(`tbody tr[data-id="${id}"]`).waitFor();
  await axe(producer, 'producer-enqueue');
  await shot(producer, 'producer-enqueue');
  await link.click();
  await producer.getByRole('heading', {level: 1, name: `Message ${id}`}).waitFor();
  check(await producer.locator('main button', {hasText: 'Cancel message'}).count() === 0, 'no cancel for a producer');
  const other = (await apiCall('GET', '/v1/queues/orders/messages?limit=1')).items[0].id;
  await producer.goto(`${BASE}/ui/#/messages/${other}`);
  await producer.locator('#page-error .error-box').waitFor();
});

await browser.close();
if (failed) {
  console.error('the dashboard tests failed');
  process.exit(1);
}
console.log('the dashboard tests passed');
