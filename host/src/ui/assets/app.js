// The Spool dashboard: one page, no build step, no framework. Every figure comes from the same
// /v1 API the CLI uses, with the token the operator typed in (kept in this tab's session
// storage only). Pages poll every POLL_MS while they are shown.
'use strict';

const POLL_MS = 1500;
const TOKEN_KEY = 'spool.token';
const STATES = ['scheduled', 'ready', 'leased', 'acked', 'dead', 'cancelled', 'expired'];
const CATEGORIES = ['trap', 'fuel', 'timeout', 'memory', 'handler', 'no-plugin', 'interface',
  'lease-expired', 'host', 'filter'];
const COLORS = ['#0b57b8', '#a4161a', '#146c2e', '#8a4b00', '#6f2da8', '#00707a', '#b8005c',
  '#4a5361'];

const S = {
  token: sessionStorage.getItem(TOKEN_KEY),
  me: null,
  // The shown page's refresh function and timer.
  refresh: null,
  timer: null,
  busy: null,
  // Bumped on every navigation, so a slow refresh of a page left behind draws nothing.
  epoch: 0,
  // Live samples per queue taken by the overview since the page loaded: {t, depth, acked}.
  samples: new Map(),
};

// --- DOM ------------------------------------------------------------------------------------

// h('button', {class: 'x', onclick: f}, 'text', child...): an element. `null`/`false`
// children are skipped, so conditional parts read inline.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

function append(el, ...children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

let fieldSeq = 0;
// A labelled form control; `control` is an input, select or textarea element.
function field(label, control, hint) {
  const id = control.id || `f${++fieldSeq}`;
  control.id = id;
  const hintEl = hint ? h('span', {class: 'hint', id: `${id}-hint`}, hint) : null;
  if (hintEl) control.setAttribute('aria-describedby', hintEl.id);
  if (control.type === 'checkbox') {
    return h('div', {class: 'field check'}, control, h('label', {for: id}, label), hintEl);
  }
  return h('div', {class: 'field'}, h('label', {for: id}, label), control, hintEl);
}

function select(name, options, value) {
  return h('select', {name},
    options.map(([v, label]) => h('option', {value: v, selected: v === value}, label)));
}

function table(caption, headers, rows, empty) {
  if (!rows.length) return h('p', {class: 'hint'}, empty || 'None.');
  return h('div', {class: 'scroll'}, h('table', {},
    h('caption', {class: caption ? '' : 'visually-hidden'}, caption || 'Items'),
    h('thead', {}, h('tr', {}, headers.map(c => {
      const [text, cls] = Array.isArray(c) ? c : [c, null];
      return h('th', {scope: 'col', class: cls}, text);
    }))),
    h('tbody', {}, rows)));
}

function td(content, cls) {
  return h('td', {class: cls}, content);
}

function num(n) {
  return n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US');
}

function rate(n) {
  return n === null || n === undefined ? '–' : (n >= 10 ? n.toFixed(0) : n.toFixed(1));
}

function age(ms) {
  if (ms === null || ms === undefined) return '–';
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function when(ms) {
  if (ms === null || ms === undefined) return '–';
  const d = new Date(ms);
  const text = d.toLocaleString('en-GB', {hour12: false});
  return h('time', {datetime: d.toISOString(), title: d.toISOString()}, text);
}

// An error in a table cell: its first line, cut at 160 characters (the message page shows it
// whole, backtrace included).
function shortError(text) {
  const first = text.split('\n')[0];
  const cut = first.length > 160 ? first.slice(0, 160) + '…' : first;
  return h('span', {class: 'err', title: text}, cut);
}

function badge(text, kind) {
  return h('span', {class: `badge ${kind || 'muted'}`}, text);
}

function stateBadge(state) {
  const kind = {acked: 'ok', dead: 'bad', expired: 'warn', cancelled: 'muted', leased: 'warn'};
  return badge(state, kind[state] || 'muted');
}

function breakerBadge(b) {
  if (!b || !b.enabled) return badge('off', 'muted');
  const kind = {closed: 'ok', open: 'bad', 'half-open': 'warn'}[b.state] || 'muted';
  return badge(b.state, kind);
}

// `consuming`, or why the queue's messages wait (paused, no handler, plugin missing, ...).
function consumerBadge(q) {
  if (q.consumer.state === 'consuming') return badge('consuming', 'ok');
  return badge((q.consumer.cause || 'waiting').replace(/_/g, ' '), 'warn');
}

function toast(text, bad) {
  const box = document.getElementById('toast');
  const item = h('div', {class: bad ? 'bad' : ''}, text);
  box.append(item);
  setTimeout(() => item.remove(), bad ? 9000 : 4000);
}

// A modal confirmation; resolves to true when confirmed. Keyboard: Escape cancels.
function confirmDialog(text, action) {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  const ok = document.getElementById('confirm-ok');
  ok.textContent = action || 'Confirm';
  return new Promise(resolve => {
    const done = value => {
      ok.onclick = cancel.onclick = dialog.oncancel = null;
      if (dialog.open) dialog.close();
      resolve(value);
    };
    const cancel = document.getElementById('confirm-cancel');
    ok.onclick = () => done(true);
    cancel.onclick = () => done(false);
    dialog.oncancel = () => done(false);
    dialog.showModal();
    cancel.focus();
  });
}

// --- API ------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function authHeaders() {
  return S.token ? {Authorization: `Bearer ${S.token}`} : {};
}

async function api(method, path, body) {
  const init = {method, headers: authHeaders()};
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'unreachable', `The server did not answer (${e.message}).`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (!response.ok) {
    const err = data && data.error ? data.error : {code: 'http_' + response.status, message: text};
    if (response.status === 401) signOut(err.message);
    throw new ApiError(response.status, err.code, err.message);
  }
  return data;
}

const enc = encodeURIComponent;

function query(params) {
  const q = Object.entries(params).filter(([, v]) => v !== '' && v !== null && v !== undefined);
  return q.length ? '?' + q.map(([k, v]) => `${k}=${enc(v)}`).join('&') : '';
}

// Runs an action from a button: disables it meanwhile, reports the outcome, refreshes.
async function act(button, what, fn) {
  if (button) button.disabled = true;
  try {
    const result = await fn();
    toast(what);
    await refreshNow();
    return result;
  } catch (e) {
    toast(`${what} failed: ${e.message}`, true);
    return undefined;
  } finally {
    if (button && button.isConnected) button.disabled = false;
  }
}

function isAdmin() {
  return S.me && S.me.role === 'admin';
}

// --- sign-in and navigation ---------------------------------------------------------------

const PAGES = [
  {path: '', label: 'Overview', roles: ['admin', 'reader'], render: overviewPage},
  {path: 'queues', label: null, roles: ['admin', 'reader'], render: queuePage},
  {path: 'messages', label: 'Find message', roles: ['admin', 'reader', 'producer'], render: messagePage},
  {path: 'dlq', label: 'Dead letters', roles: ['admin', 'reader'], render: dlqPage},
  {path: 'plugins', label: 'Plugins', roles: ['admin', 'reader'], render: pluginsPage},
  {path: 'routes', label: 'Routes', roles: ['admin', 'reader'], render: routesPage},
  {path: 'schedules', label: 'Schedules', roles: ['admin', 'reader'], render: schedulesPage},
  {path: 'enqueue', label: 'Enqueue', roles: ['admin', 'producer'], render: enqueuePage},
  {path: 'server', label: 'Server', roles: ['admin', 'reader'], render: serverPage},
];

function signOut(reason) {
  S.token = null;
  S.me = null;
  sessionStorage.removeItem(TOKEN_KEY);
  stopPolling();
  showLogin(reason);
}

function showLogin(reason) {
  replace(document.getElementById('nav'));
  replace(document.getElementById('who'));
  const input = h('input', {type: 'password', name: 'token', autocomplete: 'off', required: true});
  const error = h('div', {role: 'alert'}, reason ? h('div', {class: 'error-box'}, reason) : null);
  const form = h('form', {class: 'panel', onsubmit: async e => {
    e.preventDefault();
    S.token = input.value.trim();
    try {
      S.me = await api('GET', '/v1/whoami');
    } catch (err) {
      replace(error, h('div', {class: 'error-box'}, err.message));
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, S.token);
    start();
  }},
  field('API token', input, 'Kept in this browser tab only, and sent with every request.'),
  h('p', {}, h('button', {type: 'submit'}, 'Sign in')));
  replace(document.getElementById('main'),
    h('div', {class: 'login'},
      h('h1', {}, 'Sign in to Spool'),
      h('p', {}, 'This server requires an API token. Create one with ',
        h('code', {}, 'spool token new NAME --role reader'), '.'),
      error, form));
  input.focus();
}

async function boot() {
  try {
    S.me = await api('GET', '/v1/whoami');
  } catch (e) {
    if (e.status !== 401) {
      replace(document.getElementById('main'),
        h('div', {class: 'error-box', role: 'alert'}, `Cannot reach Spool: ${e.message}`));
    }
    return;
  }
  start();
}

function start() {
  const nav = document.getElementById('nav');
  replace(nav, PAGES.filter(p => p.label && p.roles.includes(S.me.role))
    .map(p => h('a', {href: `#/${p.path}`, 'data-page': p.path}, p.label)));
  const who = document.getElementById('who');
  replace(who, S.me.tokens_required
    ? [h('span', {}, `${S.me.name} (${S.me.role})`),
      h('button', {class: 'secondary small', onclick: () => signOut('Signed out.')}, 'Sign out')]
    : [h('span', {}, 'No tokens: local admin')]);
  route();
}

function stopPolling() {
  clearInterval(S.timer);
  S.timer = null;
  S.refresh = null;
}

async function refreshNow() {
  // One refresh at a time per page; a page left behind may still finish its own.
  const epoch = S.epoch;
  if (!S.refresh || S.busy === epoch) return;
  S.busy = epoch;
  try {
    await S.refresh(epoch);
  } catch (e) {
    if (epoch === S.epoch) showPageError(e);
  } finally {
    if (S.busy === epoch) S.busy = null;
  }
}

function showPageError(e) {
  const box = document.getElementById('page-error');
  if (box) replace(box, h('div', {class: 'error-box'}, e.message));
}

async function route() {
  if (!S.me) return;
  stopPolling();
  S.epoch++;
  const [, top = '', ...rest] = location.hash.replace(/^#/, '').split('/');
  const page = PAGES.find(p => p.path === top && p.roles.includes(S.me.role))
    || PAGES.find(p => p.roles.includes(S.me.role));
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.page === page.path || (page.path === 'queues' && a.dataset.page === '')) {
      a.setAttribute('aria-current', 'page');
    } else {
      a.removeAttribute('aria-current');
    }
  }
  const main = document.getElementById('main');
  const epoch = S.epoch;
  // Each page is built in a view of its own and shown only if no later navigation happened
  // meanwhile: a slow page left behind must not draw into the next one.
  const view = h('div', {});
  const status = h('p', {class: 'live', id: 'updated'});
  let refresh = null;
  try {
    refresh = await page.render(view, rest.map(decodeURIComponent));
  } catch (e) {
    if (epoch !== S.epoch) return;
    replace(main, h('h1', {}, 'Cannot show this page'),
      h('div', {class: 'error-box', role: 'alert'}, e.message));
    return;
  }
  if (epoch !== S.epoch) return;
  append(view, h('div', {id: 'page-error', role: 'alert'}), status);
  replace(main, view);
  if (refresh) {
    S.refresh = async at => {
      await refresh(at);
      if (at === S.epoch) {
        replace(status, `Live: updated ${new Date().toLocaleTimeString('en-GB', {hour12: false})}`);
        const box = document.getElementById('page-error');
        if (box) replace(box);
      }
    };
    await refreshNow();
    if (epoch === S.epoch) S.timer = setInterval(refreshNow, POLL_MS);
  }
  // After a navigation inside the page, the new content is where the keyboard goes on; on the
  // first load the keyboard starts at the top (the skip link).
  if (S.navigated) main.focus({preventScroll: true});
  S.navigated = true;
}

// --- charts ---------------------------------------------------------------------------------

// A time chart (uPlot) of one value per queue. `series` maps a queue name to [t_seconds,
// value] pairs. The container carries the newest total in data-last and the number of points
// in data-points, and a text summary for screen readers.
function drawChart(box, title, series, unit) {
  const names = [...series.keys()].sort();
  const times = [...new Set(names.flatMap(n => series.get(n).map(p => p[0])))].sort((a, b) => a - b);
  const index = new Map(times.map((t, i) => [t, i]));
  const columns = names.map(n => {
    const col = new Array(times.length).fill(null);
    for (const [t, v] of series.get(n)) col[index.get(t)] = v;
    return col;
  });
  let last = 0;
  for (const col of columns) {
    const v = col.filter(x => x !== null).pop();
    last += v || 0;
  }
  box.dataset.points = String(times.length);
  box.dataset.last = String(last);
  box.setAttribute('aria-label', `${title}: ${names.length} queues, latest total ${rate(last)} ${unit}`);
  const width = Math.max(320, box.clientWidth || 600);
  const data = [times, ...columns];
  const key = names.join('\u0000');
  if (box.plot && box.plotKey === key && box.plotWidth === width) {
    box.plot.setData(data);
    return;
  }
  if (box.plot) box.plot.destroy();
  box.replaceChildren();
  if (typeof uPlot === 'undefined') {
    box.append(h('p', {class: 'hint'}, 'The chart library did not load.'));
    return;
  }
  box.plot = new uPlot({
    width,
    height: 220,
    title,
    scales: {y: {range: (u, min, max) => [0, Math.max(1, max * 1.1)]}},
    axes: [{}, {label: unit, size: 60}],
    series: [{}, ...names.map((n, i) => ({
      label: n, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true,
      value: (u, v) => v === null ? '–' : rate(v),
    }))],
  }, data, box);
  box.plotKey = key;
  box.plotWidth = width;
}

function chartBox(label) {
  return h('div', {class: 'chart panel', role: 'img', 'aria-label': label});
}

// Points of the history: depth (scheduled + ready + leased) and acks per second between
// consecutive minutes.
function historySeries(points) {
  const depth = points.map(p => [p.minute / 1000, p.scheduled + p.ready + p.leased]);
  const acked = [];
  for (let i = 1; i < points.length; i++) {
    const dt = (points[i].minute - points[i - 1].minute) / 1000;
    acked.push([points[i].minute / 1000, Math.max(0, points[i].acked - points[i - 1].acked) / dt]);
  }
  return {depth, acked};
}

// --- overview -------------------------------------------------------------------------------

async function overviewPage(main) {
  const depthBox = chartBox('Depth by queue');
  const ackBox = chartBox('Acked per second by queue');
  const body = h('div', {});
  append(main, h('h1', {}, 'Overview'),
    h('p', {class: 'sub'}, 'Every queue, live. Charts: the last hour from the server\'s per-minute history, then live samples.'),
    h('div', {class: 'grid'}, depthBox, ackBox),
    h('h2', {id: 'queues-heading'}, 'Queues'), body,
    isAdmin() ? [h('h2', {}, 'Create a queue'), queueCreateForm()] : null);
  const history = new Map();
  let historyAt = 0;
  return async epoch => {
    const {queues} = await api('GET', '/v1/queues');
    if (Date.now() - historyAt > 30000) {
      historyAt = Date.now();
      await Promise.all(queues.map(async q => {
        const r = await api('GET', `/v1/queues/${enc(q.name)}/history?minutes=60`);
        history.set(q.name, historySeries(r.points));
      }));
    }
    if (epoch !== S.epoch) return;
    const now = Date.now() / 1000;
    const depth = new Map();
    const acked = new Map();
    for (const q of queues) {
      const st = q.stats;
      const samples = S.samples.get(q.name) || [];
      samples.push({t: now, depth: st.scheduled + st.ready + st.leased, acked: q.stats.rates.acked_per_s});
      while (samples.length && samples[0].t < now - 3600) samples.shift();
      S.samples.set(q.name, samples);
      const hist = history.get(q.name) || {depth: [], acked: []};
      const firstLive = samples.length ? samples[0].t : now;
      depth.set(q.name, [...hist.depth.filter(p => p[0] < firstLive), ...samples.map(s => [s.t, s.depth])]);
      acked.set(q.name, [...hist.acked.filter(p => p[0] < firstLive), ...samples.map(s => [s.t, s.acked])]);
    }
    drawChart(depthBox, 'Depth (scheduled + ready + leased)', depth, 'messages');
    drawChart(ackBox, 'Acked per second', acked, 'msgs/s');
    replace(body, table('Every queue', [
      'Queue', ['Scheduled', 'num'], ['Ready', 'num'], ['Leased', 'num'], ['Dead letters', 'num'],
      ['In flight', 'num'], ['Acked/s', 'num'], ['Failed/s', 'num'], ['Error rate', 'num'],
      ['Oldest ready', 'num'], 'Breaker', 'Consumer',
    ], queues.map(q => {
      const st = q.stats;
      const r = q.stats.rates;
      const tried = r.acked_per_s + r.failed_per_s;
      return h('tr', {'data-queue': q.name},
        h('th', {scope: 'row'}, h('a', {href: `#/queues/${enc(q.name)}`}, q.name)),
        td(num(st.scheduled), 'num'), td(num(st.ready), 'num'), td(num(st.leased), 'num'),
        td(num(st.dlq_depth), 'num'), td(num(q.stats.in_flight), 'num'),
        td(rate(r.acked_per_s), 'num'), td(rate(r.failed_per_s), 'num'),
        td(tried ? `${(100 * r.failed_per_s / tried).toFixed(1)} %` : '–', 'num'),
        td(age(st.oldest_ready_age_ms), 'num'), td(breakerBadge(q.stats.breaker)),
        td(consumerBadge(q)));
    }), 'No queues yet. Create one with `spool queue create NAME --handler PLUGIN`.'));
  };
}

// --- queue ----------------------------------------------------------------------------------

function queueCreateForm() {
  const name = h('input', {name: 'name', required: true, pattern: '[A-Za-z0-9._\\-]+'});
  const handler = h('input', {name: 'handler', placeholder: 'a deployed handler plugin'});
  const concurrency = h('input', {name: 'concurrency', type: 'number', min: '1', placeholder: '4'});
  const attempts = h('input', {name: 'max_attempts', type: 'number', min: '1', placeholder: '5'});
  const form = h('form', {class: 'panel inline', 'aria-label': 'Create a queue', onsubmit: async e => {
    e.preventDefault();
    const body = {};
    if (handler.value.trim()) body.handler = handler.value.trim();
    if (concurrency.value) body.concurrency = Number(concurrency.value);
    if (attempts.value) body.max_attempts = Number(attempts.value);
    const q = name.value.trim();
    const done = await act(form.querySelector('button'), `Queue ${q} saved`, () => api('PUT', `/v1/queues/${enc(q)}`, body));
    if (done) location.hash = `#/queues/${enc(q)}`;
  }}, field('Name', name), field('Handler', handler), field('Concurrency', concurrency),
  field('Max attempts', attempts), h('button', {type: 'submit'}, 'Create queue'));
  return form;
}

const CONFIG_FIELDS = [
  ['handler', 'Handler plugin', 'text'],
  ['concurrency', 'Concurrency', 'number'],
  ['max_attempts', 'Max attempts', 'number'],
  ['backoff_base_ms', 'Backoff base (ms)', 'number'],
  ['backoff_max_ms', 'Backoff max (ms)', 'number'],
  ['lease_ms', 'Lease (ms)', 'number'],
  ['timeout_ms', 'Timeout (ms)', 'number'],
  ['fuel', 'Fuel per call', 'number'],
  ['memory_mb', 'Memory (MB)', 'number'],
  ['default_ttl_ms', 'Default TTL (ms)', 'number'],
  ['breaker_failures', 'Breaker: failures to open (0 = off)', 'number'],
  ['breaker_cooldown_ms', 'Breaker cool-down (ms)', 'number'],
  ['breaker_max_cooldown_ms', 'Breaker max cool-down (ms)', 'number'],
  ['strategy', 'Strategy', ['priority', 'fifo', 'lifo', 'weighted-random']],
  ['instance_mode', 'Instances (plugin: its own default)', ['plugin', 'fresh', 'reuse']],
];

function configForm(name, config) {
  const controls = {};
  const fields = CONFIG_FIELDS.map(([key, label, type]) => {
    const value = config[key] === null || config[key] === undefined ? '' : String(config[key]);
    const control = Array.isArray(type)
      ? select(key, type.map(t => [t, t]), value)
      : h('input', {name: key, type, value, min: type === 'number' ? '0' : null});
    controls[key] = control;
    return field(label, control);
  });
  const form = h('form', {class: 'panel', 'aria-label': 'Queue configuration', onsubmit: async e => {
    e.preventDefault();
    const patch = {};
    for (const [key, , type] of CONFIG_FIELDS) {
      const raw = controls[key].value.trim();
      const old = config[key] === null || config[key] === undefined ? '' : String(config[key]);
      if (raw === old) continue;
      if (raw === '') patch[key] = null;
      else patch[key] = type === 'number' ? Number(raw) : raw;
    }
    if (!Object.keys(patch).length) {
      toast('Nothing changed.');
      return;
    }
    const saved = await act(form.querySelector('button'), `Saved ${Object.keys(patch).join(', ')}`,
      () => api('PUT', `/v1/queues/${enc(name)}`, patch));
    if (saved) Object.assign(config, saved.config);
  }}, h('div', {class: 'fields'}, fields), h('button', {type: 'submit'}, 'Save configuration'));
  return form;
}

function configList(config) {
  return h('dl', {class: 'kv panel'}, CONFIG_FIELDS.flatMap(([key, label]) =>
    [h('dt', {}, label), h('dd', {}, config[key] === null ? '–' : String(config[key]))]));
}

async function queuePage(main, [name]) {
  if (!name) {
    location.hash = '#/';
    return null;
  }
  const q = await api('GET', `/v1/queues/${enc(name)}`);
  const cards = h('div', {class: 'cards', 'aria-live': 'off'});
  const controls = h('div', {class: 'toolbar'});
  const chart = chartBox(`Depth of ${name}`);
  const list = h('div', {});
  const stateSel = select('state', [['', 'any state'], ...STATES.map(s => [s, s])], '');
  const search = h('input', {type: 'search', name: 'search', placeholder: 'id or idempotency key'});
  let more = null;
  const listForm = h('form', {class: 'inline', role: 'search', onsubmit: e => {
    e.preventDefault();
    more = null;
    refreshNow();
  }}, field('State', stateSel), field('Message id or idempotency key', search),
  h('button', {type: 'submit'}, 'Search'));
  stateSel.addEventListener('change', () => refreshNow());
  append(main, h('h1', {}, `Queue ${name}`), cards, controls, chart,
    h('h2', {}, 'Configuration'),
    isAdmin() ? configForm(name, q.config) : configList(q.config),
    h('h2', {}, 'Messages'), listForm, list,
    isAdmin() ? [h('h2', {}, 'Enqueue a message'), enqueueForm(name)] : null,
    isAdmin() ? [h('h2', {}, 'Delete the queue'), h('div', {class: 'panel'},
      h('p', {class: 'hint'}, 'Deleting a queue with live messages deletes them too.'),
      h('button', {class: 'danger', onclick: async e => {
        const ok = await confirmDialog(`Delete queue ${name} and every message in it? This cannot be undone.`, 'Delete queue');
        if (!ok) return;
        const done = await act(e.target, `Deleted queue ${name}`,
          () => api('DELETE', `/v1/queues/${enc(name)}?force=true`));
        if (done) location.hash = '#/';
      }}, 'Delete queue…'))] : null);
  const samples = [];
  let history = [];
  let historyAt = 0;
  return async epoch => {
    const now = await api('GET', `/v1/queues/${enc(name)}`);
    if (Date.now() - historyAt > 30000) {
      historyAt = Date.now();
      history = historySeries((await api('GET', `/v1/queues/${enc(name)}/history?minutes=60`)).points).depth;
    }
    const term = search.value.trim();
    let page;
    if (term && /^[1-9][0-9]{0,17}$/.test(term)) {
      const m = await api('GET', `/v1/messages/${term}`).catch(e => {
        if (e.status === 404) return null;
        throw e;
      });
      const byKey = await api('GET', `/v1/queues/${enc(name)}/messages${query({idempotency_key: term, state: stateSel.value})}`);
      page = {items: [...(m && m.queue === name ? [m] : []), ...byKey.items], next_cursor: null};
    } else {
      page = await api('GET', `/v1/queues/${enc(name)}/messages${query({state: stateSel.value, idempotency_key: term, limit: 50})}`);
    }
    if (epoch !== S.epoch) return;
    const st = now.stats;
    const live = now.stats;
    samples.push([Date.now() / 1000, st.scheduled + st.ready + st.leased]);
    drawChart(chart, 'Depth (scheduled + ready + leased)',
      new Map([[name, [...history.filter(p => p[0] < samples[0][0]), ...samples]]]), 'messages');
    replace(cards, [
      ['Scheduled', num(st.scheduled)], ['Ready', num(st.ready)], ['Leased', num(st.leased)],
      ['Dead letters', num(st.dlq_depth)], ['Acked/s', rate(live.rates.acked_per_s)],
      ['Failed/s', rate(live.rates.failed_per_s)], ['Oldest ready', age(st.oldest_ready_age_ms)],
      ['Enqueued total', num(st.enqueued)], ['Acked total', num(st.acked)],
    ].map(([l, n]) => h('div', {class: 'card'}, h('span', {class: 'n'}, n), h('span', {class: 'l'}, l))),
    h('div', {class: 'card'}, h('span', {class: 'n'}, breakerBadge(now.stats.breaker)), h('span', {class: 'l'}, 'Breaker')),
    h('div', {class: 'card'}, h('span', {class: 'n'}, consumerBadge(now)),
      h('span', {class: 'l'}, 'Consumer'), now.consumer.reason && now.consumer.reason !== now.consumer.cause ? h('span', {class: 'hint'}, ' ', now.consumer.reason) : null));
    if (isAdmin()) {
      replace(controls,
        now.config.paused
          ? h('button', {onclick: e => act(e.target, `Resumed ${name}`, () => api('PUT', `/v1/queues/${enc(name)}`, {paused: false}))}, 'Resume')
          : h('button', {class: 'secondary', onclick: e => act(e.target, `Paused ${name}`, () => api('PUT', `/v1/queues/${enc(name)}`, {paused: true}))}, 'Pause'),
        now.stats.breaker.enabled && now.stats.breaker.state !== 'closed'
          ? h('button', {class: 'secondary', onclick: e => act(e.target, 'Breaker reset', () => api('POST', `/v1/queues/${enc(name)}/breaker/reset`))}, 'Reset breaker')
          : null);
    }
    if (more) return;
    renderMessages(list, name, page, stateSel, term);
  };

  function renderMessages(box, queue, page, sel, term) {
    const rows = page.items.map(messageRow);
    const next = page.next_cursor
      ? h('button', {class: 'secondary', onclick: async e => {
        more = true;
        const p = await api('GET', `/v1/queues/${enc(queue)}/messages${query({state: sel.value, idempotency_key: term, limit: 50, cursor: page.next_cursor})}`);
        e.target.remove();
        const tbody = box.querySelector('tbody');
        if (tbody) append(tbody, p.items.map(messageRow));
        if (p.next_cursor) {
          page = p;
          box.append(e.target);
        }
      }}, 'Load more')
      : null;
    replace(box, table('Messages, oldest first', MESSAGE_COLUMNS,
      rows, term ? `No message of ${queue} has id or idempotency key "${term}".` : 'No messages.'), next);
  }
}

// The columns of `messageRow`.
const MESSAGE_COLUMNS = ['Id', 'State', ['Attempts', 'num'], ['Priority', 'num'], 'Idempotency key', 'Enqueued',
  'Available', 'Last error'];

function messageRow(m) {
  return h('tr', {'data-id': m.id},
    h('th', {scope: 'row'}, h('a', {href: `#/messages/${m.id}`, class: 'mono'}, m.id)),
    td(stateBadge(m.state)), td(m.attempts, 'num'), td(m.priority, 'num'),
    td(m.idempotency_key || '–'), td(when(m.enqueued_at_ms)), td(when(m.available_at_ms)),
    td(m.last_error ? shortError(m.last_error) : '–'));
}

// --- enqueue --------------------------------------------------------------------------------

// The form of `POST /v1/queues/{queue}/messages`; without `queue` it asks for a queue, or a
// topic to publish to (`POST /v1/topics/{topic}/messages`).
function enqueueForm(queue) {
  const queueInput = queue ? null : h('input', {name: 'queue', required: true});
  const targetKind = queue ? null : select('target', [['queue', 'a queue'], ['topic', 'a topic (publish)']], 'queue');
  if (targetKind) {
    targetKind.addEventListener('change', () => {
      queueInput.previousSibling.textContent = targetKind.value === 'topic' ? 'Topic' : 'Queue';
    });
  }
  const payload = h('textarea', {name: 'payload', spellcheck: 'false'}, '{"hello": "world"}');
  const priority = h('input', {name: 'priority', type: 'number', value: '0'});
  const delay = h('input', {name: 'delay_ms', type: 'number', min: '0', placeholder: '0'});
  const key = h('input', {name: 'idempotency_key'});
  const ttl = h('input', {name: 'ttl_ms', type: 'number', min: '1'});
  const headers = h('textarea', {name: 'headers', spellcheck: 'false', placeholder: 'name: value'});
  const result = h('div', {role: 'status'});
  const form = h('form', {class: 'panel', 'aria-label': 'Enqueue a message', onsubmit: async e => {
    e.preventDefault();
    let body;
    try {
      body = {payload: JSON.parse(payload.value)};
    } catch (err) {
      replace(result, h('div', {class: 'error-box'}, `The payload is not JSON: ${err.message}`));
      return;
    }
    if (priority.value !== '') body.priority = Number(priority.value);
    if (delay.value !== '') body.delay_ms = Number(delay.value);
    if (ttl.value !== '') body.ttl_ms = Number(ttl.value);
    if (key.value.trim()) body.idempotency_key = key.value.trim();
    const hs = {};
    for (const line of headers.value.split('\n')) {
      if (!line.trim()) continue;
      const at = line.indexOf(':');
      if (at < 1) {
        replace(result, h('div', {class: 'error-box'}, `Header line "${line}" is not "name: value".`));
        return;
      }
      hs[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
    if (Object.keys(hs).length) body.headers = hs;
    const target = queue || queueInput.value.trim();
    try {
      if (targetKind && targetKind.value === 'topic') {
        const r = await api('POST', `/v1/topics/${enc(target)}/messages`, body);
        r.ids.forEach(remember);
        replace(result, h('p', {}, `Published to ${target}: `, r.deliveries.map((d, i) => [i ? ', ' : '',
          h('a', {href: `#/messages/${d.id}`, class: 'mono'}, d.id), ` in ${d.queue}${d.dead ? ' (dead letter: its filter failed)' : ''}`]), '.'));
        toast(`Published to ${target}`);
        refreshNow();
        return;
      }
      const r = await api('POST', `/v1/queues/${enc(target)}/messages`, body);
      const id = r.ids[0];
      remember(id);
      replace(result, h('p', {}, r.existing && r.existing[0] ? 'An earlier message has this idempotency key: ' : 'Enqueued message ',
        h('a', {href: `#/messages/${id}`, class: 'mono'}, id), '.'));
      toast(`Enqueued ${id}`);
      refreshNow();
    } catch (err) {
      replace(result, h('div', {class: 'error-box'}, err.message));
    }
  }},
  h('div', {class: 'fields'},
    targetKind ? field('Send to', targetKind) : null,
    queueInput ? field('Queue', queueInput) : null,
    field('Priority', priority), field('Delay (ms)', delay), field('TTL (ms)', ttl),
    field('Idempotency key', key)),
  field('Payload (JSON)', payload),
  field('Headers, one "name: value" per line', headers),
  h('p', {}, h('button', {type: 'submit'}, 'Enqueue')), result);
  return form;
}

// Ids this tab enqueued: a producer may read only its own messages and cannot list queues.
function remember(id) {
  const ids = JSON.parse(sessionStorage.getItem('spool.mine') || '[]');
  ids.unshift(id);
  sessionStorage.setItem('spool.mine', JSON.stringify(ids.slice(0, 50)));
}

async function enqueuePage(main) {
  const mine = h('div', {});
  append(main, h('h1', {}, 'Enqueue a message'), enqueueForm(null),
    h('h2', {}, 'Messages enqueued from this tab'), mine);
  return async epoch => {
    const ids = JSON.parse(sessionStorage.getItem('spool.mine') || '[]');
    const found = await Promise.all(ids.slice(0, 20).map(id =>
      api('GET', `/v1/messages/${id}`).catch(() => null)));
    if (epoch !== S.epoch) return;
    replace(mine, table('Your messages', MESSAGE_COLUMNS,
      found.filter(Boolean).map(messageRow), 'None yet.'));
  };
}

// --- message --------------------------------------------------------------------------------

async function messagePage(main, [id]) {
  const input = h('input', {name: 'id', inputmode: 'numeric', value: id || '', required: true});
  append(main, h('h1', {}, id ? `Message ${id}` : 'Find a message'),
    h('form', {class: 'inline', role: 'search', onsubmit: e => {
      e.preventDefault();
      location.hash = `#/messages/${enc(input.value.trim())}`;
    }}, field('Message id', input), h('button', {type: 'submit'}, 'Show')));
  if (!id) return null;
  const detail = h('div', {});
  const actions = h('div', {class: 'toolbar'});
  const trace = h('div', {});
  append(main, actions, detail, h('h2', {}, 'Trace'), trace);
  return async epoch => {
    const m = await api('GET', `/v1/messages/${enc(id)}`);
    const t = await api('GET', `/v1/messages/${enc(id)}/trace`).catch(() => null);
    if (epoch !== S.epoch) return;
    let payload = m.payload;
    try {
      payload = JSON.stringify(m.payload, null, 2);
    } catch { /* shown as it came */ }
    replace(detail, h('div', {class: 'grid'},
      h('div', {class: 'panel'}, h('h2', {}, 'Details'), h('dl', {class: 'kv'},
        [['Queue', isAdmin() || S.me.role === 'reader' ? h('a', {href: `#/queues/${enc(m.queue)}`}, m.queue) : m.queue],
          ['State', stateBadge(m.state)], ['Attempts', m.attempts], ['Priority', m.priority],
          ['Plugin version', m.plugin_version || '–'], ['Last error', m.last_error ? h('pre', {class: 'err', tabindex: '0'}, m.last_error) : '–'],
          ['Error category', m.error_category || '–'], ['Enqueued', when(m.enqueued_at_ms)],
          ['Available', when(m.available_at_ms)], ['Lease expires', when(m.lease_expires_at_ms)],
          ['Finished', when(m.finished_at_ms)], ['Expires', when(m.expires_at_ms)],
          ['Reviewed', when(m.reviewed_at_ms)], ['Topic', m.topic || '–'],
          ['Correlation id', m.correlation_id || '–'], ['Idempotency key', m.idempotency_key || '–'],
          ['Producer', m.producer || '–']]
          .flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]))),
      h('div', {class: 'panel'}, h('h2', {}, 'Payload'), h('pre', {tabindex: '0', 'aria-label': 'Payload'}, payload),
        h('h2', {}, 'Headers'), table('Headers', ['Name', 'Value'],
          Object.entries(m.headers).map(([k, v]) => h('tr', {}, td(k), td(v))), 'No headers.'))));
    if (isAdmin()) {
      const b = [];
      if (['scheduled', 'ready', 'leased'].includes(m.state)) {
        b.push(h('button', {class: 'danger', onclick: e => act(e.target, `Cancelled ${id}`, () => api('DELETE', `/v1/messages/${id}`))}, 'Cancel message'));
      }
      if (m.state === 'scheduled') {
        b.push(h('button', {onclick: e => act(e.target, `${id} is ready now`, () => api('POST', `/v1/messages/${id}/requeue`))}, 'Make ready now'));
      }
      if (m.state === 'dead') b.push(...deadActions(m));
      replace(actions, b);
    }
    replace(trace, t ? traceTree(t, id) : h('p', {class: 'hint'}, 'No trace.'));
  };
}

// The chain of publishes a message belongs to, as a tree by parent.
function traceTree(t, current) {
  const children = new Map();
  const ids = new Set(t.messages.map(m => m.id));
  for (const m of t.messages) {
    const parent = m.parent_id && ids.has(m.parent_id) ? m.parent_id : null;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(m);
  }
  const branch = (parent, root) => h('ul', {class: root ? 'tree root' : 'tree'},
    (children.get(parent) || []).map(m => h('li', {},
      m.id === current ? h('strong', {}, m.id) : h('a', {href: `#/messages/${m.id}`, class: 'mono'}, m.id),
      ' ', stateBadge(m.state), ` ${m.queue}`, m.topic ? ` ← ${m.topic}` : '',
      m.plugin_version ? ` (${m.plugin_version})` : '', branch(m.id, false))));
  return h('div', {class: 'panel'}, h('p', {class: 'hint'}, `Correlation id ${t.correlation_id}`), branch(null, true));
}

// --- dead letters ---------------------------------------------------------------------------

function deadActions(m) {
  return [
    h('button', {onclick: e => act(e.target, `Replayed ${m.id}`, () => api('POST', `/v1/dlq/${m.id}/replay`))}, 'Replay'),
    // A route's filter failed on it: replaying runs the filter again, unless it is what is broken.
    m.error_category === 'filter'
      ? h('button', {class: 'secondary', title: 'Deliver to the route\'s queue without running the filter again',
        onclick: e => act(e.target, `Replayed ${m.id} without its filter`, () => api('POST', `/v1/dlq/${m.id}/replay?skip_filter=true`))}, 'Replay skipping filter')
      : null,
    m.reviewed || m.reviewed_at_ms ? null : h('button', {class: 'secondary', onclick: e => act(e.target, `Marked ${m.id} reviewed`, () => api('POST', `/v1/dlq/${m.id}/reviewed`))}, 'Mark reviewed'),
    h('button', {class: 'danger', onclick: e => act(e.target, `Purged ${m.id}`, () => api('DELETE', `/v1/dlq/${m.id}`))}, 'Purge'),
  ].filter(Boolean);
}

async function dlqPage(main) {
  const {queues} = await api('GET', '/v1/queues');
  const queueSel = select('queue', [['', 'every queue'], ...queues.map(q => [q.name, q.name])], '');
  const catSel = select('category', [['', 'any category'], ...CATEGORIES.map(c => [c, c])], '');
  const revSel = select('reviewed', [['', 'reviewed or not'], ['false', 'not reviewed'], ['true', 'reviewed']], '');
  const list = h('div', {});
  const bulk = h('div', {class: 'toolbar'});
  const selected = new Set();
  for (const s of [queueSel, catSel, revSel]) s.addEventListener('change', () => {
    selected.clear();
    refreshNow();
  });
  const filter = () => ({queue: queueSel.value, category: catSel.value, reviewed: revSel.value});
  const describe = f => [f.queue ? `queue ${f.queue}` : 'every queue', f.category ? `category ${f.category}` : null,
    f.reviewed === 'true' ? 'reviewed' : f.reviewed === 'false' ? 'not reviewed' : null].filter(Boolean).join(', ');
  // Counts the whole result of the filter, page by page (at most 100,000).
  const count = async f => {
    let n = 0;
    let cursor = null;
    for (let i = 0; i < 100; i++) {
      const p = await api('GET', `/v1/dlq${query({...f, limit: 1000, cursor})}`);
      n += p.items.length;
      if (!p.next_cursor) break;
      cursor = p.next_cursor;
    }
    return n;
  };
  const whole = async (button, verb) => {
    const f = filter();
    const n = await count(f);
    if (!n) {
      toast('No dead letters match the filter.');
      return;
    }
    const ok = await confirmDialog(`${verb === 'replay' ? 'Replay' : 'Purge'} all ${n} dead letters matching ${describe(f)}?`,
      `${verb === 'replay' ? 'Replay' : 'Purge'} ${n}`);
    if (!ok) return;
    const body = {limit: n};
    if (f.queue) body.queue = f.queue;
    if (f.category) body.category = f.category;
    if (f.reviewed) body.reviewed = f.reviewed === 'true';
    await act(button, `${verb === 'replay' ? 'Replayed' : 'Purged'} the dead letters matching ${describe(f)}`,
      () => api('POST', `/v1/dlq/${verb}`, body));
  };
  const onSelection = async (button, verb) => {
    const ids = [...selected];
    if (!ids.length) return;
    if (verb === 'purge' && !await confirmDialog(`Purge the ${ids.length} selected dead letters?`, `Purge ${ids.length}`)) return;
    const call = {
      replay: id => api('POST', `/v1/dlq/${id}/replay`),
      reviewed: id => api('POST', `/v1/dlq/${id}/reviewed`),
      purge: id => api('DELETE', `/v1/dlq/${id}`),
    }[verb];
    await act(button, `${verb === 'reviewed' ? 'Marked reviewed' : verb === 'replay' ? 'Replayed' : 'Purged'} ${ids.length} selected`, async () => {
      const failed = [];
      for (const id of ids) {
        await call(id).catch(e => failed.push(`${id}: ${e.message}`));
      }
      selected.clear();
      if (failed.length) throw new Error(failed.join('; '));
    });
  };
  if (isAdmin()) {
    append(bulk,
      h('span', {class: 'hint'}, 'Selected:'),
      h('button', {onclick: e => onSelection(e.target, 'replay')}, 'Replay selected'),
      h('button', {class: 'secondary', onclick: e => onSelection(e.target, 'reviewed')}, 'Mark selected reviewed'),
      h('button', {class: 'danger', onclick: e => onSelection(e.target, 'purge')}, 'Purge selected'),
      h('span', {class: 'hint'}, 'Whole filter:'),
      h('button', {onclick: e => whole(e.target, 'replay')}, 'Replay all matching…'),
      h('button', {class: 'danger', onclick: e => whole(e.target, 'purge')}, 'Purge all matching…'));
  }
  append(main, h('h1', {}, 'Dead letters'),
    h('form', {class: 'inline', 'aria-label': 'Filter', onsubmit: e => e.preventDefault()},
      field('Queue', queueSel), field('Category', catSel), field('Reviewed', revSel)),
    bulk, list);
  return async epoch => {
    const page = await api('GET', `/v1/dlq${query({...filter(), limit: 200})}`);
    if (epoch !== S.epoch) return;
    // Keep open payloads open across refreshes.
    const open = new Set([...list.querySelectorAll('details[open]')].map(d => d.dataset.id));
    replace(list, table(`Dead letters (${page.items.length}${page.next_cursor ? '+' : ''} shown, oldest first)`,
      [isAdmin() ? h('span', {class: 'visually-hidden'}, 'Select') : null, 'Id', 'Queue', 'Category', 'Error', ['Attempts', 'num'], 'Dead since', 'Reviewed', 'Payload', isAdmin() ? 'Actions' : null].filter(Boolean),
      page.items.map(d => h('tr', {'data-id': d.id},
        isAdmin() ? td(h('input', {type: 'checkbox', 'aria-label': `Select ${d.id}`, checked: selected.has(d.id),
          onchange: e => e.target.checked ? selected.add(d.id) : selected.delete(d.id)})) : null,
        h('th', {scope: 'row'}, h('a', {href: `#/messages/${d.id}`, class: 'mono'}, d.id)),
        td(d.queue), td(d.error_category || '–'), td(shortError(d.error)),
        td(d.attempts, 'num'), td(when(d.dead_at_ms)), td(d.reviewed ? badge('reviewed', 'ok') : badge('no', 'muted')),
        td(payloadDetails(d.id, open.has(d.id))),
        isAdmin() ? td(h('div', {class: 'actions'}, deadActions(d).map(b => {
          b.classList.add('small');
          return b;
        }))) : null)),
      'No dead letters match the filter.'));
  };
}

// An expandable payload, fetched when opened.
function payloadDetails(id, open) {
  const pre = h('pre', {tabindex: '0'}, 'Loading…');
  const details = h('details', {'data-id': id, ontoggle: async () => {
    if (!details.open || details.loaded) return;
    details.loaded = true;
    try {
      const m = await api('GET', `/v1/messages/${id}`);
      pre.textContent = JSON.stringify(m.payload, null, 2);
    } catch (e) {
      pre.textContent = e.message;
    }
  }}, h('summary', {}, 'Inspect'), pre);
  if (open) details.open = true;
  return details;
}

// --- plugins --------------------------------------------------------------------------------

function outcomes(map) {
  const entries = Object.entries(map || {});
  return entries.length ? entries.map(([k, v]) => `${k} ${num(v)}`).join(', ') : '–';
}

async function pluginsPage(main, [name]) {
  if (name) return pluginPage(main, name);
  const list = h('div', {});
  append(main, h('h1', {}, 'Plugins'), list,
    isAdmin() ? [h('h2', {}, 'Deploy a plugin'), deployForm(null)] : null);
  return async epoch => {
    const {plugins} = await api('GET', '/v1/plugins');
    if (epoch !== S.epoch) return;
    replace(list, table('Deployed plugins', ['Plugin', ['Active version', 'num'], 'World', ['Versions', 'num'], 'Compiled', 'Errors on this server'],
      plugins.map(p => {
        const active = p.versions.find(v => v.active);
        return h('tr', {'data-plugin': p.name},
          h('th', {scope: 'row'}, h('a', {href: `#/plugins/${enc(p.name)}`}, p.name)),
          td(p.active_version ?? '–', 'num'), td(active ? active.world : '–'), td(p.versions.length, 'num'),
          td(p.compiled || '–'), td(outcomes(p.errors)));
      }), 'No plugins yet.'));
  };
}

// Upload with progress: fetch cannot report upload progress, XMLHttpRequest can.
function deployForm(fixedName) {
  const nameInput = fixedName ? null : h('input', {name: 'name', required: true, pattern: '[A-Za-z0-9._\\-]+'});
  const file = h('input', {type: 'file', name: 'file', accept: '.wasm,application/wasm', required: true});
  const progress = h('progress', {max: '100', value: '0', 'aria-label': 'Upload progress', hidden: true});
  const result = h('div', {role: 'status'});
  const form = h('form', {class: 'panel', 'aria-label': 'Deploy a plugin', onsubmit: e => {
    e.preventDefault();
    const name = fixedName || nameInput.value.trim();
    const f = file.files[0];
    if (!f) return;
    const button = form.querySelector('button');
    button.disabled = true;
    progress.hidden = false;
    progress.value = 0;
    replace(result, `Uploading ${f.name} (${num(f.size)} bytes)…`);
    const xhr = new XMLHttpRequest();
    xhr.open('PUT', `/v1/plugins/${enc(name)}`);
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.setRequestHeader('Content-Type', 'application/wasm');
    xhr.upload.onprogress = ev => {
      if (ev.lengthComputable) progress.value = Math.round(100 * ev.loaded / ev.total);
      if (ev.loaded === ev.total) replace(result, 'Uploaded; compiling…');
    };
    xhr.onload = () => {
      button.disabled = false;
      let data = null;
      try {
        data = JSON.parse(xhr.responseText);
      } catch { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) {
        progress.value = 100;
        replace(result, h('p', {}, `Deployed ${data.name} version ${data.version}`,
          data.new_version ? '' : ' (the same bytes as an existing version, active again)',
          data.compiled ? ` (${data.compiled})` : '', '. ', h('a', {href: `#/plugins/${enc(data.name)}`}, 'See its versions')));
        toast(`Deployed ${data.name}@${data.version}`);
        refreshNow();
      } else {
        if (xhr.status === 401) signOut(data && data.error ? data.error.message : 'Sign in again.');
        replace(result, h('div', {class: 'error-box'}, data && data.error ? data.error.message : `HTTP ${xhr.status}`));
      }
    };
    xhr.onerror = () => {
      button.disabled = false;
      replace(result, h('div', {class: 'error-box'}, 'The upload failed: the server did not answer.'));
    };
    xhr.send(f);
  }}, h('div', {class: 'fields'}, nameInput ? field('Plugin name', nameInput) : null,
    field('Component (.wasm)', file)),
  h('p', {}, h('button', {type: 'submit'}, 'Deploy')), progress, result);
  return form;
}

async function pluginPage(main, name) {
  const versions = h('div', {});
  const history = h('div', {});
  const toolbar = h('div', {class: 'toolbar'});
  const config = h('div', {});
  append(main, h('h1', {}, `Plugin ${name}`), toolbar, h('h2', {}, 'Versions'), versions,
    h('h2', {}, 'Activation history'), history, h('h2', {}, 'Configuration and grants'), config,
    isAdmin() ? [h('h2', {}, 'Deploy a new version'), deployForm(name), h('h2', {}, 'Set configuration'), pluginConfigForm(name),
      h('h2', {}, 'Grants'), await grantsForm(name)] : null);
  if (isAdmin()) {
    append(toolbar,
      h('button', {class: 'secondary', onclick: e => act(e.target, `Rolled ${name} back`, () => api('POST', `/v1/plugins/${enc(name)}/rollback`))}, 'Roll back'),
      h('button', {class: 'danger', onclick: async e => {
        if (!await confirmDialog(`Delete plugin ${name}: every version, its history and its key-value data?`, 'Delete plugin')) return;
        if (await act(e.target, `Deleted ${name}`, () => api('DELETE', `/v1/plugins/${enc(name)}`))) location.hash = '#/plugins';
      }}, 'Delete plugin…'));
  }
  return async epoch => {
    const p = await api('GET', `/v1/plugins/${enc(name)}`);
    const c = await api('GET', `/v1/plugins/${enc(name)}/config`);
    if (epoch !== S.epoch) return;
    replace(versions, table('Versions, newest first', [['Version', 'num'], 'Active', 'World', ['Size', 'num'], 'SHA-256', 'Deployed', 'Outcomes on this server', 'Errors', isAdmin() ? 'Actions' : null].filter(Boolean),
      [...p.versions].reverse().map(v => h('tr', {'data-version': v.version},
        h('th', {scope: 'row', class: 'num'}, v.version), td(v.active ? badge('active', 'ok') : '–'), td(v.world),
        td(num(v.size), 'num'), td(h('span', {class: 'mono', title: v.sha256}, v.sha256.slice(0, 12))), td(when(v.created_at_ms)),
        td(outcomes(v.outcomes)), td(outcomes(v.errors)),
        isAdmin() ? td(v.active ? '' : h('button', {class: 'small', onclick: e => act(e.target, `Activated ${name}@${v.version}`,
          () => api('POST', `/v1/plugins/${enc(name)}/versions/${v.version}/activate`))}, `Activate ${v.version}`)) : null))));
    replace(history, table('Activation history, newest first', ['When', 'Action', 'From', 'To', 'By'],
      [...p.history].reverse().map(a => h('tr', {}, td(when(a.at_ms)), td(a.action), td(a.from_version ?? '–'), td(a.to_version), td(a.actor || '–')))));
    replace(config, h('div', {class: 'grid'},
      h('div', {class: 'panel'}, h('h2', {}, 'Values'), table('Values', ['Key', 'Value', 'From'],
        [...Object.entries(c.file_values).filter(([k]) => !(k in c.values)).map(([k, v]) => h('tr', {}, td(k), td(v), td('spool.toml'))),
          ...Object.entries(c.values).map(([k, v]) => h('tr', {}, td(k), td(v), td('API')))], 'No values.'),
        h('h2', {}, 'Secrets'), h('p', {}, c.secrets.length ? c.secrets.join(', ') : 'None.', ' ', h('span', {class: 'hint'}, '(values are never shown)'))),
      h('div', {class: 'panel'}, h('h2', {}, 'Grants'), h('dl', {class: 'kv'},
        h('dt', {}, 'Outbound hosts'), h('dd', {}, (c.grants.allowed_outbound_hosts || []).join(', ') || 'none'),
        h('dt', {}, 'Key-value keys'), h('dd', {}, c.grants.kv_max_keys ?? 'default'),
        h('dt', {}, 'Key-value bytes'), h('dd', {}, c.grants.kv_max_bytes ?? 'default')))));
  };
}

function pluginConfigForm(name) {
  const key = h('input', {name: 'key', required: true});
  const value = h('input', {name: 'value'});
  const secret = h('input', {type: 'checkbox', name: 'secret'});
  const remove = h('input', {type: 'checkbox', name: 'remove'});
  const form = h('form', {class: 'panel inline', 'aria-label': 'Set configuration', onsubmit: async e => {
    e.preventDefault();
    const v = remove.checked ? null : value.value;
    const body = secret.checked ? {secrets: {[key.value.trim()]: v}} : {values: {[key.value.trim()]: v}};
    const done = await act(form.querySelector('button'), `${remove.checked ? 'Removed' : 'Set'} ${key.value.trim()}`,
      () => api('PUT', `/v1/plugins/${enc(name)}/config`, body));
    if (done) value.value = '';
  }}, field('Key', key), field('Value', value), field('Secret (write-only)', secret), field('Remove the key', remove),
  h('button', {type: 'submit'}, 'Set'));
  return form;
}

// `PUT /v1/plugins/{name}/grants` replaces the grants set through the API; the form starts
// from them.
async function grantsForm(name) {
  const current = (await api('GET', `/v1/plugins/${enc(name)}/grants`)).api_grants;
  const hosts = h('input', {name: 'allowed_outbound_hosts', placeholder: 'https://api.example.com, http://127.0.0.1:*',
    value: (current.allowed_outbound_hosts || []).join(', ')});
  const keys = h('input', {name: 'kv_max_keys', type: 'number', min: '0', value: current.kv_max_keys ?? ''});
  const bytes = h('input', {name: 'kv_max_bytes', type: 'number', min: '0', value: current.kv_max_bytes ?? ''});
  const form = h('form', {class: 'panel inline', 'aria-label': 'Grants', onsubmit: async e => {
    e.preventDefault();
    const body = {};
    const list = hosts.value.split(',').map(x => x.trim()).filter(Boolean);
    if (list.length) body.allowed_outbound_hosts = list;
    if (keys.value !== '') body.kv_max_keys = Number(keys.value);
    if (bytes.value !== '') body.kv_max_bytes = Number(bytes.value);
    await act(form.querySelector('button'), `Grants of ${name} saved`, () => api('PUT', `/v1/plugins/${enc(name)}/grants`, body));
  }}, field('Outbound hosts (comma-separated)', hosts, 'Empty: no outbound HTTP (unless spool.toml grants it)'),
  field('Key-value keys at most', keys), field('Key-value bytes at most', bytes),
  h('button', {type: 'submit'}, 'Save grants'));
  return form;
}

// --- routes ---------------------------------------------------------------------------------

async function routesPage(main) {
  const list = h('div', {});
  const topic = h('input', {name: 'topic', required: true, placeholder: 'orders.eu.paid'});
  const reach = h('div', {role: 'status'});
  append(main, h('h1', {}, 'Routes'), list,
    h('h2', {}, 'Which routes would this topic reach?'),
    h('form', {class: 'inline', 'aria-label': 'Which routes would this topic reach', onsubmit: async e => {
      e.preventDefault();
      try {
        const r = await api('GET', `/v1/topics/${enc(topic.value.trim())}/routes`);
        const otherwise = {
          implicit: `the queue ${r.otherwise.queue}, named like the topic`,
          unroutable: `the unroutable queue ${r.otherwise.queue}`,
          refused: 'nowhere: the publish is refused and nothing is stored',
        }[r.otherwise.outcome];
        replace(reach, h('div', {class: 'panel'},
          r.routes.length
            ? [h('p', {}, `${r.routes.length} route${r.routes.length > 1 ? 's' : ''} match ${r.topic}:`),
              h('ul', {}, r.routes.map(rt => h('li', {'data-route': rt.id}, `route ${rt.id} (${rt.pattern}) → queue ${rt.queue}`,
                rt.filter ? `, through filter ${rt.filter}` : '',
                Object.keys(rt.headers).length ? `, if headers ${Object.entries(rt.headers).map(([k, v]) => `${k}=${v}`).join(', ')}` : '')))]
            : h('p', {}, `No route matches ${r.topic}.`),
          h('p', {}, `A message no route delivers goes to ${otherwise}.`)));
      } catch (err) {
        replace(reach, h('div', {class: 'error-box'}, err.message));
      }
    }}, field('Topic', topic), h('button', {type: 'submit'}, 'Check')), reach,
    isAdmin() ? [h('h2', {}, 'Add a route'), await routeForm()] : null);
  return async epoch => {
    const r = await api('GET', '/v1/routes');
    if (epoch !== S.epoch) return;
    replace(list, h('p', {class: 'hint'}, `Published on this server since it started: ${num(r.published_total)}; unroutable: ${num(r.unroutable_total)}.`),
      table('Routes, in fan-out order', [['Id', 'num'], 'Pattern', 'Queue', 'Filter', 'Header conditions', ['Delivered', 'num'], 'Created', isAdmin() ? 'Actions' : null].filter(Boolean),
        r.routes.map(rt => h('tr', {'data-route': rt.id},
          h('th', {scope: 'row', class: 'num'}, rt.id), td(h('code', {}, rt.pattern)), td(rt.queue), td(rt.filter || '–'),
          td(Object.entries(rt.headers).map(([k, v]) => `${k}=${v}`).join(', ') || '–'), td(num(rt.delivered), 'num'),
          td(when(rt.created_at_ms)),
          isAdmin() ? td(h('button', {class: 'danger small', onclick: async e => {
            if (await confirmDialog(`Delete route ${rt.id} (${rt.pattern} → ${rt.queue})?`, 'Delete route')) {
              act(e.target, `Deleted route ${rt.id}`, () => api('DELETE', `/v1/routes/${rt.id}`));
            }
          }}, 'Delete')) : null)), 'No routes: a topic reaches only the queue named like it.'));
  };
}

async function routeForm() {
  const {queues} = await api('GET', '/v1/queues');
  const pattern = h('input', {name: 'pattern', required: true, placeholder: 'orders.*.paid'});
  const queue = select('queue', queues.map(q => [q.name, q.name]), queues.length ? queues[0].name : '');
  const filter = h('input', {name: 'filter', placeholder: 'optional filter plugin'});
  const headers = h('input', {name: 'headers', placeholder: 'region=eu, tier=gold'});
  const limits = [['timeout_ms', 'Filter timeout (ms)'], ['fuel', 'Filter fuel'], ['memory_mb', 'Filter memory (MB)']]
    .map(([k, label]) => [k, label, h('input', {name: k, type: 'number', min: '1', placeholder: 'default'})]);
  const form = h('form', {class: 'panel inline', 'aria-label': 'Add a route', onsubmit: async e => {
    e.preventDefault();
    const body = {pattern: pattern.value.trim(), queue: queue.value};
    if (filter.value.trim()) body.filter = filter.value.trim();
    for (const [k, , input] of limits) {
      if (input.value !== '') body[k] = Number(input.value);
    }
    const hs = {};
    for (const part of headers.value.split(',')) {
      if (!part.trim()) continue;
      const [k, ...v] = part.split('=');
      hs[k.trim()] = v.join('=').trim();
    }
    if (Object.keys(hs).length) body.headers = hs;
    const r = await act(form.querySelector('button'), `Route ${body.pattern} → ${body.queue} added`, () => api('POST', '/v1/routes', body));
    if (r) pattern.value = '';
  }}, field('Pattern', pattern, '* is one word, # any number'), field('Queue', queue), field('Filter plugin', filter),
  field('Header conditions', headers), limits.map(([, label, input]) => field(label, input)),
  h('button', {type: 'submit'}, 'Add route'));
  return form;
}

// --- schedules ------------------------------------------------------------------------------

async function schedulesPage(main) {
  const list = h('div', {});
  const editor = h('div', {});
  append(main, h('h1', {}, 'Schedules'), list, editor, isAdmin() ? [h('h2', {}, 'Add a schedule'), scheduleForm()] : null);
  const edit = sched => {
    const close = () => replace(editor);
    replace(editor, h('h2', {}, `Change schedule ${sched.id}`), scheduleForm(sched, close));
    editor.querySelector('input').focus();
  };
  return async epoch => {
    const {schedules} = await api('GET', '/v1/schedules');
    const open = new Set([...list.querySelectorAll('details[open]')].map(d => d.dataset.id));
    const fires = new Map(await Promise.all(schedules.filter(s => open.has(s.id)).map(async s =>
      [s.id, (await api('GET', `/v1/schedules/${s.id}`)).fires || []])));
    if (epoch !== S.epoch) return;
    replace(list, table('Schedules', ['Id', 'Name', 'When', 'Target', 'Next fires', 'Last fire', ['Runs', 'num'], 'State', 'Recent fires', isAdmin() ? 'Actions' : null].filter(Boolean),
      schedules.map(s => h('tr', {'data-schedule': s.id},
        h('th', {scope: 'row'}, s.id), td(s.name || '–'),
        td([s.cron ? h('code', {}, s.cron) : s.every ? `every ${s.every}` : `at ${s.at}`, ` (${s.timezone})`]),
        td(s.queue ? `queue ${s.queue}` : `topic ${s.topic}`),
        td(s.upcoming.length ? h('ul', {class: 'tree root'}, s.upcoming.slice(0, 3).map(u => h('li', {}, when(Date.parse(u))))) : '–'),
        td(s.last_fire_at ? when(Date.parse(s.last_fire_at)) : '–'), td(num(s.runs), 'num'),
        td([s.paused ? badge('paused', 'warn') : badge('active', 'ok'), s.last_error ? h('div', {class: 'err'}, s.last_error) : null]),
        td(fireDetails(s.id, open.has(s.id), fires.get(s.id))),
        isAdmin() ? td(h('div', {class: 'actions'},
          h('button', {class: 'small', onclick: e => act(e.target, `Ran schedule ${s.id}`, () => api('POST', `/v1/schedules/${s.id}/run`))}, 'Run now'),
          s.paused
            ? h('button', {class: 'small secondary', onclick: e => act(e.target, `Resumed schedule ${s.id}`, () => api('POST', `/v1/schedules/${s.id}/resume`))}, 'Resume')
            : h('button', {class: 'small secondary', onclick: e => act(e.target, `Paused schedule ${s.id}`, () => api('POST', `/v1/schedules/${s.id}/pause`))}, 'Pause'),
          h('button', {class: 'small secondary', onclick: () => edit(s)}, 'Edit'),
          h('button', {class: 'small danger', onclick: async e => {
            if (await confirmDialog(`Delete schedule ${s.id}${s.name ? ` (${s.name})` : ''}?`, 'Delete schedule')) {
              act(e.target, `Deleted schedule ${s.id}`, () => api('DELETE', `/v1/schedules/${s.id}`));
            }
          }}, 'Delete'))) : null)), 'No schedules.'));
  };
}

function fireDetails(id, open, fires) {
  const body = h('div', {}, fires ? fireList(fires) : 'Loading…');
  const details = h('details', {'data-id': id, ontoggle: async () => {
    if (!details.open) return;
    const s = await api('GET', `/v1/schedules/${id}`).catch(() => null);
    if (s) replace(body, fireList(s.fires || []));
  }}, h('summary', {}, 'Show'), body);
  if (open) details.open = true;
  return details;
}

function fireList(fires) {
  if (!fires.length) return h('p', {class: 'hint'}, 'No fires yet.');
  return h('ul', {class: 'tree root'}, fires.slice(0, 10).map(f => h('li', {},
    when(f.fire_at_ms), f.manual ? ' (run now)' : '', ` late ${f.lateness_ms} ms → `,
    f.message_ids.map((id, i) => [i ? ', ' : '', h('a', {href: `#/messages/${id}`, class: 'mono'}, id)]))));
}

// Adds a schedule, or with `s` changes that one (`PATCH`: only what differs is sent).
function scheduleForm(s, done) {
  const kindOf = s ? (s.cron ? 'cron' : s.every ? 'every' : 'at') : 'cron';
  const name = h('input', {name: 'name', value: s ? s.name || '' : ''});
  const kind = select('kind', [['cron', 'cron expression'], ['every', 'every (interval)'], ['at', 'once, at']], kindOf);
  const spec = h('input', {name: 'spec', required: true, placeholder: '*/5 * * * *', value: s ? s[kindOf] : ''});
  const tz = h('input', {name: 'timezone', placeholder: 'UTC', value: s ? s.timezone : ''});
  const targetKind = select('target', [['queue', 'queue'], ['topic', 'topic']], s && s.topic ? 'topic' : 'queue');
  const target = h('input', {name: 'target_name', required: true, value: s ? s.queue || s.topic : ''});
  const priority = h('input', {name: 'priority', type: 'number', value: s ? String(s.priority) : ''});
  const maxRuns = h('input', {name: 'max_runs', type: 'number', min: '1', value: s && s.max_runs ? String(s.max_runs) : ''});
  const missed = select('missed', [['fire-once', 'fire once'], ['skip', 'skip'], ['fire-all', 'fire all']], s ? s.missed : 'fire-once');
  const payload = h('textarea', {name: 'payload', spellcheck: 'false'}, s ? JSON.stringify(s.payload) : '{}');
  kind.addEventListener('change', () => {
    spec.placeholder = {cron: '*/5 * * * *', every: '30s', at: '2030-01-01T09:00:00Z'}[kind.value];
  });
  const form = h('form', {class: 'panel', 'aria-label': s ? `Change schedule ${s.id}` : 'Add a schedule', onsubmit: async e => {
    e.preventDefault();
    let body;
    try {
      body = {payload: JSON.parse(payload.value)};
    } catch (err) {
      toast(`The payload is not JSON: ${err.message}`, true);
      return;
    }
    body[kind.value] = spec.value.trim();
    body[targetKind.value] = target.value.trim();
    if (name.value.trim()) body.name = name.value.trim();
    if (tz.value.trim()) body.timezone = tz.value.trim();
    if (priority.value !== '') body.priority = Number(priority.value);
    if (maxRuns.value !== '') body.max_runs = Number(maxRuns.value);
    body.missed = missed.value;
    if (s) {
      // Only what changed; the timing and the target replace the old ones as a whole.
      const patch = {};
      for (const [k, v] of Object.entries(body)) {
        if (JSON.stringify(v) !== JSON.stringify(s[k])) patch[k] = v;
      }
      const r = await act(form.querySelector('button'), `Schedule ${s.id} changed`, () => api('PATCH', `/v1/schedules/${s.id}`, patch));
      if (r && done) done();
      return;
    }
    const r = await act(form.querySelector('button'), 'Schedule added', () => api('POST', '/v1/schedules', body));
    if (r) spec.value = '';
  }}, h('div', {class: 'fields'}, field('Name', name), field('Kind', kind), field('Cron, interval or instant', spec),
    field('Time zone', tz), field('Target kind', targetKind), field('Queue or topic', target),
    field('Priority', priority), field('Runs at most', maxRuns), field('Missed fires', missed)),
  field('Payload (JSON)', payload),
  h('p', {class: 'actions'}, h('button', {type: 'submit'}, s ? `Save schedule ${s.id}` : 'Add schedule'),
    s ? h('button', {type: 'button', class: 'secondary', onclick: () => done && done()}, 'Cancel') : null));
  return form;
}

// --- server ---------------------------------------------------------------------------------

async function serverPage(main) {
  const health = h('div', {});
  append(main, h('h1', {}, 'Server'), health,
    h('p', {}, 'Prometheus metrics are at ', h('code', {}, '/metrics'),
      ' (scraped with a token when the server has tokens); the API description at ',
      h('a', {href: '/openapi.json'}, '/openapi.json'), '.'));
  if (isAdmin()) {
    const full = h('input', {type: 'checkbox', name: 'full'});
    const path = h('input', {name: 'path', required: true, placeholder: 'spool-backup.db'});
    const out = h('div', {role: 'status'});
    append(main, h('h2', {}, 'Integrity check'),
      h('form', {class: 'panel inline', 'aria-label': 'Integrity check', onsubmit: async e => {
        e.preventDefault();
        const r = await act(e.target.querySelector('button'), 'Integrity check finished', () => api('POST', '/v1/admin/check', {full: full.checked}));
        if (r) replace(out, h('pre', {}, JSON.stringify(r, null, 2)));
      }}, field('Full check (reads every page)', full), h('button', {type: 'submit'}, 'Run check')),
      h('h2', {}, 'Backup'),
      h('form', {class: 'panel inline', 'aria-label': 'Backup', onsubmit: async e => {
        e.preventDefault();
        const r = await act(e.target.querySelector('button'), 'Backup written', () => api('POST', '/v1/admin/backup', {path: path.value.trim()}));
        if (r) replace(out, h('pre', {}, JSON.stringify(r, null, 2)));
      }}, field('File inside [admin] backup_dir', path), h('button', {type: 'submit'}, 'Back up')), out);
  }
  return async epoch => {
    const r = await fetch('/readyz');
    const ready = await r.json();
    if (epoch !== S.epoch) return;
    replace(health, h('div', {class: 'panel'},
      h('p', {}, 'Readiness: ', r.ok ? badge('ready', 'ok') : badge('not ready', 'bad')),
      h('pre', {tabindex: '0', 'aria-label': 'Readiness detail'}, JSON.stringify(ready, null, 2))));
  };
}

window.addEventListener('hashchange', route);
// The skip link moves focus without touching the hash, which routes pages.
document.querySelector('.skip').addEventListener('click', e => {
  e.preventDefault();
  document.getElementById('main').focus();
});
boot();
