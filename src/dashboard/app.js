// fleetgate dashboard — entry module: session bootstrap, shell, hash router, live socket.

import { get, post, session, isAdmin, live, onUnauthorized, onPasswordRequired } from './api.js';
import {
  h, showError, clearError, toast,
  loginPage, passwordPage, overviewPage, devicesPage, addDevicePage, pendingPage,
  deviceDetailPage, eventsPage, attendancePage, peoplePage, webhooksPage, usersPage, tokensPage,
} from './pages.js';

const ROUTES = {
  login: { render: loginPage, title: 'Sign in', public: true },
  password: { render: passwordPage, title: 'Change password', nav: 'password' },
  overview: { render: overviewPage, title: 'Overview', nav: 'overview' },
  devices: { render: devicesPage, title: 'Devices', nav: 'devices' },
  device: { render: deviceDetailPage, title: 'Device', nav: 'devices' },
  add: { render: addDevicePage, title: 'Add device', nav: 'add' },
  pending: { render: pendingPage, title: 'Pending devices', nav: 'pending' },
  events: { render: eventsPage, title: 'Events', nav: 'events' },
  attendance: { render: attendancePage, title: 'Attendance', nav: 'attendance' },
  people: { render: peoplePage, title: 'People', nav: 'people' },
  users: { render: usersPage, title: 'Users', nav: 'users', admin: true },
  tokens: { render: tokensPage, title: 'API tokens', nav: 'tokens', admin: true },
  webhooks: { render: webhooksPage, title: 'Webhooks', nav: 'webhooks', admin: true },
};

const $ = (id) => document.getElementById(id);
let cleanup = null;
let checkedSession = false;
let afterLogin = null;
let flash = null; // an error to show once the next page has rendered

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, qs] = raw.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const query = new URLSearchParams(qs || '');
  if (!parts.length) return { name: 'overview', params: { query } };
  if (parts[0] === 'devices' && parts[1]) return { name: 'device', params: { id: parts[1], query } };
  return { name: ROUTES[parts[0]] ? parts[0] : 'notfound', params: { query } };
}

const ctx = {
  signedIn(me) {
    session.user = me;
    updateShell();
    if (me.must_change_password) {
      go('#/password');
    } else {
      live.start();
      const target = afterLogin && !/^#?\/?(login|password)?$/.test(afterLogin) ? afterLogin : '#/overview';
      afterLogin = null;
      go(target);
    }
  },
  passwordChanged() {
    updateShell();
    live.start();
    const target = afterLogin && !/^#?\/?(login|password)?$/.test(afterLogin) ? afterLogin : '#/overview';
    afterLogin = null;
    go(target);
  },
  setPending(n) {
    const el = $('pending-count');
    if (el) el.textContent = n ? String(n) : '';
  },
};

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function updateShell() {
  const u = session.user;
  const authed = !!u && !u.must_change_password;
  document.body.classList.toggle('auth-mode', !authed);
  document.body.classList.toggle('is-admin', isAdmin());
  document.body.classList.toggle('is-viewer', !!u && !isAdmin());
  $('user-info').replaceChildren(u ? h('span', null, h('strong', { text: u.username }), h('span.tag', { text: u.role })) : '');
}

function setActiveNav(navKey) {
  document.querySelectorAll('.nav-list a').forEach((a) => {
    if (a.dataset.route === navKey) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  });
}

function closeMenu() {
  document.body.classList.remove('nav-open');
  $('menu-toggle').setAttribute('aria-expanded', 'false');
  $('menu-toggle').setAttribute('aria-label', 'Open navigation');
}

async function ensureSession() {
  if (session.user || checkedSession) return session.user;
  checkedSession = true;
  try {
    session.user = await get('/api/me', undefined, { quiet401: true });
  } catch (e) {
    session.user = null;
    if (e.status !== 401) showError(e);
  }
  updateShell();
  if (session.user && !session.user.must_change_password) live.start();
  return session.user;
}

async function route() {
  const { name, params } = parseHash();
  const user = await ensureSession();
  let target = name;
  if (!user && !(ROUTES[name] && ROUTES[name].public)) {
    afterLogin = location.hash;
    target = 'login';
  } else if (user && user.must_change_password && name !== 'password') {
    target = 'password';
  } else if (user && name === 'login') {
    target = 'overview';
  }
  const wantHash = target === name ? null : `#/${target}`;
  if (wantHash && location.hash !== wantHash) {
    location.hash = wantHash; // triggers route() again
    return;
  }

  if (cleanup) { try { cleanup(); } catch (e) { console.error(e); } cleanup = null; }
  clearError();
  if (flash) { showError(flash); flash = null; }
  closeMenu();
  const page = $('page');
  const def = ROUTES[target];
  if (!def) {
    page.replaceChildren(h('div.page-header', null, h('h1', { tabindex: '-1', text: 'Page not found' })),
      h('div.empty', null, h('p', { text: 'There is no page at this address.' }), h('a.btn', { href: '#/overview', text: 'Go to the overview' })));
    document.title = 'Not found · fleetgate';
    setActiveNav(null);
    return;
  }
  if (def.admin && !isAdmin()) {
    page.replaceChildren(h('div.page-header', null, h('h1', { tabindex: '-1', text: def.title })),
      h('div.empty', null, h('p', { text: 'This page is for admins only.' })));
    setActiveNav(def.nav);
    return;
  }
  document.title = `${def.title} · fleetgate`;
  setActiveNav(def.nav);
  page.replaceChildren();
  try {
    const c = def.render(page, params, ctx);
    cleanup = typeof c === 'function' ? c : null;
  } catch (e) {
    console.error(e);
    showError(`This page failed to load: ${e.message}`);
  }
  if (target !== 'login' && target !== 'password') {
    const h1 = page.querySelector('h1');
    if (h1 && !page.contains(document.activeElement)) h1.focus({ preventScroll: true });
  }
}

function init() {
  $('menu-toggle').addEventListener('click', () => {
    const open = !document.body.classList.contains('nav-open');
    document.body.classList.toggle('nav-open', open);
    $('menu-toggle').setAttribute('aria-expanded', String(open));
    $('menu-toggle').setAttribute('aria-label', open ? 'Close navigation' : 'Open navigation');
    if (open) { const first = document.querySelector('.nav-list a'); if (first) first.focus(); }
  });
  $('nav-backdrop').addEventListener('click', closeMenu);
  // Clicking the link of the page you are on re-renders it (e.g. "Add device" again).
  document.querySelectorAll('.nav-list a, .brand').forEach((a) => a.addEventListener('click', (e) => {
    if (a.getAttribute('href') === location.hash) { e.preventDefault(); route(); }
  }));
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && document.body.classList.contains('nav-open')) { closeMenu(); $('menu-toggle').focus(); }
  });
  $('skip-link').addEventListener('click', () => {
    const h1 = document.querySelector('#page h1');
    (h1 || $('main')).focus();
  });
  $('logout').addEventListener('click', async () => {
    try { await post('/api/logout'); } catch { /* signed out anyway */ }
    live.stop();
    session.user = null;
    updateShell();
    go('#/login');
    toast('Signed out');
  });

  live.onState((s) => {
    const el = $('live-indicator');
    const label = { idle: 'Offline', connecting: 'Connecting…', live: 'Live', retrying: 'Reconnecting…' }[s] || s;
    el.textContent = label;
    el.className = `live-indicator live-${s}`;
  });

  onUnauthorized(() => {
    if (cleanup) { try { cleanup(); } catch { /* ignore */ } cleanup = null; }
    live.stop();
    updateShell();
    if (parseHash().name !== 'login') {
      afterLogin = location.hash;
      flash = 'Your session has ended. Please sign in again.';
      go('#/login');
    }
  });
  onPasswordRequired(() => {
    if (session.user) session.user.must_change_password = true;
    updateShell();
    go('#/password');
  });

  // The live view rests on this browser's session. When the server revokes it (logged out
  // elsewhere, password changed in another browser, user deleted), stop reconnecting and ask
  // /api/me: its 401 takes the usual way to the login page. When the user's role changes, show it.
  live.on('error', async (m) => {
    if (m.code !== 'credential_revoked') return;
    live.stop();
    try {
      session.user = await get('/api/me');
      updateShell();
      live.start();
    } catch { /* a 401 is handled by onUnauthorized */ }
  });
  live.on('role_changed', (m) => {
    if (!session.user) return;
    session.user.role = m.role;
    updateShell();
    route();
  });

  window.addEventListener('hashchange', route);
  route();
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
else init();
