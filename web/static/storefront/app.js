// app.js: the storefront. Hash routes: #/ (the sale list), #/login,
// #/register (register.js), #/items/{id}. The session is the HttpOnly cookie set by
// POST /api/login; the page only remembers the username to greet.
import { api, ApiError, sleep, parseTime } from './api.js';
import { messageFor, waitMessage } from './messages.js';
import { ServerClock, formatRemaining } from './clock.js';
import { powProgress } from './progress.js';
import { runPoW } from './pow.js';
import { waitingRoom } from './queue.js';
import { drawPanel } from './draw.js';
import { registerView } from './register.js';

const main = document.getElementById('main');
const statusEl = document.getElementById('status');
const nav = document.getElementById('account-nav');
const clock = new ServerClock();
let view = null; // AbortController of the current view

// ------------------------------------------------------------ helpers

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

let waitTimer = null;
// flash: a message said for the page being navigated to (survives one
// navigation); any other message is cleared when the page changes.
let flash = false;
function go(hash, text, kind = 'info', code = '') {
  say(text, kind, code);
  if (location.hash !== hash) { flash = true; location.hash = hash; }
}
// say shows a message in the aria-live status region. kind: info, error,
// wait, success. code: the API code behind it (data-code, for tests).
function say(text, kind = 'info', code = '') {
  clearInterval(waitTimer);
  statusEl.hidden = !text;
  statusEl.textContent = text;
  statusEl.dataset.kind = kind;
  statusEl.dataset.code = code;
}

// waitFor shows "… — retrying in N s" (counting down) and waits exactly
// Retry-After seconds.
async function waitFor(err, signal) {
  const secs = err.retryAfter;
  const until = performance.now() + secs * 1000;
  say(waitMessage(err, secs), 'wait', err.code);
  statusEl.dataset.retryAfter = String(secs);
  waitTimer = setInterval(() => {
    const left = Math.max(0, Math.ceil((until - performance.now()) / 1000));
    statusEl.textContent = waitMessage(err, left);
  }, 1000);
  try {
    await sleep(secs * 1000, signal);
  } finally {
    clearInterval(waitTimer);
  }
}

// retrying runs fn; on 429 or 503 it waits Retry-After and runs it again.
async function retrying(fn, signal, max = 30) {
  for (let i = 0; ; i++) {
    try {
      return await fn();
    } catch (e) {
      if (!(e instanceof ApiError) || !e.retryable || i >= max) throw e;
      await waitFor(e, signal);
    }
  }
}

// timed calls the API and feeds `now` of the answer to the server clock.
async function timed(path, signal) {
  const t0 = performance.now();
  const data = await api('GET', path, undefined, { signal });
  const t1 = performance.now();
  if (data && data.now) clock.sample(parseTime(data.now), t0, t1);
  return data;
}

const user = {
  get name() { return localStorage.getItem('seckill_user') || ''; },
  set name(v) { if (v) localStorage.setItem('seckill_user', v); else localStorage.removeItem('seckill_user'); renderNav(); },
};

function renderNav() {
  nav.replaceChildren();
  if (user.name) {
    nav.append(
      h('span', { id: 'signed-in', 'data-testid': 'signed-in' }, 'Signed in as ', h('strong', { text: user.name })),
      h('button', { type: 'button', class: 'secondary', id: 'logout', onclick: logout }, 'Log out'),
    );
  } else {
    nav.append(
      h('a', { href: '#/login', class: 'button secondary', id: 'nav-login' }, 'Log in'),
      h('a', { href: '#/register', class: 'button', id: 'nav-register' }, 'Register'),
    );
  }
}

async function logout() {
  try { await api('POST', '/api/logout'); } catch { /* the cookie goes anyway */ }
  user.name = '';
  go('#/', 'You are logged out.', 'info');
}

function money(cents) {
  return new Intl.NumberFormat(undefined, { style: 'currency', currency: 'EUR' }).format(cents / 100);
}

function when(ms) {
  return new Date(ms).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
}

// stateAt is the item's state at server time now (backend.State's order:
// upcoming, ended, sold_out, live).
function stateAt(item, now) {
  if (now < parseTime(item.starts_at)) return 'upcoming';
  if (now >= parseTime(item.ends_at)) return 'ended';
  if (item.stock_left <= 0 || item.state === 'sold_out') return 'sold_out';
  return 'live';
}

const STATE_LABEL = { upcoming: 'Coming soon', live: 'On sale now', sold_out: 'Sold out', ended: 'Sale ended' };

// ------------------------------------------------------------- router

function route() {
  const hash = location.hash || '#/';
  if (!hash.startsWith('#/')) return; // an in-page anchor (skip link)
  if (view) view.abort();
  view = new AbortController();
  const signal = view.signal;
  const parts = hash.slice(2).split('/');
  let run;
  if (parts[0] === '') run = listView;
  else if (parts[0] === 'login') run = loginView;
  else if (parts[0] === 'register') run = (s) => registerView(s, registerUI);
  else if (parts[0] === 'items' && /^\d+$/.test(parts[1] || '')) run = (s) => itemView(Number(parts[1]), s);
  else run = notFoundView;
  main.replaceChildren();
  delete main.dataset.state;
  if (flash) flash = false; else say('');
  run(signal).catch((e) => {
    if (e && e.name === 'AbortError') return;
    console.error(e);
    say(messageFor(e), 'error', e.code || '');
  });
}

function focusHeading() {
  const h1 = main.querySelector('h1');
  if (h1) { h1.tabIndex = -1; h1.focus({ preventScroll: true }); }
}

// --------------------------------------------------------------- views

async function notFoundView() {
  main.append(h('h1', { text: 'Page not found' }), h('p', {}, h('a', { href: '#/' }, 'Back to the sale')));
}

async function listView(signal) {
  document.title = 'Flash sale';
  const list = h('ul', { class: 'items', id: 'items', 'data-testid': 'items', 'aria-busy': 'true' });
  main.append(h('h1', { text: 'Today’s flash sales' }), list);
  focusHeading();
  for (;;) {
    const data = await retrying(() => timed('/api/items', signal), signal);
    const now = clock.now();
    list.replaceChildren(...data.items.map((it) => {
      const st = stateAt(it, now);
      return h('li', { 'data-item-id': it.id },
        h('a', { href: `#/items/${it.id}`, id: `item-link-${it.id}` },
          h('div', { class: 'card' },
            h('h2', { text: it.name }),
            h('p', { class: 'price', text: money(it.price_cents) }),
            h('p', {}, h('span', { class: 'badge', 'data-state': st, text: STATE_LABEL[st] || st })),
            h('p', { class: 'hint' }, st === 'upcoming' ? `Starts ${when(parseTime(it.starts_at))}` : `${it.stock_left} of ${it.stock} left`))));
    }));
    if (!data.items.length) list.append(h('li', { text: 'No sale right now. Come back soon!' }));
    list.setAttribute('aria-busy', 'false');
    await sleep(5000, signal);
  }
}

function field(id, label, attrs = {}, hint = '') {
  const err = h('p', { class: 'field-error', id: `${id}-error`, 'data-testid': `${id}-error`, hidden: true });
  const describedBy = [hint ? `${id}-hint` : '', `${id}-error`].filter(Boolean).join(' ');
  return h('div', {},
    h('label', { for: id, text: label }),
    h('input', { id, name: id, ...attrs, 'aria-describedby': describedBy }),
    hint ? h('p', { class: 'hint', id: `${id}-hint`, text: hint }) : null,
    err);
}

// fieldError shows (or, with '', clears) the error under one input.
function fieldError(id, text) {
  const input = document.getElementById(id);
  const err = document.getElementById(`${id}-error`);
  if (!input || !err) return;
  err.textContent = text;
  err.hidden = !text;
  if (text) input.setAttribute('aria-invalid', 'true'); else input.removeAttribute('aria-invalid');
}

// The registration page (register.js) draws with these helpers.
const registerUI = { h, field, fieldError, say, waitFor, go, setUser: (name) => { user.name = name; } };

async function loginView() {
  document.title = 'Log in — Flash sale';
  const prefill = sessionStorage.getItem('seckill_prefill') || '';
  const form = h('form', { id: 'login-form' },
    field('login-username', 'Username', { autocomplete: 'username', required: true, value: prefill }),
    field('login-password', 'Password', { type: 'password', autocomplete: 'current-password', required: true }),
    h('div', {}, h('button', { type: 'submit', id: 'login-submit' }, 'Log in')));
  main.append(h('h1', { text: 'Log in' }), form,
    h('p', {}, 'New here? ', h('a', { href: '#/register' }, 'Create an account')));
  (prefill ? form.elements['login-password'] : form.elements['login-username']).focus();
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const username = form.elements['login-username'].value.trim();
    const password = form.elements['login-password'].value;
    const btn = form.querySelector('button');
    btn.disabled = true;
    say('Logging in…');
    try {
      await retrying(() => api('POST', '/api/login', { username, password }));
      sessionStorage.removeItem('seckill_prefill');
      user.name = username;
      const back = sessionStorage.getItem('seckill_back');
      sessionStorage.removeItem('seckill_back');
      go(back || '#/', `Welcome, ${username}!`, 'success');
    } catch (e) {
      say(messageFor(e), 'error', e.code || '');
      btn.disabled = false;
    }
  });
}

// ---------------------------------------------------------- item page

async function itemView(id, signal) {
  document.title = 'Item — Flash sale';
  let item = null;
  let shown = ''; // state last rendered
  let busy = false;
  let bought = false; // this user holds an order (queued or confirmed)
  let maxLeft = Infinity; // after our own purchase: stock left is at most this
  let room = null; // the waiting room of a sale with allocation queue (queue.js)
  const queueBox = h('div', { id: 'queue', 'data-testid': 'queue', hidden: true });
  let draw = null; // the draw section of a draw item (draw.js)

  const title = h('h1', { id: 'item-name', text: 'Loading…' });
  const badge = h('span', { class: 'badge', id: 'item-state', 'data-testid': 'item-state' });
  const countdownLabel = h('p', { class: 'hint', id: 'countdown-label' });
  const countdown = h('p', { class: 'countdown', id: 'countdown', 'data-testid': 'countdown', role: 'timer', 'aria-labelledby': 'countdown-label' });
  const price = h('dd', { id: 'item-price' });
  const stock = h('dd', { id: 'stock', 'data-testid': 'stock' });
  const starts = h('dd', { id: 'item-starts' });
  const ends = h('dd', { id: 'item-ends' });
  const buyBtn = h('button', { type: 'button', class: 'big', id: 'buy-button', 'data-testid': 'buy', disabled: true }, 'Buy now');
  const challengeBox = h('div', { id: 'challenge', 'data-testid': 'challenge', hidden: true });
  const orderEl = h('p', { class: 'order', id: 'order-status', 'data-testid': 'order-status', 'aria-live': 'polite' });
  const loginHint = h('p', { id: 'login-hint', hidden: true }, h('a', { href: '#/login', onclick: () => sessionStorage.setItem('seckill_back', location.hash) }, 'Log in'), ' to buy.');

  main.append(
    h('p', {}, h('a', { href: '#/' }, '← All sales')),
    title,
    h('div', { class: 'card' },
      h('p', {}, badge),
      countdownLabel, countdown,
      h('dl', { class: 'facts' },
        h('dt', { text: 'Price' }), price,
        h('dt', { text: 'Stock' }), stock,
        h('dt', { text: 'Starts' }), starts,
        h('dt', { text: 'Ends' }), ends),
      buyBtn, loginHint),
    queueBox, challengeBox, orderEl);
  focusHeading();

  async function load() {
    const data = await retrying(() => timed(`/api/items/${id}`, signal), signal);
    item = data.item;
    title.textContent = item.name;
    document.title = `${item.name} — Flash sale`;
    price.textContent = money(item.price_cents);
    starts.textContent = when(parseTime(item.starts_at));
    ends.textContent = when(parseTime(item.ends_at));
    if (item.allocation === 'draw' && !draw) {
      draw = drawPanel(item, { h, say, retrying, clock, when, user, signal });
      challengeBox.before(draw.el);
    }
    tick();
  }

  // tick redraws the countdown from the server clock; the page turns live
  // by itself when the start passes.
  function tick() {
    if (!item) return;
    const now = clock.now();
    const st = stateAt(item, now);
    main.dataset.state = st;
    badge.dataset.state = st;
    badge.textContent = STATE_LABEL[st] || st;
    const left = Math.max(0, Math.min(item.stock_left, maxLeft));
    stock.textContent = `${left} of ${item.stock} left`;
    stock.dataset.left = String(left);
    if (st === 'upcoming') {
      const left = parseTime(item.starts_at) - now;
      countdownLabel.textContent = 'Starts in';
      countdown.textContent = formatRemaining(left);
      countdown.dataset.remainingMs = String(Math.round(left));
    } else if (st === 'live') {
      const left = parseTime(item.ends_at) - now;
      countdownLabel.textContent = 'Ends in';
      countdown.textContent = formatRemaining(left);
      countdown.dataset.remainingMs = String(Math.round(left));
    } else {
      countdownLabel.textContent = '';
      countdown.textContent = STATE_LABEL[st];
      countdown.dataset.remainingMs = '0';
    }
    if (st !== shown) {
      const was = shown;
      shown = st;
      if (was === 'upcoming' && st === 'live') {
        say('The sale is live!', 'success');
        load().catch(() => {}); // resync the clock and the stock
      }
      if (st === 'sold_out' && !busy && !bought) say(messageFor({ code: 'sold_out' }), 'error', 'sold_out');
    }
    buyBtn.disabled = busy || bought || st !== 'live' || (room !== null && !room.admitted()) || (draw !== null && !draw.canBuy());
    buyBtn.hidden = bought;
    loginHint.hidden = !!user.name || st !== 'live' || bought;
  }

  const ticker = setInterval(tick, 200);
  signal.addEventListener('abort', () => clearInterval(ticker));
  try {
    await load();
  } catch (e) {
    if (e.code !== 'unknown_item') throw e;
    clearInterval(ticker);
    main.dataset.state = 'unknown';
    title.textContent = 'Item not found';
    document.title = 'Item not found — Flash sale';
    main.replaceChildren(h('p', {}, h('a', { href: '#/' }, '← All sales')), title,
      h('p', { id: 'unknown-item', 'data-testid': 'unknown-item' }, `There is no item ${id} in this shop (or no longer). `, h('a', { href: '#/' }, 'See the sales on now.')));
    return;
  }
  if (item.allocation === 'queue') {
    // Joining a room with queue_challenge goes through the purchase's own
    // challenge step (solve, in the challenge box) and its waits (retrying).
    room = waitingRoom({
      id, item, box: queueBox, clock, signal, signedIn: () => !!user.name, onChange: tick,
      say, retrying, solve: (ch, failed) => solve(ch, failed, 'queue'), clearChallenge, current: () => item,
    });
  }
  // Ask for this user's order at once: after a reload the page shows the
  // order it holds (and no Buy button) instead of forgetting it.
  if (user.name) {
    (async () => {
      const st = await retrying(() => api('GET', `/api/items/${id}/order`, undefined, { signal }), signal);
      if (st && (st.status === 'queued' || st.status === 'confirmed')) {
        bought = true;
        tick();
        showOrder(st);
        if (st.status === 'queued') await followOrder();
      }
      main.dataset.orderChecked = 'true';
    })().catch((e) => {
      if (e && e.name === 'AbortError') return;
      if (e.code === 'unauthenticated') { user.name = ''; tick(); }
      main.dataset.orderChecked = 'true';
    });
  } else {
    main.dataset.orderChecked = 'true';
  }
  // the stock changes: refresh now and then (and resync the clock)
  (async () => {
    for (;;) {
      await sleep(busy ? 10000 : 4000, signal);
      await load().catch((e) => { if (e.name === 'AbortError') throw e; });
    }
  })().catch(() => {});

  buyBtn.addEventListener('click', () => buyFlow().catch((e) => {
    if (e && e.name === 'AbortError') return;
    console.error(e);
  }));

  // step calls the API, waiting out 429/503, and retrying a not_live that
  // comes from a clock a moment behind ours right at the start.
  async function step(fn) {
    for (let i = 0; ; i++) {
      try {
        return await retrying(fn, signal);
      } catch (e) {
        const sinceStart = clock.now() - parseTime(item.starts_at);
        if (e.code === 'not_live' && sinceStart > -1000 && sinceStart < 3000 && i < 8) {
          say('The sale is opening…', 'wait', 'not_live');
          await sleep(500, signal);
          continue;
        }
        throw e;
      }
    }
  }

  async function buyFlow() {
    if (busy) return;
    busy = true;
    tick();
    orderEl.textContent = '';
    delete orderEl.dataset.status;
    let failed = null; // the message of the last refused answer, kept up until the next challenge shows
    try {
      for (let attempt = 0; attempt < 5; attempt++) {
        if (!failed) say('Requesting a challenge…');
        const ch = await step(() => api('POST', `/api/items/${id}/challenge`, undefined, { signal }));
        const answer = await solve(ch, failed);
        failed = null;
        if (answer === null) continue; // "another image"
        say('Checking your answer…');
        let p;
        try {
          p = await step(() => api('POST', `/api/items/${id}/path`, { challenge_id: ch.challenge_id, answer }, { signal }));
        } catch (e) {
          // The old image and answer go at once; the message stays until
          // the new challenge replaces them.
          clearChallenge();
          if (e.code === 'challenge_failed') { failed = e; say(messageFor(e), 'error', e.code); continue; }
          throw e;
        }
        clearChallenge();
        say('Placing your order…');
        const before = item.stock_left;
        try {
          // a 429/503 leaves the path usable: the same path is retried
          await step(() => api('POST', `/api/items/${id}/buy/${p.path}`, undefined, { signal }));
        } catch (e) {
          if (e.code === 'bad_path') { say(messageFor(e), 'error', e.code); await sleep(1200, signal); continue; }
          throw e;
        }
        bought = true;
        maxLeft = Math.max(0, Math.min(before, maxLeft) - 1); // our unit, before the next catalogue refresh shows it
        tick();
        say('Order accepted: waiting for confirmation…', 'info', 'queued');
        orderEl.dataset.status = 'queued';
        orderEl.textContent = 'Order queued: waiting for confirmation…';
        await followOrder();
        load().catch(() => {});
        return;
      }
      say('Too many failed attempts. Please try again.', 'error', 'gave_up');
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      say(messageFor(e), 'error', e.code || '');
      if (e.code === 'already_bought') {
        // bought earlier (another tab, before a reload): show that order
        bought = true;
        followOrder().catch(() => {});
      }
      if (e.code === 'sold_out') item.stock_left = 0;
      if (e.code === 'not_admitted' && room) room.refresh();
      if (e.code === 'unauthenticated') { user.name = ''; loginHint.hidden = false; }
      if (e.code === 'sold_out' || e.code === 'not_live') load().catch(() => {});
    } finally {
      busy = false;
      clearChallenge();
      tick();
    }
  }

  // clearChallenge takes the challenge (and its answer) off the page; its
  // data- attributes stay for the tests.
  function clearChallenge() {
    challengeBox.hidden = true;
    challengeBox.replaceChildren();
  }

  // solve shows the challenge and resolves with the answer (null: the
  // shopper wants another captcha). failed: the refusal of the previous
  // answer, said until this one is answered. purpose: buy, or queue (the
  // challenge of joining the waiting room).
  function solve(ch, failed, purpose = 'buy') {
    challengeBox.replaceChildren();
    challengeBox.dataset.challengeId = ch.challenge_id;
    challengeBox.dataset.kind = ch.kind;
    challengeBox.dataset.purpose = purpose;
    delete challengeBox.dataset.answer;
    challengeBox.hidden = false;
    const lead = purpose === 'queue'
      ? h('p', { class: 'hint', id: 'challenge-purpose', 'data-testid': 'challenge-purpose', text: 'Joining the waiting room takes one check that you are not a bot.' })
      : null;
    if (ch.kind === 'captcha') return solveCaptcha(ch, failed, lead);
    return solvePoW(ch, failed, lead);
  }

  function solveCaptcha(ch, failed, lead) {
    return new Promise((resolve, reject) => {
      const input = h('input', { id: 'captcha-answer', name: 'captcha-answer', inputmode: 'numeric', autocomplete: 'off', required: true, 'aria-describedby': 'captcha-hint' });
      const form = h('form', { id: 'captcha-form', class: 'captcha' },
        h('img', { id: 'captcha-image', 'data-testid': 'captcha-image', src: ch.image, alt: 'A small arithmetic problem. If you cannot read it, ask for another image.' }),
        h('div', {}, h('label', { for: 'captcha-answer', text: 'Your answer' }), input,
          h('p', { class: 'hint', id: 'captcha-hint', text: 'Type the result of the calculation shown in the image (a whole number).' })),
        h('div', { class: 'row' },
          h('button', { type: 'submit', id: 'captcha-submit' }, 'Submit answer'),
          h('button', { type: 'button', class: 'secondary', id: 'captcha-new', onclick: () => resolve(null) }, 'Another image')));
      form.addEventListener('submit', (ev) => {
        ev.preventDefault();
        const v = input.value.trim();
        if (!v) { input.focus(); return; }
        resolve(v);
      });
      signal.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')), { once: true });
      challengeBox.append(h('h2', { text: 'Prove you are human' }), lead || '', form);
      if (failed) say(messageFor(failed), 'error', failed.code);
      else say('Solve the challenge to continue.', 'info', 'challenge');
      input.focus();
    });
  }

  // solvePoW runs the puzzle in the Web Worker (pow.js); the bar never
  // reaches the end before the answer is found (progress.js). A refused
  // answer's message stays while the new puzzle is solved.
  async function solvePoW(ch, failed, lead) {
    const difficulty = ch.difficulty || 0;
    if (difficulty <= 0) return '0';
    const expected = 2 ** difficulty;
    const STEPS = 1000;
    const progress = h('progress', { id: 'pow-progress', 'data-testid': 'pow-progress', max: String(STEPS), value: '0', 'aria-labelledby': 'pow-text' });
    const typical = `a puzzle of this size takes about ${expected.toLocaleString()} on average; some take longer`;
    const text = h('p', { id: 'pow-text', text: `Solving a puzzle in your browser: 0 hashes tried (${typical}).` });
    challengeBox.append(h('h2', { text: 'Checking your browser' }), lead || '', text, progress);
    if (failed) say(`${messageFor(failed)} Solving the new puzzle…`, 'error', failed.code);
    else say('Solving the puzzle…', 'info', 'pow');
    const { answer, tried } = await runPoW(ch, {
      signal,
      onProgress: (n) => {
        progress.dataset.tried = String(n);
        progress.value = powProgress(n, expected, STEPS);
        text.textContent = `Solving a puzzle in your browser: ${n.toLocaleString()} hashes tried (${typical}).`;
      },
    });
    progress.dataset.tried = String(tried);
    progress.value = STEPS;
    text.textContent = `Puzzle solved after ${tried.toLocaleString()} hashes.`;
    challengeBox.dataset.answer = answer;
    return answer;
  }

  // showOrder shows the user's order (queued, confirmed or failed).
  function showOrder(st) {
    orderEl.dataset.status = st.status;
    if (st.status === 'confirmed') orderEl.textContent = `You bought this item: order confirmed — order number ${st.order_id}.`;
    else if (st.status === 'queued') orderEl.textContent = 'You bought this item: order queued, waiting for confirmation…';
    else if (st.status === 'failed') orderEl.textContent = 'Your order could not be completed.';
  }

  // followOrder polls the order with exponential backoff (0.5 s doubling
  // to 8 s: well inside status-per-user, 2/s burst 10); a 429 or 503 waits
  // exactly Retry-After.
  async function followOrder() {
    let delay = 500;
    let nones = 0;
    for (;;) {
      await sleep(delay, signal);
      let st;
      try {
        st = await api('GET', `/api/items/${id}/order`, undefined, { signal });
      } catch (e) {
        if (e instanceof ApiError && e.retryable) { await waitFor(e, signal); say('Order accepted: waiting for confirmation…', 'info', 'queued'); continue; }
        if (e instanceof ApiError && e.network) { delay = Math.min(delay * 2, 8000); continue; }
        throw e;
      }
      delay = Math.min(delay * 2, 8000);
      if (st.status === 'confirmed') {
        showOrder(st);
        say(`Order confirmed! Your order number is ${st.order_id}.`, 'success', 'confirmed');
        load().catch(() => {});
        return;
      }
      if (st.status === 'failed') {
        bought = false;
        tick();
        showOrder(st);
        say('Sorry, your order failed: the unit was released. You were not charged.', 'error', 'failed');
        return;
      }
      orderEl.dataset.status = st.status;
      if (st.status === 'none' && ++nones > 5) {
        orderEl.textContent = '';
        say('We could not find your order. Please check again later.', 'error', 'none');
        return;
      }
      orderEl.textContent = 'Order queued: waiting for confirmation…';
    }
  }
}

// --------------------------------------------------------------- start

window.addEventListener('hashchange', route);
renderNav();
route();
