// fleetgate dashboard — UI helpers and one render function per page.
// Every page is `render(root, params, ctx)` and may return a cleanup function.

import { api, get, post, patch, del, session, isAdmin, live, buildQuery, ApiError } from './api.js';
import { LineChart, numericFields } from './charts.js';
import {
  wsUrl, httpUrl, nodeSnippet, pythonSnippet, esp32Snippet, httpCurlSnippet, httpPythonSnippet,
} from './snippets.js';

// ---------------------------------------------------------------------------
// DOM helpers

/** h('tag.class', {props}, ...children). Text is always set as text, never as HTML. */
export function h(tag, props, ...children) {
  const [name, ...classes] = tag.split('.');
  const el = document.createElement(name || 'div');
  if (classes.length) el.className = classes.join(' ');
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = (el.className ? el.className + ' ' : '') + v;
      else if (k === 'tid') { el.id = v; el.setAttribute('data-testid', v); }
      else if (k === 'text') el.textContent = v;
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2).toLowerCase(), v);
      else if (k === 'for') el.htmlFor = v;
      else if (k === 'value' || k === 'checked' || k === 'disabled' || k === 'hidden' || k === 'selected') el[k] = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

let uid = 0;
const nextId = (p) => `${p}-${++uid}`;

/** A labelled form field. opts: {id, label, type, value, required, hint, options, attrs, textarea} */
export function field(opts) {
  const id = opts.id || nextId('f');
  let input;
  const common = { id, name: opts.name || id, required: opts.required, ...(opts.attrs || {}) };
  if (opts.testid !== false) common['data-testid'] = opts.testid || id;
  if (opts.options) {
    input = h('select', common, opts.options.map(([v, t]) => h('option', { value: v, text: t, selected: String(opts.value ?? '') === v })));
  } else if (opts.textarea) {
    input = h('textarea', { ...common, rows: opts.rows || 4, spellcheck: 'false' });
    input.value = opts.value ?? '';
  } else {
    input = h('input', { ...common, type: opts.type || 'text' });
    if (opts.value !== undefined) input.value = opts.value;
  }
  const hintId = opts.hint ? `${id}-hint` : null;
  if (hintId) input.setAttribute('aria-describedby', hintId);
  const wrap = h('div.field', null,
    h('label', { for: id, text: opts.label }),
    input,
    opts.hint ? h('p.hint', { id: hintId, text: opts.hint }) : null);
  wrap.input = input;
  return wrap;
}

// ---------------------------------------------------------------------------
// Error region, toasts, dialogs, copy buttons

export function showError(err) {
  const region = document.getElementById('error');
  if (!region) return;
  const msg = typeof err === 'string' ? err : (err && err.message) || 'Something went wrong.';
  region.textContent = msg;
  region.classList.add('visible');
}

export function clearError() {
  const region = document.getElementById('error');
  if (region) { region.replaceChildren(); region.classList.remove('visible'); }
}

export function toast(msg, kind = 'ok') {
  const box = document.getElementById('toasts');
  if (!box) return;
  const t = h(`div.toast.toast-${kind}`, { text: msg });
  box.append(t);
  setTimeout(() => t.classList.add('leaving'), 3500);
  setTimeout(() => t.remove(), 4000);
}

/**
 * A modal dialog (native <dialog>). Resolves to false when cancelled, otherwise to
 * an object of the field values (or true when there are no fields).
 */
export function dialog({ title, message = '', confirmText = 'OK', danger = false, fields = [] }) {
  const dlg = document.getElementById('dialog');
  const form = document.getElementById('dialog-form');
  const ok = document.getElementById('dialog-confirm');
  const cancel = document.getElementById('dialog-cancel');
  document.getElementById('dialog-title').textContent = title;
  document.getElementById('dialog-message').textContent = message;
  const box = document.getElementById('dialog-fields');
  const inputs = fields.map((f, i) => field({ id: `dialog-input${i ? '-' + i : ''}`, ...f }));
  box.replaceChildren(...inputs);
  ok.textContent = confirmText;
  ok.className = `btn ${danger ? 'btn-danger' : 'btn-primary'}`;
  return new Promise((resolve) => {
    let done = false;
    const finish = (v) => {
      if (done) return;
      done = true;
      form.removeEventListener('submit', onSubmit);
      cancel.removeEventListener('click', onCancel);
      dlg.removeEventListener('cancel', onCancel);
      if (dlg.open) dlg.close();
      resolve(v);
    };
    const onSubmit = (e) => {
      e.preventDefault();
      if (!form.reportValidity()) return;
      if (!fields.length) return finish(true);
      const out = {};
      fields.forEach((f, i) => { out[f.name || `v${i}`] = inputs[i].input.value.trim(); });
      finish(out);
    };
    const onCancel = (e) => { if (e) e.preventDefault(); finish(false); };
    form.addEventListener('submit', onSubmit);
    cancel.addEventListener('click', onCancel);
    dlg.addEventListener('cancel', onCancel);
    dlg.showModal();
    (inputs[0] ? inputs[0].input : (danger ? cancel : ok)).focus();
  });
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const ta = h('textarea.offscreen', { 'aria-hidden': 'true' });
    ta.value = text;
    document.body.append(ta);
    ta.select();
    try { document.execCommand('copy'); } catch { /* ignore */ }
    ta.remove();
  }
  toast('Copied to clipboard');
}

export function copyButton(getText, label = 'Copy', testid) {
  const b = h('button.btn.btn-sm.btn-ghost.copy-btn', { type: 'button', tid: testid, text: label });
  b.addEventListener('click', async () => {
    await copyText(typeof getText === 'function' ? getText() : getText);
    b.textContent = 'Copied';
    setTimeout(() => { b.textContent = label; }, 1500);
  });
  return b;
}

/** Run an async action with the button disabled; show errors in the error region. */
async function busy(btn, fn) {
  clearError();
  if (btn) btn.disabled = true;
  try {
    return await fn();
  } catch (e) {
    showError(e);
    return undefined;
  } finally {
    if (btn) btn.disabled = false;
  }
}

// ---------------------------------------------------------------------------
// Formatting

export function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (isNaN(d)) return String(iso);
  return d.toLocaleString([], { year: 'numeric', month: 'short', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export function fmtAgo(iso) {
  if (!iso) return 'never';
  const t = Date.parse(iso);
  if (isNaN(t)) return String(iso);
  const s = Math.round((Date.now() - t) / 1000);
  if (s < 5) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return fmtTime(iso);
}

/** Time of day for today, date and time otherwise. */
export function fmtShort(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return String(iso);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' }) : fmtTime(iso);
}

function timeEl(iso, relative = false) {
  if (!iso) return h('span.muted', { text: relative ? 'never' : '—' });
  const text = relative === 'short' ? fmtShort(iso) : relative ? fmtAgo(iso) : fmtTime(iso);
  return h('time', { datetime: iso, title: fmtTime(iso), text });
}

export function statusBadge(status, deviceId) {
  const s = status === 'online' ? 'online' : 'offline';
  return h(`span.badge.status-${s}`, { tid: deviceId ? `device-status-${deviceId}` : undefined, text: s });
}

function setStatusBadge(el, status) {
  const s = status === 'online' ? 'online' : 'offline';
  el.textContent = s;
  el.classList.toggle('status-online', s === 'online');
  el.classList.toggle('status-offline', s !== 'online');
}

function summarize(payload, max = 160) {
  if (payload === undefined || payload === null) return '';
  let s = typeof payload === 'string' ? payload : JSON.stringify(payload);
  if (s === '{}') return '';
  return s.length > max ? s.slice(0, max - 1) + '…' : s;
}

const shortId = (id) => (id ? String(id).slice(0, 8) : '—');

/** device_id → name, filled from every device list we load. */
export const deviceNames = new Map();

const nameLookups = new Map(); // device_id -> Promise<name|null>, one request per unknown id

function lookupName(id) {
  if (!nameLookups.has(id)) {
    nameLookups.set(id, get(`/api/devices/${encodeURIComponent(id)}`)
      .then((d) => { deviceNames.set(id, d.name); return d.name; })
      .catch(() => null));
  }
  return nameLookups.get(id);
}

function deviceLink(id) {
  if (!id) return h('span.muted', { text: 'server' });
  const name = deviceNames.get(id);
  const a = h('a', { href: `#/devices/${id}`, title: id, text: name || shortId(id) });
  if (!name) lookupName(id).then((n) => { if (n) a.textContent = n; });
  return a;
}

function pageHeader(title, ...actions) {
  return h('div.page-header', null, h('h1', { tabindex: '-1', text: title }), actions.length ? h('div.page-actions', null, actions) : null);
}

function emptyState(text, ...extra) {
  return h('div.empty', null, h('p', { text }), extra);
}

const PROTOCOLS = [['generic', 'Generic (JSON over WebSocket)'], ['aiface', 'AiFace-family terminal'], ['smackbio', 'SmackBio-compatible terminal'], ['zkteco', 'ZKTeco terminal (ADMS / iclock push)'], ['http', 'HTTP device (legacy POST)']];

function browserTimeZone() {
  try { return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC'; } catch { return 'UTC'; }
}

function timeZoneList() {
  let dl = document.getElementById('tz-list');
  if (dl) return dl;
  dl = h('datalist', { id: 'tz-list' });
  let zones = [];
  try { zones = Intl.supportedValuesOf('timeZone'); } catch { zones = [browserTimeZone(), 'UTC']; }
  dl.append(...zones.map((z) => h('option', { value: z })));
  document.body.append(dl);
  return dl;
}

function isValidTimeZone(tz) {
  try { new Intl.DateTimeFormat('en', { timeZone: tz }); return true; } catch { return false; }
}

/** Normalize REST events and WS `event` pushes to {id, ts, device_id, type, source, payload}. */
export function normEvent(e) {
  return { id: e.id, ts: e.ts, device_id: e.device_id, type: e.type === 'event' ? e.event_type : (e.type || e.event_type), source: e.source, payload: e.payload };
}

/** A badge style for the event types an operator should notice. */
function eventTypeClass(type) {
  if (type === 'device_takeover') return '.type-alert';
  if (/connected$/.test(type)) return type === 'device_connected' ? '.type-good' : '.type-warn';
  return '';
}

function eventItem(e) {
  return h('li.event', { dataset: { type: e.type || '', deviceId: e.device_id || '' } },
    h('span.event-time', null, timeEl(e.ts, 'short')),
    h(`span.badge.event-type${eventTypeClass(e.type)}`, { text: e.type }),
    h('span.event-device', null, deviceLink(e.device_id)),
    h('span.event-payload', { text: summarize(e.payload) }));
}

// ---------------------------------------------------------------------------
// Cursor pagination helper: keeps a stack of cursors so "Previous" works.

function pager(onChange) {
  const st = { cursors: [null], idx: 0, next: null };
  const prev = h('button.btn.btn-sm', { type: 'button', tid: nextId('page-prev'), text: '← Previous' });
  const next = h('button.btn.btn-sm', { type: 'button', tid: nextId('page-next'), text: 'Next →' });
  const label = h('span.pager-label', { 'aria-live': 'polite' });
  prev.dataset.testid = 'page-prev';
  next.dataset.testid = 'page-next';
  prev.addEventListener('click', () => { if (st.idx > 0) { st.idx--; onChange(); } });
  next.addEventListener('click', () => { if (st.next) { st.cursors[st.idx + 1] = st.next; st.idx++; onChange(); } });
  const el = h('nav.pager', { 'aria-label': 'Pagination' }, prev, label, next);
  return {
    el,
    cursor: () => st.cursors[st.idx],
    reset: () => { st.cursors = [null]; st.idx = 0; st.next = null; },
    update: (nextCursor, count) => {
      st.next = nextCursor || null;
      prev.disabled = st.idx === 0;
      next.disabled = !st.next;
      label.textContent = count ? `Page ${st.idx + 1}` : '';
      el.hidden = st.idx === 0 && !st.next;
    },
  };
}

function debounce(fn, ms) {
  let t;
  return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); };
}

function readonlyNote(text = 'You are signed in as a viewer: you can look, but not change anything.') {
  return isAdmin() ? '' : h('p.note.readonly-note', { text });
}

// ===========================================================================
// Login and password

let lastLoginPassword = null;

export function loginPage(root, params, ctx) {
  const user = field({ id: 'login-username', label: 'Username', attrs: { autocomplete: 'username', autocapitalize: 'none', spellcheck: 'false' }, required: true });
  const pass = field({ id: 'login-password', label: 'Password', type: 'password', attrs: { autocomplete: 'current-password' }, required: true });
  const submit = h('button.btn.btn-primary.btn-block', { type: 'submit', tid: 'login-submit', text: 'Sign in' });
  let countdown = null;
  const form = h('form.card.auth-card', { novalidate: true, 'aria-labelledby': 'login-title' },
    h('div.auth-brand', null, h('span.brand-mark', { 'aria-hidden': 'true' }), 'fleetgate'),
    h('h1', { id: 'login-title', tabindex: '-1', text: 'Sign in' }),
    h('p.muted', { text: 'Operator dashboard. On first start, the admin password is in <data-dir>/initial-admin-password.' }),
    user, pass, submit);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearError();
    const username = user.input.value.trim();
    const password = pass.input.value;
    if (!username || !password) {
      showError(!username ? 'Enter your username.' : 'Enter your password.');
      (!username ? user.input : pass.input).focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = 'Signing in…';
    try {
      const me = await post('/api/login', { username, password }, { quiet401: true });
      lastLoginPassword = password;
      ctx.signedIn(me);
    } catch (err) {
      if (err instanceof ApiError && err.code === 'too_many_attempts' && err.retryAfter) {
        let left = err.retryAfter;
        showError(`Too many attempts, retry in ${left} s.`);
        clearInterval(countdown);
        countdown = setInterval(() => {
          left--;
          if (left <= 0) { clearInterval(countdown); submit.disabled = false; submit.textContent = 'Sign in'; clearError(); return; }
          submit.textContent = `Retry in ${left} s`;
        }, 1000);
        submit.textContent = `Retry in ${left} s`;
        return;
      }
      showError(err.status === 401 ? 'Wrong username or password.' : err);
      pass.input.select();
    }
    if (!countdown) { submit.disabled = false; submit.textContent = 'Sign in'; }
  });
  root.replaceChildren(h('div.auth-wrap', null, form));
  user.input.focus();
  return () => clearInterval(countdown);
}

export function passwordPage(root, params, ctx) {
  const forced = !!(session.user && session.user.must_change_password);
  const needCurrent = !lastLoginPassword;
  const cur = field({ id: 'current-password', label: 'Current password', type: 'password', attrs: { autocomplete: 'current-password' }, required: needCurrent });
  cur.hidden = !needCurrent;
  const np = field({ id: 'new-password', label: 'New password', type: 'password', attrs: { autocomplete: 'new-password', minlength: '10' }, required: true, hint: 'At least 10 characters.' });
  const show = h('input', { type: 'checkbox', id: 'show-password' });
  show.addEventListener('change', () => { np.input.type = show.checked ? 'text' : 'password'; });
  const submit = h('button.btn.btn-primary', { type: 'submit', tid: 'new-password-submit', text: 'Save new password' });
  const form = h(`form.card${forced ? '.auth-card' : ''}`, { novalidate: true },
    h('h1', { tabindex: '-1', text: forced ? 'Choose a new password' : 'Change password' }),
    forced ? h('p', { text: `Welcome, ${session.user.username}. Before you continue, replace the initial password with one of your own.` }) : null,
    cur, np,
    h('div.check', null, show, h('label', { for: 'show-password', text: 'Show password' })),
    h('div.form-actions', null, submit));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearError();
    const current = needCurrent ? cur.input.value : lastLoginPassword;
    const next = np.input.value;
    if (needCurrent && !current) { showError('Enter your current password.'); cur.input.focus(); return; }
    if (next.length < 10) { showError('The new password must be at least 10 characters long.'); np.input.focus(); return; }
    if (next === current) { showError('The new password must differ from the current one.'); np.input.focus(); return; }
    await busy(submit, async () => {
      await post('/api/me/password', { current_password: current, new_password: next });
      lastLoginPassword = null;
      session.user.must_change_password = false;
      toast('Password changed');
      ctx.passwordChanged();
    });
  });
  root.replaceChildren(forced ? h('div.auth-wrap', null, form) : h('div', null, form));
  (needCurrent ? cur.input : np.input).focus();
}

// ===========================================================================
// Overview

export function overviewPage(root, params, ctx) {
  const stat = (key, label, cls) => {
    const v = h('span.stat-value', { tid: `stat-${key}`, text: '–' });
    return { card: h(`div.stat.card${cls ? '.' + cls : ''}`, null, h('span.stat-label', { text: label }), v), v };
  };
  const sOnline = stat('online', 'Online', 'stat-good');
  const sOffline = stat('offline', 'Offline');
  const sNever = stat('never-seen', 'Never seen');
  const sRate = stat('rate', 'Messages / s');
  const sPending = stat('pending', 'Pending approval');
  const list = h('ol.events', { tid: 'overview-events', 'aria-live': 'off' });
  const empty = emptyState('No events yet. They appear here live as devices connect and report.');
  root.replaceChildren(
    pageHeader('Overview', isAdmin() ? h('a.btn.btn-primary', { href: '#/add', text: '+ Add device' }) : null),
    h('section.stats', { 'aria-label': 'Fleet status' }, sOnline.card, sOffline.card, sNever.card, sRate.card, sPending.card),
    h('section.card', { 'aria-labelledby': 'recent-title' },
      h('div.card-header', null, h('h2', { id: 'recent-title', text: 'Recent events' }), h('a', { href: '#/events', text: 'All events →' })),
      empty, list));

  let prev = null;
  let stopped = false;
  async function poll() {
    try {
      const s = await get('/api/stats');
      if (stopped) return;
      sOnline.v.textContent = s.online ?? 0;
      sOffline.v.textContent = s.offline ?? 0;
      sNever.v.textContent = s.never_seen ?? 0;
      sPending.v.textContent = s.pending ?? 0;
      ctx.setPending(s.pending);
      const now = performance.now();
      if (prev && typeof s.messages_total === 'number') {
        const rate = Math.max(0, (s.messages_total - prev.total) / ((now - prev.t) / 1000));
        sRate.v.textContent = rate >= 100 ? Math.round(rate).toLocaleString() : rate.toFixed(1);
      }
      prev = { total: s.messages_total, t: now };
    } catch (e) {
      if (!stopped && e.status !== 401) showError(e);
    }
  }
  poll();
  const timer = setInterval(poll, 2000);

  const MAX = 15;
  const add = (e, atTop) => {
    empty.hidden = true;
    const li = eventItem(e);
    if (atTop) list.prepend(li); else list.append(li);
    while (list.children.length > MAX) list.lastChild.remove();
  };
  get('/api/events', { limit: MAX }).then((r) => {
    if (stopped) return;
    (r.items || []).forEach((e) => add(normEvent(e), false));
    empty.hidden = list.children.length > 0;
  }).catch((e) => showError(e));
  const off = live.on('event', (m) => add(normEvent(m), true));
  return () => { stopped = true; clearInterval(timer); off(); };
}

// ===========================================================================
// Devices

const devState = { q: '', status: '', protocol: '', sort: 'name', limit: 50 };

export function devicesPage(root, params, ctx) {
  const search = field({ id: 'devices-search', label: 'Search', type: 'search', value: devState.q, attrs: { placeholder: 'Name, serial or id' } });
  const status = field({ id: 'devices-status', label: 'Status', value: devState.status, options: [['', 'Any status'], ['online', 'Online'], ['offline', 'Offline']] });
  const protocol = field({ id: 'devices-protocol', label: 'Protocol', value: devState.protocol, options: [['', 'Any protocol'], ...PROTOCOLS.map(([v]) => [v, v])] });
  const sort = field({ id: 'devices-sort', label: 'Sort by', value: devState.sort, options: [['name', 'Name'], ['status', 'Status'], ['last_seen', 'Last seen']] });
  const tbody = h('tbody');
  const table = h('table.table.devices-table', { tid: 'devices-table' },
    h('caption.sr-only', { text: 'Devices' }),
    h('thead', null, h('tr', null, ['Name', 'Status', 'Protocol', 'Serial', 'Last seen', 'Device ID'].map((t) => h('th', { scope: 'col', text: t })))),
    tbody);
  const summary = h('p.muted.table-summary', { 'aria-live': 'polite' });
  const emptyBox = h('div');
  const pg = pager(() => load());
  const refresh = h('button.btn.btn-sm.btn-ghost', { type: 'button', tid: 'devices-refresh', text: 'Refresh', onclick: () => load() });

  root.replaceChildren(
    pageHeader('Devices', refresh, isAdmin() ? h('a.btn.btn-primary', { href: '#/add', text: '+ Add device' }) : null),
    h('form.filters.card', { role: 'search', onsubmit: (e) => { e.preventDefault(); apply(); } }, search, status, protocol, sort),
    summary, emptyBox, h('div.table-wrap', null, table), pg.el);

  const rows = new Map(); // device_id -> {badge, seen}
  let stopped = false;
  let seq = 0;

  async function load() {
    const my = ++seq;
    try {
      const r = await get('/api/devices', { q: devState.q, status: devState.status, protocol: devState.protocol, sort: devState.sort, limit: devState.limit, cursor: pg.cursor() });
      if (stopped || my !== seq) return;
      render(r.items || []);
      pg.update(r.next_cursor, (r.items || []).length);
    } catch (e) {
      if (!stopped) showError(e);
    }
  }

  function render(items) {
    rows.clear();
    const frag = document.createDocumentFragment();
    for (const d of items) {
      deviceNames.set(d.device_id, d.name);
      const badge = statusBadge(d.status, d.device_id);
      const seen = h('td', null, timeEl(d.last_seen, true));
      const tr = h('tr.clickable', { tid: `device-row-${d.device_id}`, dataset: { id: d.device_id } },
        h('td', null, h('a.row-link', { href: `#/devices/${d.device_id}`, text: d.name || '(unnamed)' })),
        h('td', null, badge),
        h('td', null, h('span.tag', { text: d.protocol })),
        h('td', { text: d.serial || '—' }),
        seen,
        h('td.mono', { title: d.device_id, text: shortId(d.device_id) }));
      rows.set(d.device_id, { badge, seen });
      frag.append(tr);
    }
    tbody.replaceChildren(frag);
    const filtered = devState.q || devState.status || devState.protocol;
    if (!items.length) {
      table.hidden = true;
      emptyBox.replaceChildren(filtered
        ? emptyState('No devices match these filters.', h('button.btn', { type: 'button', text: 'Clear filters', onclick: clearFilters }))
        : emptyState('No devices yet — add one.', isAdmin() ? h('a.btn.btn-primary', { href: '#/add', tid: 'empty-add-device', text: '+ Add device' }) : null));
      summary.textContent = '';
    } else {
      table.hidden = false;
      emptyBox.replaceChildren();
      summary.textContent = `Showing ${items.length} device${items.length === 1 ? '' : 's'}${pg.cursor() ? '' : ''}.`;
    }
  }

  function apply() {
    devState.q = search.input.value.trim();
    devState.status = status.input.value;
    devState.protocol = protocol.input.value;
    devState.sort = sort.input.value;
    pg.reset();
    load();
  }
  function clearFilters() {
    search.input.value = ''; status.input.value = ''; protocol.input.value = '';
    apply();
  }
  search.input.addEventListener('input', debounce(apply, 250));
  [status, protocol, sort].forEach((f) => f.input.addEventListener('change', apply));

  tbody.addEventListener('click', (e) => {
    if (e.target.closest('a')) return;
    const tr = e.target.closest('tr[data-id]');
    if (tr) location.hash = `#/devices/${tr.dataset.id}`;
  });

  // Live status: collect pushes, apply at most 4 times a second, only to rows on this page.
  const pendingUpdates = new Map();
  const off = live.on('device_status', (m) => pendingUpdates.set(m.device_id, m));
  const flush = setInterval(() => {
    if (!pendingUpdates.size) return;
    for (const [id, m] of pendingUpdates) {
      const r = rows.get(id);
      if (!r) continue;
      setStatusBadge(r.badge, m.status);
      if (m.ts) r.seen.replaceChildren(timeEl(m.ts, true));
    }
    pendingUpdates.clear();
  }, 250);
  const offReconnect = live.on('subscribed', () => load()); // catch up after a reconnect

  load();
  return () => { stopped = true; off(); offReconnect(); clearInterval(flush); };
}

// ===========================================================================
// Add device

export function addDevicePage(root) {
  if (!isAdmin()) {
    root.replaceChildren(pageHeader('Add device'), emptyState('Only admins can add devices.'));
    return undefined;
  }
  const name = field({ id: 'add-name', label: 'Name', required: true, attrs: { maxlength: '128', placeholder: 'e.g. Lobby sensor', autocomplete: 'off' } });
  const protocol = field({ id: 'add-protocol', label: 'Protocol', value: 'generic', options: PROTOCOLS });
  const serial = field({ id: 'add-serial', label: 'Serial number', attrs: { maxlength: '64', autocomplete: 'off', spellcheck: 'false' }, hint: 'The terminal identifies itself by this serial (SN) when it connects.' });
  timeZoneList();
  const tz = field({ id: 'add-timezone', label: 'Time zone', value: browserTimeZone(), attrs: { list: 'tz-list', autocomplete: 'off' }, hint: 'IANA name such as Europe/Berlin. Terminals send local wall-clock times; this turns them into UTC.' });
  const submit = h('button.btn.btn-primary', { type: 'submit', tid: 'add-submit', text: 'Add device' });
  const sync = () => {
    const terminal = protocol.input.value !== 'generic';
    serial.hidden = !terminal;
    tz.hidden = !terminal;
    serial.input.required = terminal;
  };
  protocol.input.addEventListener('change', sync);
  sync();

  const form = h('form.card.form-narrow', { novalidate: true }, name, protocol, serial, tz, h('div.form-actions', null, submit));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearError();
    const body = { name: name.input.value.trim(), protocol: protocol.input.value };
    if (!body.name) { showError('Give the device a name.'); name.input.focus(); return; }
    if (body.protocol !== 'generic') {
      body.serial = serial.input.value.trim();
      if (!body.serial) { showError('Enter the terminal\'s serial number.'); serial.input.focus(); return; }
      const zone = tz.input.value.trim();
      if (zone) {
        if (!isValidTimeZone(zone)) { showError(`"${zone}" is not a known IANA time zone.`); tz.input.focus(); return; }
        body.settings = { timezone: zone };
      }
    }
    await busy(submit, async () => {
      const d = await post('/api/devices', body);
      deviceNames.set(d.device_id, d.name || body.name);
      showCreated(root, { ...body, ...d });
    });
  });
  root.replaceChildren(pageHeader('Add device'), form);
  name.input.focus();
  return undefined;
}

function step(n, title, text) {
  return h('li.step', null, h('span.step-num', { 'aria-hidden': 'true', text: String(n) }), h('div', null, h('strong', { text: title }), h('p', { text })));
}

function snippetBlock(title, code, testid, note) {
  const pre = h('pre.code', { tid: testid, tabindex: '0', 'aria-label': `${title} code` }, h('code', { text: code }));
  return h('section.snippet', null,
    h('div.snippet-header', null, h('h3', { text: title }), copyButton(code, 'Copy code', `copy-${testid}`)),
    note ? h('p.muted', { text: note }) : null, pre);
}

function showCreated(root, d) {
  const id = d.device_id;
  const token = d.token || '';
  const url = wsUrl();
  const proto = d.protocol || 'generic';
  const badge = statusBadge(d.status || 'offline', id);
  const waiting = h('span.muted', { text: ' Waiting for the device to connect…' });
  const off = live.on('device_status', (m) => {
    if (m.device_id !== id) return;
    setStatusBadge(badge, m.status);
    waiting.textContent = m.status === 'online' ? ' Connected — it is online.' : ' Disconnected.';
  });
  // stop listening when the page is left
  const obs = new MutationObserver(() => { if (!badge.isConnected) { off(); obs.disconnect(); } });
  obs.observe(document.getElementById('page'), { childList: true });

  const creds = h('section.card.created', { 'aria-labelledby': 'created-title' },
    h('h2', { id: 'created-title', text: `“${d.name}” was added` }),
    h('p.warning', { text: 'Copy the token now: it is shown only once. If you lose it, rotate the token on the device page.' }),
    h('dl.kv', null,
      h('dt', { text: 'Device ID' }), h('dd', null, h('code.secret', { tid: 'created-device-id', text: id }), copyButton(id, 'Copy', 'copy-device-id')),
      h('dt', { text: 'Token' }), h('dd', null, h('code.secret', { tid: 'created-token', text: token }), token ? copyButton(token, 'Copy', 'copy-token') : null),
      d.serial ? [h('dt', { text: 'Serial' }), h('dd', null, h('code', { text: d.serial }))] : null,
      h('dt', { text: 'WebSocket URL' }), h('dd', null, h('code', { text: url }), copyButton(url, 'Copy', 'copy-ws-url')),
      h('dt', { text: 'Status' }), h('dd', null, badge, waiting)),
    h('div.form-actions', null,
      h('a.btn.btn-primary', { href: `#/devices/${id}`, tid: 'open-created-device', text: 'Open device page' }),
      h('button.btn', { type: 'button', text: 'Add another device', onclick: () => { off(); addDevicePage(root); } })));

  const steps = h('section.card', { 'aria-labelledby': 'steps-title' },
    h('h2', { id: 'steps-title', text: 'Connection flow' }),
    h('ol.steps', { tid: 'connection-steps' },
      step(1, 'Connect', `Open a WebSocket to ${url}`),
      step(2, 'Register', 'Send {"type":"register","device_id","token"} as the first message'),
      step(3, 'Authenticated', 'Receive {"type":"registered"} — the device shows as Online here'),
      step(4, 'Communicate', 'Send telemetry and events; receive and execute commands')));

  let code;
  if (proto === 'http') {
    const hu = httpUrl();
    code = h('section.card', { 'aria-labelledby': 'code-title' },
      h('h2', { id: 'code-title', text: 'Connect your HTTP device' }),
      h('p', null, 'The device POSTs JSON to ', h('code', { text: hu }), ' and is known by its serial ', h('code', { text: d.serial }), '. It needs no token. Send a checklive heartbeat every 60 s to stay online.'),
      snippetBlock('curl', httpCurlSnippet(hu, d.serial), 'snippet-curl'),
      snippetBlock('Python (requests)', httpPythonSnippet(hu, d.serial), 'snippet-http-python', 'pip install requests'));
  } else if (proto === 'aiface' || proto === 'smackbio') {
    let host = location.hostname, port = location.port || (location.protocol === 'https:' ? '443' : '80');
    code = h('section.card', { 'aria-labelledby': 'code-title' },
      h('h2', { id: 'code-title', text: 'Point the terminal at this server' }),
      h('p', { text: 'In the terminal\'s network / cloud settings, set:' }),
      h('dl.kv', null,
        h('dt', { text: 'Server address' }), h('dd', null, h('code', { text: host })),
        h('dt', { text: 'Port' }), h('dd', null, h('code', { text: port })),
        h('dt', { text: 'Path / URL' }), h('dd', null, h('code', { text: url })),
        h('dt', { text: 'Serial' }), h('dd', null, h('code', { text: d.serial }))),
      h('p.muted', { text: 'The terminal speaks its own dialect and is recognised by its serial number; it does not use the token. It appears Online here once it registers.' }));
  } else if (proto === 'zkteco') {
    let host = location.hostname, port = location.port || (location.protocol === 'https:' ? '443' : '80');
    code = h('section.card', { 'aria-labelledby': 'code-title' },
      h('h2', { id: 'code-title', text: 'Point the terminal at this server' }),
      h('p', { text: 'In the terminal\'s Comm. → Cloud Server Setting (ADMS), set:' }),
      h('dl.kv', null,
        h('dt', { text: 'Server address' }), h('dd', null, h('code', { text: host })),
        h('dt', { text: 'Port' }), h('dd', null, h('code', { text: port })),
        h('dt', { text: 'Serial' }), h('dd', null, h('code', { text: d.serial }))),
      h('p.muted', { text: 'The terminal polls /iclock/ over HTTP and is recognised by its serial number; it does not use the token. It appears Online here at its first poll, and takes commands within 10 s.' }));
  } else {
    code = h('section.card', { 'aria-labelledby': 'code-title' },
      h('h2', { id: 'code-title', text: 'Example code' }),
      h('p.muted', { text: 'Filled in with this server\'s address, the device id and the token. Copy, run, then watch the status above turn Online.' }),
      snippetBlock('JavaScript (Node.js)', nodeSnippet(url, id, token), 'snippet-node', 'npm install ws, save as device.js, run node device.js'),
      snippetBlock('Python', pythonSnippet(url, id, token), 'snippet-python', 'pip install websocket-client'),
      snippetBlock('ESP32 (Arduino)', esp32Snippet(url, id, token), 'snippet-esp32', 'Libraries: WebSockets (Markus Sattler) and ArduinoJson 7. Set your Wi-Fi name and password.'));
  }
  root.replaceChildren(pageHeader('Add device'), creds, steps, code);
  const h1 = root.querySelector('h1');
  if (h1) h1.focus();
  toast('Device added');
}

// ===========================================================================
// Pending devices

export function pendingPage(root, params, ctx) {
  const box = h('div');
  const pg = pager(() => load());
  root.replaceChildren(
    pageHeader('Pending devices', h('button.btn.btn-sm.btn-ghost', { type: 'button', text: 'Refresh', onclick: () => load() })),
    h('p.muted', { text: 'Terminals with an unknown serial that tried to connect. Approve one to create its device, or dismiss it.' }),
    readonlyNote(), box, pg.el);
  let stopped = false;
  async function load() {
    try {
      const r = await get('/api/pending-devices', { limit: 100, cursor: pg.cursor() });
      if (stopped) return;
      const items = r.items || [];
      // A later page emptied by approvals and dismissals: start over from the first.
      if (!items.length && pg.cursor()) { pg.reset(); load(); return; }
      pg.update(r.next_cursor, items.length);
      // Only a first page without a next one holds the whole list; otherwise the stats count it.
      if (!pg.cursor() && !r.next_cursor) ctx.setPending(items.length);
      else get('/api/stats').then((st) => { if (!stopped) ctx.setPending(st.pending); }).catch(() => {});
      if (!items.length) { box.replaceChildren(emptyState('No pending devices. Terminals with unknown serials appear here when they try to connect.')); return; }
      box.replaceChildren(h('div.table-wrap', null, h('table.table', { tid: 'pending-table' },
        h('caption.sr-only', { text: 'Pending devices' }),
        h('thead', null, h('tr', null, ['Serial', 'Protocol', 'Model', 'Firmware', 'Address', 'First seen', 'Last seen', 'Tries', h('span.sr-only', { text: 'Actions' })].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', null, items.map((p) => h('tr', { tid: `pending-row-${p.serial}` },
          h('td.mono', { text: p.serial }), h('td', null, h('span.tag', { text: p.protocol })),
          h('td', { text: p.model || '—' }), h('td', { text: p.firmware || '—' }), h('td.mono', { text: p.remote || '—' }),
          h('td', null, timeEl(p.first_seen)), h('td', null, timeEl(p.last_seen, true)), h('td', { text: p.requests ?? '' }),
          h('td.actions', null, isAdmin() ? [
            h('button.btn.btn-sm.btn-primary', { type: 'button', tid: `approve-${p.serial}`, text: 'Approve', onclick: (e) => approve(p, e.currentTarget) }),
            h('button.btn.btn-sm', { type: 'button', tid: `dismiss-${p.serial}`, text: 'Dismiss', onclick: (e) => dismiss(p, e.currentTarget) }),
          ] : null)))))));
    } catch (e) { if (!stopped) showError(e); }
  }
  async function approve(p, btn) {
    timeZoneList();
    const v = await dialog({
      title: `Approve ${p.serial}`,
      message: 'This creates the device; the terminal is accepted on its next attempt.',
      confirmText: 'Approve',
      fields: [
        { name: 'name', label: 'Device name', value: p.model ? `${p.model} ${p.serial}` : p.serial, required: true, attrs: { maxlength: '128' } },
        { name: 'timezone', label: 'Time zone', value: browserTimeZone(), attrs: { list: 'tz-list' } },
      ],
    });
    if (!v) return;
    if (v.timezone && !isValidTimeZone(v.timezone)) { showError(`"${v.timezone}" is not a known IANA time zone.`); return; }
    await busy(btn, async () => {
      const d = await post(`/api/pending-devices/${encodeURIComponent(p.serial)}/approve`, { name: v.name, settings: v.timezone ? { timezone: v.timezone } : undefined });
      toast(`Approved ${p.serial}`);
      if (d && d.device_id) deviceNames.set(d.device_id, v.name);
      load();
    });
  }
  async function dismiss(p, btn) {
    if (!(await dialog({ title: `Dismiss ${p.serial}?`, message: 'It is forgotten; if it tries again it is listed again.', confirmText: 'Dismiss', danger: true }))) return;
    await busy(btn, async () => {
      await post(`/api/pending-devices/${encodeURIComponent(p.serial)}/dismiss`);
      toast(`Dismissed ${p.serial}`);
      load();
    });
  }
  load();
  const timer = setInterval(load, 10000);
  return () => { stopped = true; clearInterval(timer); };
}

// ===========================================================================
// Device detail

export function deviceDetailPage(root, params) {
  const id = params.id;
  let stopped = false;
  const cleanups = [];
  root.replaceChildren(pageHeader('Device'), h('p.loading', { text: 'Loading device…' }));

  (async () => {
    let d;
    try {
      d = await get(`/api/devices/${encodeURIComponent(id)}`);
    } catch (e) {
      if (stopped) return;
      root.replaceChildren(pageHeader('Device'), emptyState(e.status === 404 ? 'This device does not exist (it may have been deleted).' : e.message,
        h('a.btn', { href: '#/devices', text: '← Back to devices' })));
      return;
    }
    if (stopped) return;
    deviceNames.set(d.device_id, d.name);
    build(d);
  })();

  function build(d) {
    const admin = isAdmin();
    const badge = statusBadge(d.status, d.device_id);
    const lastSeen = h('dd', null, timeEl(d.last_seen, true));
    const tokenBox = h('div');
    const header = pageHeader(d.name || 'Device',
      admin ? h('button.btn', { type: 'button', tid: 'rotate-token', text: 'Rotate token', onclick: (e) => rotate(e.currentTarget) }) : null,
      admin ? h('button.btn.btn-danger', { type: 'button', tid: 'delete-device', text: 'Delete', onclick: (e) => remove(e.currentTarget) }) : null);
    header.querySelector('h1').append(' ', badge);

    const info = d.info && typeof d.info === 'object' ? d.info : null;
    const infoRows = info ? Object.entries(info).map(([k, v]) => [h('dt', { text: k }), h('dd', { text: typeof v === 'object' ? JSON.stringify(v) : String(v) })]) : null;
    const details = h('section.card', { 'aria-labelledby': 'details-title' },
      h('h2', { id: 'details-title', text: 'Details' }),
      h('dl.kv', null,
        h('dt', { text: 'Device ID' }), h('dd', null, h('code', { tid: 'detail-device-id', text: d.device_id }), copyButton(d.device_id, 'Copy')),
        h('dt', { text: 'Protocol' }), h('dd', null, h('span.tag', { text: d.protocol })),
        h('dt', { text: 'Serial' }), h('dd', { text: d.serial || '—' }),
        h('dt', { text: 'Last seen' }), lastSeen,
        h('dt', { text: 'Added' }), h('dd', null, timeEl(d.created_at)),
        h('dt', { text: 'Time zone' }), h('dd', { text: (d.settings && d.settings.timezone) || 'server default' }),
        h('dt', { text: 'Queued commands' }), h('dd', { text: String(d.queued_commands ?? 0) })),
      h('h3', { text: 'Device info / firmware' }),
      infoRows && infoRows.length ? h('dl.kv', { tid: 'device-info' }, infoRows) : h('p.muted', { tid: 'device-info', text: 'The device has not reported any info yet.' }));

    // ---- telemetry
    const charts = new Map(); // field -> LineChart
    const chartsGrid = h('div.charts');
    const chartsEmpty = h('p.muted', { text: 'No numeric telemetry yet. Charts appear here as soon as the device sends some.' });
    const latestBody = h('tbody');
    const latestCells = new Map();
    const latestTime = h('span.muted');
    const latestTable = h('table.table.latest-table', { tid: 'latest-table' },
      h('caption.sr-only', { text: 'Latest telemetry values' }),
      h('thead', null, h('tr', null, h('th', { scope: 'col', text: 'Field' }), h('th', { scope: 'col', text: 'Value' }))), latestBody);
    const telemetry = h('section.card', { 'aria-labelledby': 'telemetry-title' },
      h('div.card-header', null, h('h2', { id: 'telemetry-title', text: 'Telemetry' }), latestTime),
      chartsEmpty, chartsGrid, h('h3', { text: 'Latest values' }), h('div.table-wrap', null, latestTable));

    function chartFor(name) {
      let c = charts.get(name);
      if (c) return c;
      const canvas = h('canvas.chart', { tid: `chart-${name}` });
      const card = h('figure.chart-card', null, h('figcaption', { text: name }), canvas);
      // keep charts in name order
      const after = [...chartsGrid.children].find((el) => el.dataset.field > name);
      card.dataset.field = name;
      chartsGrid.insertBefore(card, after || null);
      c = new LineChart(canvas, name);
      charts.set(name, c);
      chartsEmpty.hidden = true;
      return c;
    }
    function setLatest(payload, ts) {
      if (!payload || typeof payload !== 'object') return;
      for (const [k, v] of Object.entries(payload)) {
        let cell = latestCells.get(k);
        if (!cell) {
          cell = h('td.mono', { tid: `latest-${k}` });
          latestCells.set(k, cell);
          const row = h('tr', { dataset: { field: k } }, h('th', { scope: 'row', text: k }), cell);
          const after = [...latestBody.children].find((el) => el.dataset.field > k);
          latestBody.insertBefore(row, after || null);
        }
        cell.textContent = typeof v === 'number' ? String(Math.round(v * 1000) / 1000) : (typeof v === 'string' ? v : JSON.stringify(v));
      }
      if (ts) latestTime.replaceChildren('Updated ', timeEl(ts, true));
    }
    latestBody.append(h('tr.empty-row', null, h('td', { colspan: '2', text: 'No telemetry yet.' })));

    // ---- commands
    const cmdName = field({ id: 'command-name', label: 'Command', required: true, attrs: { list: 'command-list', autocomplete: 'off', spellcheck: 'false', placeholder: 'e.g. unlock', maxlength: '128' } });
    const cmdList = h('datalist', { id: 'command-list' }, ['unlock', 'reboot', 'open_door', 'set_time', 'get_users', 'fetch_logs', 'raw'].map((c) => h('option', { value: c })));
    const cmdPayload = field({ id: 'command-payload', label: 'Payload (JSON object)', textarea: true, value: '{}', rows: 3 });
    const payloadErr = h('p.field-error', { id: 'command-payload-error', 'aria-live': 'polite' });
    cmdPayload.append(payloadErr);
    cmdPayload.input.setAttribute('aria-describedby', 'command-payload-error');
    const cmdSubmit = h('button.btn.btn-primary', { type: 'submit', tid: 'command-submit', text: 'Send command' });
    const validatePayload = () => {
      const txt = cmdPayload.input.value.trim();
      let err = '';
      if (txt) {
        try {
          const v = JSON.parse(txt);
          if (!v || typeof v !== 'object' || Array.isArray(v)) err = 'The payload must be a JSON object, e.g. {"door": 1}.';
        } catch (e) { err = `Not valid JSON: ${e.message}`; }
      }
      payloadErr.textContent = err;
      cmdPayload.input.setAttribute('aria-invalid', err ? 'true' : 'false');
      return err;
    };
    cmdPayload.input.addEventListener('input', validatePayload);
    const cmdForm = h('form.command-form', { novalidate: true, tid: 'command-form' }, cmdList, cmdName, cmdPayload, h('div.form-actions', null, cmdSubmit));
    if (!admin) {
      [cmdName.input, cmdPayload.input, cmdSubmit].forEach((el) => { el.disabled = true; });
      cmdForm.prepend(h('p.note.readonly-note', { tid: 'command-readonly', text: 'Viewers cannot send commands. Ask an admin.' }));
    }
    const cmdBody = h('tbody');
    const cmdEmpty = h('p.muted', { text: 'No commands sent to this device yet.' });
    const cmdTable = h('table.table.commands-table', { tid: 'commands-table' },
      h('caption.sr-only', { text: 'Command history' }),
      h('thead', null, h('tr', null, ['Command', 'Payload', 'Status', 'Created', 'Result'].map((t) => h('th', { scope: 'col', text: t })))), cmdBody);
    const commands = h('section.card', { 'aria-labelledby': 'commands-title' },
      h('h2', { id: 'commands-title', text: 'Commands' }), cmdForm,
      h('h3', { text: 'History' }), cmdEmpty, h('div.table-wrap', null, cmdTable));

    cmdForm.addEventListener('submit', async (e) => {
      e.preventDefault();
      clearError();
      const command = cmdName.input.value.trim();
      if (!command) { showError('Enter a command name.'); cmdName.input.focus(); return; }
      if (validatePayload()) { cmdPayload.input.focus(); return; }
      const txt = cmdPayload.input.value.trim();
      const payload = txt ? JSON.parse(txt) : {};
      await busy(cmdSubmit, async () => {
        const r = await post(`/api/devices/${encodeURIComponent(id)}/commands`, { command, payload });
        toast(`Command “${command}” queued`);
        if (r && r.command_id) pollCommands(true);
        else pollCommands(true);
      });
    });

    let cmdTimer = null;
    async function pollCommands(force) {
      clearTimeout(cmdTimer);
      try {
        const r = await get(`/api/devices/${encodeURIComponent(id)}/commands`, { limit: 50 });
        if (stopped) return;
        const items = r.items || [];
        cmdEmpty.hidden = items.length > 0;
        cmdTable.hidden = items.length === 0;
        cmdBody.replaceChildren(...items.map((c) => h('tr', null,
          h('td.mono', { text: c.command }),
          h('td.mono.small', { text: summarize(c.payload, 80) || '{}' }),
          h('td', null, h(`span.badge.cmd-${c.status}`, { tid: `command-status-${c.command_id}`, text: c.status })),
          h('td', null, timeEl(c.created_at)),
          h('td.mono.small', { text: summarize(c.result, 120) || '—' }))));
        const active = items.some((c) => c.status === 'queued' || c.status === 'sent');
        if (active || force) cmdTimer = setTimeout(() => pollCommands(false), 2000);
      } catch (e) {
        if (!stopped) { showError(e); cmdTimer = setTimeout(() => pollCommands(false), 5000); }
      }
    }
    cleanups.push(() => clearTimeout(cmdTimer));
    // A command's outcome is pushed as soon as it is durable: the history shows it at once.
    cleanups.push(live.on('command_result', (m) => { if (m.device_id === id) pollCommands(false); }));

    // ---- events
    const evList = h('ol.events', { tid: 'device-events' });
    const evEmpty = h('p.muted', { text: 'No events for this device yet.' });
    const events = h('section.card', { 'aria-labelledby': 'dev-events-title' },
      h('div.card-header', null, h('h2', { id: 'dev-events-title', text: 'Events' }), h('a', { href: `#/events?device_id=${encodeURIComponent(id)}`, text: 'Open in event stream →' })),
      evEmpty, evList);
    const addEvent = (e, top) => {
      evEmpty.hidden = true;
      const li = eventItem(e);
      if (top) evList.prepend(li); else evList.append(li);
      while (evList.children.length > 50) evList.lastChild.remove();
    };

    root.replaceChildren(header, readonlyNote(), tokenBox,
      h('div.detail-grid', null, details, commands), telemetry, events);
    header.querySelector('h1').focus();

    // ---- data + live updates
    get(`/api/devices/${encodeURIComponent(id)}/telemetry`, { limit: 100 }).then((r) => {
      if (stopped) return;
      const items = (r.items || []).slice().reverse(); // oldest first
      const series = new Map();
      for (const it of items) {
        const t = Date.parse(it.ts);
        for (const [k, v] of numericFields(it.payload)) {
          if (!series.has(k)) series.set(k, []);
          series.get(k).push({ t, v });
        }
      }
      for (const [k, pts] of series) {
        const c = chartFor(k);
        // merge with anything pushed live meanwhile
        const live0 = c.points.filter((p) => !pts.length || p.t > pts[pts.length - 1].t);
        c.setPoints(pts.concat(live0));
      }
      const newest = items[items.length - 1];
      if (newest) { latestBody.querySelector('.empty-row')?.remove(); setLatest(newest.payload, newest.ts); }
      else if (d.latest_telemetry && d.latest_telemetry.payload) { latestBody.querySelector('.empty-row')?.remove(); setLatest(d.latest_telemetry.payload, d.latest_telemetry.ts); }
    }).catch((e) => showError(e));

    get('/api/events', { device_id: id, limit: 50 }).then((r) => {
      if (stopped) return;
      (r.items || []).forEach((e) => addEvent(normEvent(e), false));
      evEmpty.hidden = evList.children.length > 0;
    }).catch((e) => showError(e));

    pollCommands(false);

    cleanups.push(live.on('telemetry', (m) => {
      if (m.device_id !== id) return;
      const t = m.ts ? Date.parse(m.ts) : Date.now();
      for (const [k, v] of numericFields(m.payload)) chartFor(k).push(isNaN(t) ? Date.now() : t, v);
      latestBody.querySelector('.empty-row')?.remove();
      setLatest(m.payload, m.ts || new Date().toISOString());
    }));
    let pendingStatus = null;
    cleanups.push(live.on('device_status', (m) => { if (m.device_id === id) pendingStatus = m; }));
    const flush = setInterval(() => {
      if (!pendingStatus) return;
      setStatusBadge(badge, pendingStatus.status);
      if (pendingStatus.ts) lastSeen.replaceChildren(timeEl(pendingStatus.ts, true));
      pendingStatus = null;
    }, 250);
    cleanups.push(() => clearInterval(flush));
    cleanups.push(live.on('event', (m) => {
      if (m.device_id !== id) return;
      addEvent(normEvent(m), true);
      if (m.event_type === 'device_connected' || m.event_type === 'device_disconnected') pendingStatus = { status: m.event_type === 'device_connected' ? 'online' : 'offline', ts: m.ts };
    }));
    cleanups.push(() => charts.forEach((c) => c.destroy()));

    async function rotate(btn) {
      if (!(await dialog({ title: 'Rotate token?', message: 'A new token is issued. The current token stops working at once and the device is disconnected until it uses the new one.', confirmText: 'Rotate token', danger: true }))) return;
      await busy(btn, async () => {
        const r = await post(`/api/devices/${encodeURIComponent(id)}/token`);
        tokenBox.replaceChildren(h('section.card.created', { 'aria-labelledby': 'new-token-title' },
          h('h2', { id: 'new-token-title', text: 'New token' }),
          h('p.warning', { text: 'Copy it now: it is shown only once. Update the device with it.' }),
          h('p', null, h('code.secret', { tid: 'rotated-token', text: r.token }), copyButton(r.token, 'Copy', 'copy-rotated-token'))));
        toast('Token rotated');
        tokenBox.querySelector('h2').setAttribute('tabindex', '-1');
        tokenBox.querySelector('h2').focus();
      });
    }
    async function remove(btn) {
      if (!(await dialog({ title: `Delete “${d.name}”?`, message: 'This deletes the device and all its data (telemetry, events, commands) and disconnects it. It cannot be undone.', confirmText: 'Delete device', danger: true }))) return;
      await busy(btn, async () => {
        await del(`/api/devices/${encodeURIComponent(id)}`);
        deviceNames.delete(id);
        toast(`Deleted “${d.name}”`);
        location.hash = '#/devices';
      });
    }
  }

  return () => { stopped = true; cleanups.forEach((fn) => fn()); };
}

// ===========================================================================
// Events

export function eventsPage(root, params) {
  const typeF = field({ id: 'events-type', label: 'Type', value: params.query.get('type') || '', attrs: { list: 'event-types', placeholder: 'Any type', autocomplete: 'off' } });
  const devF = field({ id: 'events-device', label: 'Device ID', value: params.query.get('device_id') || '', attrs: { placeholder: 'Any device', autocomplete: 'off', spellcheck: 'false' } });
  const types = h('datalist', { id: 'event-types' }, ['device_connected', 'device_disconnected', 'device_takeover', 'door_event', 'unknown_face', 'admin_log'].map((t) => h('option', { value: t })));
  const pauseBtn = h('button.btn', { type: 'button', tid: 'events-pause', 'aria-pressed': 'false', text: 'Pause' });
  const buffered = h('span.muted', { 'aria-live': 'polite' });
  const list = h('ol.events.events-full', { tid: 'events-list' });
  const empty = emptyState('No events yet. Device connects, disconnects and reports appear here live.');
  const more = h('button.btn.btn-sm', { type: 'button', tid: 'events-more', text: 'Load older events', hidden: true });
  root.replaceChildren(
    pageHeader('Events', buffered, pauseBtn),
    h('form.filters.card', { role: 'search', onsubmit: (e) => { e.preventDefault(); load(); } }, types, typeF, devF),
    empty, list, h('div.center', null, more));

  let paused = false;
  let buffer = [];
  let nextCursor = null;
  let stopped = false;
  const MAX = 500;
  const matches = (e) => (!filt.type || e.type === filt.type) && (!filt.device || e.device_id === filt.device);
  let filt = { type: '', device: '' };

  async function load(append = false) {
    filt = { type: typeF.input.value.trim(), device: devF.input.value.trim() };
    try {
      const r = await get('/api/events', { type: filt.type, device_id: filt.device, limit: 100, cursor: append ? nextCursor : undefined });
      if (stopped) return;
      if (!append) { list.replaceChildren(); buffer = []; buffered.textContent = ''; }
      (r.items || []).forEach((e) => list.append(eventItem(normEvent(e))));
      nextCursor = r.next_cursor || null;
      more.hidden = !nextCursor;
      empty.hidden = list.children.length > 0;
    } catch (e) { if (!stopped) showError(e); }
  }
  const reload = debounce(() => load(), 300);
  typeF.input.addEventListener('input', reload);
  devF.input.addEventListener('input', reload);
  more.addEventListener('click', () => load(true));
  pauseBtn.addEventListener('click', () => {
    paused = !paused;
    pauseBtn.textContent = paused ? 'Resume' : 'Pause';
    pauseBtn.setAttribute('aria-pressed', String(paused));
    if (!paused) {
      buffer.forEach((e) => list.prepend(eventItem(e)));
      buffer = [];
      trim();
      buffered.textContent = '';
      empty.hidden = list.children.length > 0;
    } else {
      buffered.textContent = 'Paused';
    }
  });
  function trim() { while (list.children.length > MAX) list.lastChild.remove(); }
  const off = live.on('event', (m) => {
    const e = normEvent(m);
    if (!matches(e)) return;
    if (paused) {
      buffer.push(e);
      if (buffer.length > MAX) buffer.shift();
      buffered.textContent = `Paused — ${buffer.length} new`;
      return;
    }
    list.prepend(eventItem(e));
    trim();
    empty.hidden = true;
  });
  load();
  return () => { stopped = true; off(); };
}

// ===========================================================================
// Attendance

function toUtc(local) {
  if (!local) return '';
  const d = new Date(local);
  return isNaN(d) ? '' : d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export function attendancePage(root) {
  const dev = field({ id: 'att-device', label: 'Device ID', attrs: { autocomplete: 'off', spellcheck: 'false', placeholder: 'Any device' } });
  const enroll = field({ id: 'att-enrollid', label: 'Enroll ID', attrs: { inputmode: 'numeric', placeholder: 'Any person' } });
  const from = field({ id: 'att-from', label: 'From (local time)', type: 'datetime-local', attrs: { step: '1' } });
  const to = field({ id: 'att-to', label: 'To (local time)', type: 'datetime-local', attrs: { step: '1' } });
  const applyBtn = h('button.btn.btn-primary', { type: 'submit', tid: 'att-apply', text: 'Apply' });
  const csv = h('a.btn', { tid: 'attendance-csv', href: '/api/attendance.csv', download: 'attendance.csv', text: 'Export CSV' });
  const tbody = h('tbody');
  const table = h('table.table', { tid: 'attendance-table' },
    h('caption.sr-only', { text: 'Attendance punches' }),
    h('thead', null, h('tr', null, ['Time (UTC → local)', 'Device local time', 'Device', 'Enroll ID', 'Person', 'Details', 'Photo'].map((t) => h('th', { scope: 'col', text: t })))), tbody);
  const emptyBox = h('div');
  const pg = pager(() => load());
  root.replaceChildren(
    pageHeader('Attendance', csv),
    h('form.filters.card', { role: 'search', onsubmit: (e) => { e.preventDefault(); pg.reset(); load(); } }, dev, enroll, from, to, h('div.field.field-action', null, applyBtn)),
    emptyBox, h('div.table-wrap', null, table), pg.el);
  let stopped = false;

  function filters() {
    return { device_id: dev.input.value.trim(), enrollid: enroll.input.value.trim(), from: toUtc(from.input.value), to: toUtc(to.input.value) };
  }
  function updateCsv() {
    const qs = buildQuery(filters());
    csv.href = '/api/attendance.csv' + (qs ? `?${qs}` : '');
  }
  [dev, enroll, from, to].forEach((f) => f.input.addEventListener('input', updateCsv));
  async function load() {
    updateCsv();
    try {
      const r = await get('/api/attendance', { ...filters(), limit: 100, cursor: pg.cursor() });
      if (stopped) return;
      const items = r.items || [];
      tbody.replaceChildren(...items.map((a) => {
        const f = a.fields && typeof a.fields === 'object' ? a.fields : {};
        const details = Object.entries(f).map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`).join(', ');
        return h('tr', null,
          h('td', null, timeEl(a.utc_time)),
          h('td.mono', { text: a.local_time || '—' }),
          h('td', null, a.device_id ? deviceLink(a.device_id) : h('span', { text: a.serial || '—' }), a.serial ? h('span.muted.small', { text: ` ${a.serial}` }) : null),
          h('td.mono', { text: a.enrollid ?? '—' }),
          h('td', { 'data-testid': 'attendance-person' }, a.person ? [h('span', { text: a.person.name }), a.person.external_id ? h('span.muted.small', { text: ` ${a.person.external_id}` }) : null] : h('span.muted', { text: '—' })),
          h('td.small', { text: details || '—' }),
          h('td', null, a.photo_url ? h('a', { href: a.photo_url, target: '_blank', rel: 'noopener', text: 'Photo' }) : '—'));
      }));
      table.hidden = !items.length;
      const f = filters();
      const filtered = f.device_id || f.enrollid || f.from || f.to;
      emptyBox.replaceChildren(items.length ? '' : emptyState(filtered ? 'No punches match these filters.' : 'No attendance records yet. Terminals\' punches appear here once they are stored.'));
      pg.update(r.next_cursor, items.length);
    } catch (e) { if (!stopped) showError(e); }
  }
  load();
  return () => { stopped = true; };
}

// ===========================================================================
// People: the person behind a PIN, and writing them to terminals

const PRIVILEGES = [['user', 'User'], ['manager', 'Manager'], ['admin', 'Admin']];
// Dialects with user commands: a person can be written to these terminals.
const USER_PROTOCOLS = ['aiface', 'smackbio', 'zkteco'];

export function peoplePage(root) {
  const admin = isAdmin();
  const pin = field({ id: 'person-pin', label: 'PIN', required: true, attrs: { inputmode: 'numeric', autocomplete: 'off', placeholder: 'e.g. 7' }, hint: 'The number the person punches with on the terminals.' });
  const name = field({ id: 'person-name', label: 'Name', required: true, attrs: { maxlength: '64', autocomplete: 'off' } });
  const card = field({ id: 'person-card', label: 'Card', attrs: { maxlength: '20', autocomplete: 'off' } });
  const priv = field({ id: 'person-privilege', label: 'Privilege', value: 'user', options: PRIVILEGES });
  const dept = field({ id: 'person-department', label: 'Department', attrs: { maxlength: '64', autocomplete: 'off' } });
  const ext = field({ id: 'person-external-id', label: 'External ID', attrs: { maxlength: '128', autocomplete: 'off' }, hint: 'Their id in your HR or payroll system; punches carry it.' });
  const addBtn = h('button.btn.btn-primary', { type: 'submit', tid: 'person-submit', text: 'Add person' });
  const form = h('form.card.inline-form', { novalidate: true, 'aria-labelledby': 'add-person-title' },
    h('h2', { id: 'add-person-title', text: 'Add person' }), h('div.inline-fields', null, pin, name, card, priv, dept, ext, h('div.field.field-action', null, addBtn)));
  const box = h('div');
  const syncBox = h('div');
  const pg = pager(() => load());
  root.replaceChildren(pageHeader('People'), admin ? form : readonlyNote(), syncBox, box, pg.el);
  let stopped = false;
  const opt = (f) => f.input.value.trim() || undefined;

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearError();
    const n = Number(pin.input.value.trim());
    if (!Number.isInteger(n) || n < 1) { showError('The PIN is a whole number from 1.'); pin.input.focus(); return; }
    if (!name.input.value.trim()) { showError('Enter a name.'); name.input.focus(); return; }
    const body = { pin: n, name: name.input.value.trim(), card: opt(card), privilege: priv.input.value, department: opt(dept), external_id: opt(ext) };
    await busy(addBtn, async () => {
      await post('/api/people', body);
      toast(`${body.name} added`);
      [pin, name, card, dept, ext].forEach((f) => { f.input.value = ''; });
      load();
    });
  });

  async function load() {
    try {
      const r = await get('/api/people', { limit: 100, cursor: pg.cursor() });
      if (stopped) return;
      const items = r.items || [];
      box.replaceChildren(items.length ? h('div.table-wrap', null, h('table.table', { tid: 'people-table' },
        h('caption.sr-only', { text: 'People' }),
        h('thead', null, h('tr', null, ['PIN', 'Name', 'Department', 'External ID', 'Privilege', 'Enrolled on', h('span.sr-only', { text: 'Actions' })].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', null, items.map((p) => h('tr', { tid: `person-row-${p.pin}` },
          h('td.mono', { text: String(p.pin) }),
          h('td', null, h('strong', { text: p.name }), p.card ? h('span.muted.small', { text: ` card ${p.card}` }) : null),
          h('td', { text: p.department || '—' }),
          h('td.mono', { text: p.external_id || '—' }),
          h('td', { text: p.privilege }),
          h('td', null, p.enrolled_on.length ? p.enrolled_on.map((d, i) => [i ? ', ' : '', h('a', { href: `#/devices/${encodeURIComponent(d.device_id)}`, text: d.name })]).flat() : h('span.muted', { text: 'no terminal' })),
          h('td.actions', null, admin ? [
            h('button.btn.btn-sm', { type: 'button', tid: `edit-person-${p.pin}`, text: 'Edit', onclick: (e) => edit(p, e.currentTarget) }),
            h('button.btn.btn-sm', { type: 'button', tid: `sync-person-${p.pin}`, text: 'Terminals…', onclick: () => syncPanel(p) }),
            h('button.btn.btn-sm.btn-danger', { type: 'button', tid: `delete-person-${p.pin}`, text: 'Delete', onclick: (e) => remove(p, e.currentTarget) }),
          ] : null))))))
        : emptyState('No people yet. Add the people behind your terminals\' PINs: punches then show their names.'));
      pg.update(r.next_cursor, items.length);
    } catch (e) { if (!stopped) showError(e); }
  }

  async function edit(p, btn) {
    const v = await dialog({ title: `Edit ${p.name} (PIN ${p.pin})`, confirmText: 'Save', fields: [
      { name: 'name', label: 'Name', value: p.name, required: true, attrs: { maxlength: '64' } },
      { name: 'card', label: 'Card (empty: none)', value: p.card || '', attrs: { maxlength: '20' } },
      { name: 'department', label: 'Department (empty: none)', value: p.department || '', attrs: { maxlength: '64' } },
      { name: 'external_id', label: 'External ID (empty: none)', value: p.external_id || '', attrs: { maxlength: '128' } },
    ] });
    if (!v) return;
    const body = { name: v.name, card: v.card || null, department: v.department || null, external_id: v.external_id || null };
    await busy(btn, async () => { await patch(`/api/people/${p.pin}`, body); toast(`${v.name} saved`); load(); });
  }

  async function remove(p, btn) {
    if (!(await dialog({ title: `Delete ${p.name}?`, message: 'Their punches stay, without a name. The terminals keep them until you remove them there (Terminals…).', confirmText: 'Delete person', danger: true }))) return;
    await busy(btn, async () => { await del(`/api/people/${p.pin}`); toast(`${p.name} deleted`); load(); });
  }

  async function syncPanel(p) {
    clearError();
    let devices = [];
    try {
      const lists = await Promise.all(USER_PROTOCOLS.map((proto) => get('/api/devices', { protocol: proto, limit: 500 })));
      devices = lists.flatMap((l) => l.items || []);
    } catch (e) { showError(e); return; }
    if (!devices.length) { syncBox.replaceChildren(h('section.card', null, h('p.muted', { text: 'No AiFace, SmackBio or ZKTeco terminals yet.' }))); return; }
    const enrolled = new Set(p.enrolled_on.map((d) => d.device_id));
    const boxes = devices.map((d) => {
      const cb = h('input', { type: 'checkbox', id: `sync-dev-${d.device_id}`, value: d.device_id, 'data-testid': `sync-device-${d.serial || d.device_id}` });
      cb.checked = enrolled.has(d.device_id);
      return { cb, row: h('label.check', { for: cb.id }, cb, ` ${d.name} `, h('span.muted.small', { text: `${d.protocol} ${d.serial || ''}` })) };
    });
    const write = h('button.btn.btn-primary', { type: 'button', tid: 'sync-write', text: 'Write to selected terminals' });
    const erase = h('button.btn.btn-danger', { type: 'button', tid: 'sync-remove', text: 'Remove from selected terminals' });
    const close = h('button.btn', { type: 'button', text: 'Close', onclick: () => syncBox.replaceChildren() });
    const run = async (btn, removeIt) => {
      const chosen = boxes.filter((b) => b.cb.checked).map((b) => b.cb.value);
      if (!chosen.length) { showError('Choose at least one terminal.'); return; }
      await busy(btn, async () => {
        const r = await post(`/api/people/${p.pin}/sync`, { devices: chosen, remove: removeIt });
        toast(`${r.commands.length} command(s) queued: follow them on each device's page`);
      });
    };
    write.addEventListener('click', () => run(write, false));
    erase.addEventListener('click', () => run(erase, true));
    syncBox.replaceChildren(h('section.card', { 'aria-labelledby': 'sync-title', tid: 'sync-panel' },
      h('h2', { id: 'sync-title', text: `${p.name} on terminals` }),
      h('p.muted', { text: 'Writes the person (name, card, privilege) with each terminal\'s own user commands, or removes them. Terminals that report them enrolled are ticked.' }),
      h('div.checks', null, boxes.map((b) => b.row)),
      h('div.form-actions', null, write, erase, close)));
    syncBox.querySelector('h2').scrollIntoView({ block: 'nearest' });
  }

  load();
  return () => { stopped = true; };
}

// ===========================================================================
// Webhooks (admin): endpoints told of what the fleet stores

const HOOK_EVENTS = [['attendance', 'Punches'], ['device_status', 'Devices online/offline'], ['events', 'Device events'], ['command_results', 'Command results'], ['telemetry', 'Telemetry (at most 100/s by default)']];

export function webhooksPage(root) {
  if (!isAdmin()) { root.replaceChildren(pageHeader('Webhooks'), emptyState('Only admins can manage webhooks.')); return undefined; }
  const url = field({ id: 'hook-url', label: 'URL', required: true, attrs: { type: 'url', placeholder: 'https://hr.example.com/fleetgate', autocomplete: 'off', spellcheck: 'false', maxlength: '2048' } });
  const preset = field({ id: 'hook-preset', label: 'Kind', value: 'standard', options: [['standard', 'Signed JSON (Standard Webhooks)'], ['erpnext', 'ERPNext employee check-ins']] });
  const desc = field({ id: 'hook-description', label: 'Description', attrs: { maxlength: '256', autocomplete: 'off' } });
  const checks = HOOK_EVENTS.map(([v, t]) => {
    const cb = h('input', { type: 'checkbox', id: `hook-event-${v}`, value: v, 'data-testid': `hook-event-${v}` });
    cb.checked = v === 'attendance';
    return { cb, row: h('label.check', { for: cb.id }, cb, ` ${t}`) };
  });
  const events = h('fieldset.field', null, h('legend', { text: 'Events' }), h('div.checks', null, checks.map((c) => c.row)));
  const apiKey = field({ id: 'hook-erp-key', label: 'ERPNext API key', attrs: { autocomplete: 'off' } });
  const apiSecret = field({ id: 'hook-erp-secret', label: 'ERPNext API secret', type: 'password', attrs: { autocomplete: 'new-password' } });
  const byExt = field({ id: 'hook-erp-by', label: 'Find the employee by', value: 'pin', options: [['pin', 'PIN in Attendance Device ID'], ['external', 'the person\'s external ID (Employee ID)']] });
  const erp = h('div.inline-fields', null, apiKey, apiSecret, byExt);
  const addBtn = h('button.btn.btn-primary', { type: 'submit', tid: 'hook-submit', text: 'Add endpoint' });
  const form = h('form.card', { novalidate: true, 'aria-labelledby': 'add-hook-title' },
    h('h2', { id: 'add-hook-title', text: 'Add endpoint' }),
    h('div.inline-fields', null, url, preset, desc), events, erp, h('div.form-actions', null, addBtn));
  const created = h('div');
  const box = h('div');
  const logBox = h('div');
  root.replaceChildren(pageHeader('Webhooks'), h('p.muted', { text: 'Each punch, device status change, device event, command result or telemetry message an endpoint takes is posted to it once it is stored, and retried for days until it is taken. See docs/integrations.md.' }), form, created, box, logBox);
  let stopped = false;
  const sync = () => {
    const isErp = preset.input.value === 'erpnext';
    erp.hidden = !isErp;
    events.hidden = isErp;
  };
  preset.input.addEventListener('change', sync);
  sync();

  const showSecret = (title, secret) => {
    created.replaceChildren(h('section.card.created', { 'aria-labelledby': 'hook-secret-title' },
      h('h2', { id: 'hook-secret-title', tabindex: '-1', text: title }),
      h('p.warning', { text: 'Copy the signing secret now: it is shown only once. The receiver verifies every delivery with it.' }),
      h('p', null, h('code.secret', { tid: 'hook-secret', text: secret }), copyButton(secret, 'Copy', 'hook-secret-copy'))));
    created.querySelector('h2').focus();
  };

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearError();
    const body = { url: url.input.value.trim(), description: desc.input.value.trim() || undefined, preset: preset.input.value };
    if (!body.url) { showError('Enter the endpoint\'s URL.'); url.input.focus(); return; }
    if (body.preset === 'erpnext') {
      body.erpnext = { api_key: apiKey.input.value.trim(), api_secret: apiSecret.input.value.trim(), by_external_id: byExt.input.value === 'external' };
      if (!body.erpnext.api_key || !body.erpnext.api_secret) { showError('Enter the ERPNext API key and secret.'); apiKey.input.focus(); return; }
    } else {
      body.events = checks.filter((c) => c.cb.checked).map((c) => c.cb.value);
      if (!body.events.length) { showError('Choose at least one kind of event.'); return; }
    }
    await busy(addBtn, async () => {
      const r = await post('/api/webhooks', body);
      toast('Endpoint added');
      url.input.value = ''; desc.input.value = ''; apiKey.input.value = ''; apiSecret.input.value = '';
      if (r.secret) showSecret(`Endpoint ${r.id} added`, r.secret); else created.replaceChildren();
      load();
    });
  });

  async function load() {
    try {
      const r = await get('/api/webhooks');
      if (stopped) return;
      const items = r.items || [];
      box.replaceChildren(items.length ? h('div.table-wrap', null, h('table.table', { tid: 'hooks-table' },
        h('caption.sr-only', { text: 'Webhook endpoints' }),
        h('thead', null, h('tr', null, ['Endpoint', 'Events', 'State', 'Last attempt', h('span.sr-only', { text: 'Actions' })].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', null, items.map((w) => {
          const d = w.delivery || {};
          const state = !w.enabled ? h('span.badge.cmd-failed', { text: d.disabled_reason ? 'disabled (failing)' : 'disabled' })
            : d.failures ? h('span.badge.cmd-sent', { text: `retrying (${d.failures} failed)` })
              : h('span.badge.cmd-acked', { text: 'delivering' });
          return h('tr', { tid: `hook-row-${w.id}` },
            h('td', null, h('strong.mono.small', { text: w.url }), w.description ? h('div.muted.small', { text: w.description }) : null, h('div.muted.small', { text: `${w.id} · ${w.preset}` })),
            h('td', null, w.events.map((ev) => h('span.tag', { text: ev }))),
            h('td', null, state, d.disabled_reason ? h('div.muted.small', { text: d.disabled_reason }) : null),
            h('td.small', null, d.last_error ? h('span', { text: d.last_error }) : (d.last_status ? h('span', { text: `HTTP ${d.last_status}` }) : h('span.muted', { text: '—' })),
              d.next_attempt_at ? h('div.muted.small', null, 'next ', timeEl(d.next_attempt_at, true)) : null),
            h('td.actions', null,
              h('button.btn.btn-sm', { type: 'button', tid: `hook-log-${w.id}`, text: 'Deliveries', onclick: () => showLog(w) }),
              h('button.btn.btn-sm', { type: 'button', tid: `hook-toggle-${w.id}`, text: w.enabled ? 'Disable' : 'Enable', onclick: (e) => toggle(w, e.currentTarget) }),
              h('button.btn.btn-sm', { type: 'button', text: 'Replay…', onclick: (e) => replay(w, e.currentTarget) }),
              w.preset === 'standard' ? h('button.btn.btn-sm', { type: 'button', text: 'Rotate secret', onclick: (e) => rotate(w, e.currentTarget) }) : null,
              h('button.btn.btn-sm.btn-danger', { type: 'button', tid: `hook-delete-${w.id}`, text: 'Delete', onclick: (e) => remove(w, e.currentTarget) })));
        })))) : emptyState('No webhook endpoints yet.'));
    } catch (e) { if (!stopped) showError(e); }
  }
  async function showLog(w) {
    try {
      const r = await get(`/api/webhooks/${w.id}/deliveries`, { limit: 50 });
      const items = r.items || [];
      logBox.replaceChildren(h('section.card', { 'aria-labelledby': 'hook-log-title', tid: 'hook-log' },
        h('h2', { id: 'hook-log-title', text: `Deliveries to ${w.url}` }),
        items.length ? h('div.table-wrap', null, h('table.table', null,
          h('thead', null, h('tr', null, ['When', 'Message', 'Type', 'Attempt', 'Status', 'Latency', 'Error'].map((t) => h('th', { scope: 'col', text: t })))),
          h('tbody', null, items.map((d) => h('tr', null,
            h('td', null, timeEl(d.at)), h('td.mono.small', { text: d.msg_id }), h('td.small', { text: d.type }),
            h('td', { text: String(d.attempt) }), h('td', { text: d.status ?? '—' }), h('td', { text: `${d.latency_ms} ms` }),
            h('td.small', { text: d.error || '' }))))))
          : h('p.muted', { text: 'No attempts yet.' })));
    } catch (e) { showError(e); }
  }
  async function toggle(w, btn) {
    await busy(btn, async () => { await patch(`/api/webhooks/${w.id}`, { enabled: !w.enabled }); toast(w.enabled ? 'Endpoint disabled' : 'Endpoint enabled'); load(); });
  }
  async function replay(w, btn) {
    const v = await dialog({ title: 'Replay messages', message: 'Every message from this time on is sent again, under the ids it had (as far back as the outbox keeps, 7 days by default).', confirmText: 'Replay', fields: [{ name: 'from', label: 'From (local time)', type: 'datetime-local', required: true, attrs: { step: '1' } }] });
    if (!v) return;
    await busy(btn, async () => { await post(`/api/webhooks/${w.id}/replay`, { from: toUtc(v.from) }); toast('Replay started'); load(); });
  }
  async function rotate(w, btn) {
    if (!(await dialog({ title: 'Rotate the signing secret?', message: 'A new secret is made; the old one keeps signing beside it for a day, so the receiver can switch over.', confirmText: 'Rotate' }))) return;
    await busy(btn, async () => { const r = await post(`/api/webhooks/${w.id}/rotate-secret`, {}); showSecret('New signing secret', r.secret); load(); });
  }
  async function remove(w, btn) {
    if (!(await dialog({ title: 'Delete this endpoint?', message: `${w.url} is told nothing more, and its delivery log is deleted.`, confirmText: 'Delete endpoint', danger: true }))) return;
    await busy(btn, async () => { await del(`/api/webhooks/${w.id}`); toast('Endpoint deleted'); logBox.replaceChildren(); load(); });
  }
  load();
  const timer = setInterval(() => { if (!document.hidden) load(); }, 5000);
  return () => { stopped = true; clearInterval(timer); };
}

// ===========================================================================
// Users (admin)

export function usersPage(root) {
  if (!isAdmin()) { root.replaceChildren(pageHeader('Users'), emptyState('Only admins can manage users.')); return undefined; }
  const uname = field({ id: 'user-username', label: 'Username', required: true, attrs: { autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false' } });
  const upass = field({ id: 'user-password', label: 'Password', type: 'password', required: true, attrs: { autocomplete: 'new-password', minlength: '10' }, hint: 'At least 10 characters; they will be asked to change it.' });
  const urole = field({ id: 'user-role', label: 'Role', value: 'viewer', options: [['viewer', 'Viewer (read only)'], ['admin', 'Admin']] });
  const addBtn = h('button.btn.btn-primary', { type: 'submit', tid: 'user-submit', text: 'Add user' });
  const form = h('form.card.inline-form', { novalidate: true, 'aria-labelledby': 'add-user-title' },
    h('h2', { id: 'add-user-title', text: 'Add user' }), h('div.inline-fields', null, uname, upass, urole, h('div.field.field-action', null, addBtn)));
  const box = h('div');
  root.replaceChildren(pageHeader('Users'), form, box);
  let stopped = false;

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearError();
    const body = { username: uname.input.value.trim(), password: upass.input.value, role: urole.input.value };
    if (!body.username) { showError('Enter a username.'); uname.input.focus(); return; }
    if (body.password.length < 10) { showError('The password must be at least 10 characters long.'); upass.input.focus(); return; }
    await busy(addBtn, async () => {
      await post('/api/users', body);
      toast(`User ${body.username} added`);
      uname.input.value = ''; upass.input.value = '';
      load();
    });
  });

  async function load() {
    try {
      const r = await get('/api/users', { limit: 1000 });
      if (stopped) return;
      const me = session.user && session.user.username;
      const items = r.items || [];
      box.replaceChildren(items.length ? h('div.table-wrap', null, h('table.table', { tid: 'users-table' },
        h('caption.sr-only', { text: 'Users' }),
        h('thead', null, h('tr', null, ['Username', 'Role', 'Created', h('span.sr-only', { text: 'Actions' })].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', null, items.map((u) => {
          const self = u.username === me;
          const role = h('select', { id: `role-${u.username}`, 'data-testid': `role-${u.username}`, 'aria-label': `Role of ${u.username}`, disabled: self },
            h('option', { value: 'viewer', text: 'Viewer', selected: u.role === 'viewer' }), h('option', { value: 'admin', text: 'Admin', selected: u.role === 'admin' }));
          role.addEventListener('change', async () => {
            const prevRole = u.role;
            const ok = await busy(role, async () => { await patch(`/api/users/${encodeURIComponent(u.username)}`, { role: role.value }); return true; });
            if (ok) { u.role = role.value; toast(`${u.username} is now ${role.value}`); } else role.value = prevRole;
          });
          return h('tr', { tid: `user-row-${u.username}` },
            h('td', null, h('strong', { text: u.username }), self ? h('span.muted', { text: ' (you)' }) : null, u.must_change_password ? h('span.tag.tag-warn', { text: 'must change password' }) : null),
            h('td', null, role),
            h('td', null, timeEl(u.created_at)),
            h('td.actions', null,
              h('button.btn.btn-sm', { type: 'button', text: 'Set password', onclick: (e) => setPassword(u, e.currentTarget) }),
              self ? null : h('button.btn.btn-sm.btn-danger', { type: 'button', tid: `delete-user-${u.username}`, text: 'Delete', onclick: (e) => removeUser(u, e.currentTarget) })));
        })))) : emptyState('No users.'));
    } catch (e) { if (!stopped) showError(e); }
  }
  async function setPassword(u, btn) {
    const v = await dialog({ title: `New password for ${u.username}`, confirmText: 'Set password', fields: [{ name: 'password', label: 'New password', type: 'password', required: true, attrs: { minlength: '10', autocomplete: 'new-password' }, hint: 'At least 10 characters.' }] });
    if (!v) return;
    if (v.password.length < 10) { showError('The password must be at least 10 characters long.'); return; }
    await busy(btn, async () => { await patch(`/api/users/${encodeURIComponent(u.username)}`, { password: v.password }); toast(`Password of ${u.username} changed`); load(); });
  }
  async function removeUser(u, btn) {
    if (!(await dialog({ title: `Delete user ${u.username}?`, message: 'They are signed out and can no longer log in.', confirmText: 'Delete user', danger: true }))) return;
    await busy(btn, async () => { await del(`/api/users/${encodeURIComponent(u.username)}`); toast(`User ${u.username} deleted`); load(); });
  }
  load();
  return () => { stopped = true; };
}

// ===========================================================================
// API tokens (admin)

export function tokensPage(root) {
  if (!isAdmin()) { root.replaceChildren(pageHeader('API tokens'), emptyState('Only admins can manage API tokens.')); return undefined; }
  const tname = field({ id: 'token-name', label: 'Name', required: true, attrs: { autocomplete: 'off', placeholder: 'e.g. grafana', maxlength: '128' } });
  const trole = field({ id: 'token-role', label: 'Role', value: 'viewer', options: [['viewer', 'Viewer (read only)'], ['admin', 'Admin']] });
  const addBtn = h('button.btn.btn-primary', { type: 'submit', tid: 'token-submit', text: 'Create token' });
  const created = h('div');
  const form = h('form.card.inline-form', { novalidate: true, 'aria-labelledby': 'add-token-title' },
    h('h2', { id: 'add-token-title', text: 'Create API token' }),
    h('p.muted', { text: 'Use it as Authorization: Bearer <token> with the REST API.' }),
    h('div.inline-fields', null, tname, trole, h('div.field.field-action', null, addBtn)));
  const box = h('div');
  root.replaceChildren(pageHeader('API tokens'), form, created, box);
  let stopped = false;

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearError();
    const name = tname.input.value.trim();
    if (!name) { showError('Give the token a name.'); tname.input.focus(); return; }
    await busy(addBtn, async () => {
      const t = await post('/api/tokens', { name, role: trole.input.value });
      tname.input.value = '';
      created.replaceChildren(h('section.card.created', { 'aria-labelledby': 'created-token-title' },
        h('h2', { id: 'created-token-title', tabindex: '-1', text: `Token “${t.name}” created` }),
        h('p.warning', { text: 'Copy it now: it is shown only once and stored only as a hash.' }),
        h('p', null, h('code.secret', { tid: 'created-api-token', text: t.token }), copyButton(t.token, 'Copy', 'copy-api-token'))));
      created.querySelector('h2').focus();
      load();
    });
  });
  async function load() {
    try {
      const r = await get('/api/tokens', { limit: 1000 });
      if (stopped) return;
      const items = r.items || [];
      box.replaceChildren(items.length ? h('div.table-wrap', null, h('table.table', { tid: 'tokens-table' },
        h('caption.sr-only', { text: 'API tokens' }),
        h('thead', null, h('tr', null, ['Name', 'Role', 'Created', 'Last used', h('span.sr-only', { text: 'Actions' })].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', null, items.map((t) => h('tr', { tid: `token-row-${t.id}` },
          h('td', null, h('strong', { text: t.name })), h('td', null, h('span.tag', { text: t.role })),
          h('td', null, timeEl(t.created_at)), h('td', null, timeEl(t.last_used, true)),
          h('td.actions', null, h('button.btn.btn-sm.btn-danger', { type: 'button', tid: `revoke-${t.id}`, text: 'Revoke', onclick: (e) => revoke(t, e.currentTarget) }))))))) : emptyState('No API tokens yet. Create one for scripts and integrations.'));
    } catch (e) { if (!stopped) showError(e); }
  }
  async function revoke(t, btn) {
    if (!(await dialog({ title: `Revoke “${t.name}”?`, message: 'Requests with this token fail at once.', confirmText: 'Revoke', danger: true }))) return;
    await busy(btn, async () => { await del(`/api/tokens/${encodeURIComponent(t.id)}`); toast(`Token “${t.name}” revoked`); load(); });
  }
  load();
  return () => { stopped = true; };
}

export { api };
