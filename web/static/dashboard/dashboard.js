// dashboard.js: the admin dashboard (admin listener, /dashboard/).
import { edgeCounters, rates } from './prom.js';
import { showQueue } from './queue.js';
import { showDraw } from './draw.js';

const $ = (id) => document.getElementById(id);
const statusEl = $('status');
const TOKEN_KEY = 'seckill_admin_token';
const HISTORY = 60; // samples (seconds) in the chart
const COLORS = ['#116329', '#a40e26', '#0b57d0', '#7d4e00', '#8250df', '#bf3989', '#1b7c83', '#953800', '#57606a', '#4d2d00'];

function say(text, kind = 'info') {
  statusEl.hidden = !text;
  statusEl.textContent = text;
  statusEl.dataset.kind = kind;
}

class AdminError extends Error {
  constructor(status, code, detail) { super(detail || code); this.status = status; this.code = code; }
}

async function admin(method, path, body) {
  const init = { method, cache: 'no-store', headers: { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) || ''}`, Accept: 'application/json' } };
  if (body !== undefined) { init.headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(body); }
  const res = await fetch(path, init);
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new AdminError(res.status, data?.code || `http_${res.status}`, data?.detail);
  return data;
}

function adminMessage(e) {
  switch (e.code) {
    case 'unauthenticated': return 'The admin token was refused. Enter it again.';
    case 'invalid': return `Not valid: ${e.message}`;
    case 'unknown_item': return 'There is no sale with that id.';
    case 'backend_unavailable': return 'The backend is unavailable; retrying.';
    case 'dependency_unavailable': return 'Redis is unavailable; retry shortly.';
    default: return `Error ${e.status || ''} ${e.code || ''}: ${e.message}`;
  }
}

// ---------------------------------------------------------- token

function showAdmin(on) {
  $('token-section').hidden = on;
  $('admin').hidden = !on;
  $('forget-token').hidden = !on;
}

$('token-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $('admin-token').value.trim());
  $('admin-token').value = '';
  if (await checkToken()) { say('Token accepted.', 'success'); $('create-name').focus(); pollSales(true); }
});

$('forget-token').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  watching = 0;
  showAdmin(false);
  say('Token forgotten.');
  $('admin-token').focus();
});

// checkToken asks for the stats of item 0: 400 with a good token, 401 without.
async function checkToken() {
  if (!sessionStorage.getItem(TOKEN_KEY)) { showAdmin(false); return false; }
  try {
    await admin('GET', '/admin/items/0/stats');
  } catch (e) {
    if (e.code === 'unauthenticated') {
      sessionStorage.removeItem(TOKEN_KEY);
      showAdmin(false);
      say(adminMessage(e), 'error');
      return false;
    }
  }
  showAdmin(true);
  return true;
}

// ---------------------------------------------------------- create

function localInput(d) {
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}
{
  const start = new Date(Date.now() + 60_000);
  $('create-starts').value = localInput(start);
  $('create-ends').value = localInput(new Date(start.getTime() + 3600_000));
}

$('create-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = ev.target.elements;
  const body = {
    name: f.name.value.trim(),
    price_cents: Number(f.price_cents.value),
    stock: Number(f.stock.value),
    starts_at: new Date(f.starts_at.value).toISOString(),
    ends_at: new Date(f.ends_at.value).toISOString(),
    challenge: f.challenge.value,
  };
  $('create-submit').disabled = true;
  try {
    const res = await admin('POST', '/admin/items', body);
    say(`Sale #${res.id} created.`, 'success');
    $('create-form').dataset.createdId = String(res.id);
    watch(res.id);
    pollSales(true);
  } catch (e) {
    say(adminMessage(e), 'error');
    if (e.code === 'unauthenticated') checkToken();
  } finally {
    $('create-submit').disabled = false;
  }
});

// ---------------------------------------------------------- live view

let watching = 0;

function watch(id) {
  watching = id;
  $('watch-id').value = String(id);
  $('live-item').textContent = String(id);
  $('live').hidden = false;
  $('live').dataset.item = String(id);
  history.replaceState(null, '', `#item=${id}`);
  pollStats();
}

$('watch-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const id = Number($('watch-id').value);
  if (id > 0) watch(id);
});

const STATS = { stock_left: 'stat-stock-left', stock_total: 'stat-stock-total', reserved: 'stat-reserved', orders: 'stat-orders', outbox_pending: 'stat-outbox-pending', failed: 'stat-failed' };
let statsBusy = false;

async function pollStats() {
  if (!watching || statsBusy || $('admin').hidden) return;
  statsBusy = true;
  const id = watching;
  try {
    const st = await admin('GET', `/admin/items/${id}/stats`);
    if (id !== watching) return;
    for (const [k, el] of Object.entries(STATS)) {
      $(el).textContent = String(st[k]);
      $(el).dataset.value = String(st[k]);
    }
    $('stats').dataset.item = String(st.item_id);
    showQueue(st.item_id, st.queue);
    $('stats-updated').textContent = `Updated ${new Date().toLocaleTimeString()}`;
    await showDraw(admin, id); // a draw sale's panel (draw.js)
    if (statusEl.dataset.kind === 'error') say('');
  } catch (e) {
    say(adminMessage(e), 'error');
    if (e.code === 'unauthenticated') checkToken();
  } finally {
    statsBusy = false;
  }
}

// ---------------------------------------------------------- sales

const STATE_LABEL = { upcoming: 'coming', live: 'live', sold_out: 'sold out', ended: 'ended' };
let salesAt = 0;

// pollSales lists every sale (GET /admin/items) every 5 s, with a Watch
// button each: no id to guess.
async function pollSales(force = false) {
  if ($('admin').hidden || (!force && performance.now() - salesAt < 5000)) return;
  salesAt = performance.now();
  let data;
  try {
    data = await admin('GET', '/admin/items');
  } catch (e) {
    if (e.code === 'unauthenticated') checkToken();
    return;
  }
  const items = [...data.items].sort((a, b) => b.id - a.id);
  $('sales-empty').hidden = items.length > 0;
  $('sales-table').tBodies[0].replaceChildren(...items.map((it) => {
    const tr = document.createElement('tr');
    tr.dataset.itemId = String(it.id);
    const cell = (text, cls) => { const td = document.createElement('td'); td.textContent = text; if (cls) td.className = cls; return td; };
    const btn = document.createElement('button');
    btn.type = 'button';
    btn.className = 'secondary';
    btn.id = `watch-${it.id}`;
    btn.textContent = 'Watch';
    btn.setAttribute('aria-label', `Watch sale ${it.id}, ${it.name}`);
    btn.addEventListener('click', () => { watch(it.id); $('live-title').scrollIntoView({ block: 'nearest' }); });
    const td = document.createElement('td');
    td.append(btn);
    tr.append(cell(String(it.id), 'num'), cell(it.name), cell(STATE_LABEL[it.state] || it.state),
      cell(`${it.stock_left} / ${it.stock}`, 'num'), cell(new Date(it.starts_at).toLocaleString()), cell(it.challenge), td);
    return tr;
  }));
  $('sales-table').dataset.count = String(items.length);
}

// ---------------------------------------------------------- rates

let prev = null; // {t, counters}
const samples = []; // [{t, rates}]
const colorOf = new Map();

function color(series) {
  if (!colorOf.has(series)) colorOf.set(series, series === 'accepted' ? COLORS[0] : COLORS[1 + ((colorOf.size) % (COLORS.length - 1))]);
  return colorOf.get(series);
}

async function pollMetrics() {
  if ($('admin').hidden) return;
  let text;
  try {
    const res = await fetch('/metrics', { cache: 'no-store' });
    if (!res.ok) return;
    text = await res.text();
  } catch { return; }
  const now = performance.now();
  const counters = edgeCounters(text);
  if (!('accepted' in counters)) counters.accepted = 0;
  if (prev) {
    samples.push({ t: now, rates: rates(prev.counters, counters, (now - prev.t) / 1000) });
    while (samples.length > HISTORY) samples.shift();
  }
  prev = { t: now, counters };
  drawChart();
  drawTable(counters);
}

function seriesNames() {
  const names = new Set(['accepted']);
  for (const h of samples) for (const k of Object.keys(h.rates)) names.add(k);
  if (prev) for (const k of Object.keys(prev.counters)) names.add(k);
  return ['accepted', ...[...names].filter((n) => n !== 'accepted').sort()];
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function niceMax(v) {
  if (v <= 1) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function drawChart() {
  const chart = $('rate-chart');
  const W = 720, H = 240, L = 48, R = 10, T = 10, B = 24;
  const title = chart.querySelector('title');
  chart.replaceChildren(title);
  const names = seriesNames();
  let max = 0;
  for (const h of samples) for (const v of Object.values(h.rates)) max = Math.max(max, v);
  max = niceMax(max);
  const x = (i) => L + (W - L - R) * (i / (HISTORY - 1));
  const y = (v) => T + (H - T - B) * (1 - v / max);
  for (let k = 0; k <= 4; k++) {
    const v = (max * k) / 4;
    chart.append(svg('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: '#d0d7de', 'stroke-width': 1 }));
    chart.append(svg('text', { x: L - 6, y: y(v) + 4, 'text-anchor': 'end' }, v >= 10 ? v.toFixed(0) : String(Math.round(v * 100) / 100)));
  }
  chart.append(svg('text', { x: L, y: H - 6 }, `−${HISTORY} s`));
  chart.append(svg('text', { x: W - R, y: H - 6, 'text-anchor': 'end' }, 'now'));
  const offset = HISTORY - samples.length;
  for (const name of names) {
    if (!samples.length) break;
    const pts = samples.map((h, i) => `${x(offset + i).toFixed(1)},${y(h.rates[name] || 0).toFixed(1)}`).join(' ');
    chart.append(svg('polyline', { points: pts, fill: 'none', stroke: color(name), 'stroke-width': name === 'accepted' ? 2.5 : 1.75, 'data-series': name }));
  }
  const legend = $('rate-legend');
  legend.replaceChildren(...names.map((n) => {
    const li = document.createElement('li');
    li.style.setProperty('--swatch', color(n));
    li.textContent = n === 'accepted' ? 'accepted purchases' : `rejected: ${n}`;
    return li;
  }));
}

function drawTable(counters) {
  const last = samples.length ? samples[samples.length - 1].rates : {};
  const body = $('rates-table').tBodies[0];
  body.replaceChildren(...seriesNames().map((n) => {
    const tr = document.createElement('tr');
    tr.dataset.series = n;
    const th = document.createElement('th');
    th.scope = 'row';
    th.textContent = n === 'accepted' ? 'accepted purchases' : `rejected: ${n}`;
    const rate = document.createElement('td');
    rate.className = 'num';
    rate.dataset.rate = String(last[n] || 0);
    rate.textContent = (last[n] || 0).toFixed(1);
    const total = document.createElement('td');
    total.className = 'num';
    total.dataset.total = String(counters[n] || 0);
    total.textContent = String(counters[n] || 0);
    tr.append(th, rate, total);
    return tr;
  }));
}

// ---------------------------------------------------------- start

async function loop() {
  for (;;) {
    const t = performance.now();
    await Promise.all([pollStats(), pollMetrics(), pollSales()]);
    await new Promise((r) => setTimeout(r, Math.max(0, 1000 - (performance.now() - t))));
  }
}

(async () => {
  if (await checkToken()) {
    const m = /item=(\d+)/.exec(location.hash);
    if (m) watch(Number(m[1]));
  } else {
    $('admin-token').focus();
  }
  loop();
})();
