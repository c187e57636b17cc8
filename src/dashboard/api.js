// fleetgate dashboard — REST client and admin WebSocket client.
// The REST API is the one source of data; the socket only pushes live changes.

export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** The signed-in session: {username, role, must_change_password, csrf_token} or null. */
export const session = { user: null };

const listeners = { unauthorized: [], passwordRequired: [] };
export function onUnauthorized(fn) { listeners.unauthorized.push(fn); }
export function onPasswordRequired(fn) { listeners.passwordRequired.push(fn); }

const FRIENDLY = {
  invalid_credentials: 'Wrong username or password.',
  forbidden: 'Your account is read-only (viewer): this action needs an admin.',
  csrf_failed: 'Your session token is out of date. Reload the page and try again.',
  password_change_required: 'Please set a new password first.',
  not_found: 'Not found — it may have been deleted.',
};

function readableMessage(status, code, message, retryAfter) {
  if (code === 'too_many_attempts') {
    const s = retryAfter != null ? retryAfter : null;
    return s != null ? `Too many attempts, retry in ${s} s.` : 'Too many attempts, please wait and retry.';
  }
  if (code === 'forbidden') return message ? `Not allowed: ${message}` : FRIENDLY.forbidden;
  if (message) return message.charAt(0).toUpperCase() + message.slice(1) + (/[.!?]$/.test(message) ? '' : '.');
  if (FRIENDLY[code]) return FRIENDLY[code];
  if (status >= 500) return `The server had a problem (HTTP ${status}). Try again.`;
  return `Request failed (HTTP ${status}${code ? ', ' + code : ''}).`;
}

/**
 * fetch wrapper. Returns parsed JSON (or null for empty bodies); throws ApiError.
 * opts: {body, query, quiet401}
 */
export async function api(method, path, opts = {}) {
  let url = path;
  if (opts.query) {
    const qs = buildQuery(opts.query);
    if (qs) url += (url.includes('?') ? '&' : '?') + qs;
  }
  const headers = { Accept: 'application/json' };
  const init = { method, credentials: 'same-origin', headers };
  if (opts.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(opts.body);
  }
  if (method !== 'GET' && method !== 'HEAD' && session.user && session.user.csrf_token) {
    headers['X-CSRF-Token'] = session.user.csrf_token;
  }
  let res;
  try {
    res = await fetch(url, init);
  } catch (e) {
    throw new ApiError(0, 'network', 'Cannot reach the server. Check your connection and try again.');
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (res.ok) return data;

  const err = (data && data.error) || {};
  const ra = res.headers.get('Retry-After');
  const retryAfter = ra != null && ra !== '' && !isNaN(Number(ra)) ? Math.ceil(Number(ra)) : (err.retry_after ?? null);
  const e = new ApiError(res.status, err.code || '', readableMessage(res.status, err.code, err.message, retryAfter), retryAfter);
  if (res.status === 401 && !opts.quiet401) {
    session.user = null;
    listeners.unauthorized.forEach((fn) => fn(e));
  } else if (res.status === 403 && err.code === 'password_change_required') {
    listeners.passwordRequired.forEach((fn) => fn(e));
  }
  throw e;
}

export function buildQuery(obj) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined || v === null || v === '') continue;
    p.set(k, String(v));
  }
  return p.toString();
}

export const get = (path, query, opts = {}) => api('GET', path, { ...opts, query });
export const post = (path, body, opts = {}) => api('POST', path, { ...opts, body: body === undefined ? {} : body });
export const patch = (path, body) => api('PATCH', path, { body });
export const del = (path) => api('DELETE', path);

export const isAdmin = () => !!(session.user && session.user.role === 'admin');

// ---------------------------------------------------------------------------
// Admin WebSocket: {"type":"subscribe","role":"admin"} authenticated by the cookie.
// Pushes: device_status, telemetry, event, command_result. Reconnects with exponential backoff.

export class LiveSocket {
  constructor() {
    this.ws = null;
    this.handlers = new Map(); // type -> Set(fn)
    this.stateHandlers = new Set();
    this.state = 'idle'; // idle | connecting | live | retrying
    this.backoff = 1000;
    this.timer = null;
    this.stopped = true;
  }

  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(fn);
    return () => this.handlers.get(type).delete(fn);
  }

  onState(fn) {
    this.stateHandlers.add(fn);
    fn(this.state);
    return () => this.stateHandlers.delete(fn);
  }

  setState(s) {
    this.state = s;
    this.stateHandlers.forEach((fn) => fn(s));
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      try { ws.close(1000, 'logout'); } catch { /* ignore */ }
    }
    this.setState('idle');
  }

  connect() {
    if (this.stopped) return;
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let ws;
    try {
      ws = new WebSocket(`${proto}//${location.host}/ws`);
    } catch {
      this.retry();
      return;
    }
    this.ws = ws;
    this.setState('connecting');
    ws.onopen = () => ws.send(JSON.stringify({ type: 'subscribe', role: 'admin' }));
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      if (msg.type === 'subscribed') {
        this.backoff = 1000;
        this.setState('live');
      }
      const hs = this.handlers.get(msg.type);
      if (hs) hs.forEach((fn) => { try { fn(msg); } catch (e) { console.error(e); } });
      const all = this.handlers.get('*');
      if (all) all.forEach((fn) => { try { fn(msg); } catch (e) { console.error(e); } });
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.retry();
    };
    ws.onerror = () => { /* onclose follows */ };
  }

  retry() {
    if (this.stopped) return;
    this.setState('retrying');
    const delay = this.backoff + Math.floor(Math.random() * 400);
    this.backoff = Math.min(this.backoff * 2, 30000);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }
}

export const live = new LiveSocket();
