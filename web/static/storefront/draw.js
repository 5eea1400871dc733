// draw.js: the draw page of an item sold by draw (allocation "draw",
// docs/DRAW.md): enter while entries are open, then see entered, won (with
// the claim deadline), waitlisted or lost, and the published proof
// (commitment, entry-list hash, seed). The item page (app.js) adds it for
// draw items and lets the Buy button through only while canBuy().
import { api, sleep, parseTime } from './api.js';
import { messageFor } from './messages.js';
import { formatRemaining } from './clock.js';

const DRAW_LABEL = {
  upcoming: 'Entries open soon',
  open: 'Entries are open',
  closed: 'Entries closed: the draw is coming',
  drawn: 'The draw is made',
};

const ENTRY_TEXT = {
  none: 'You have not entered.',
  entered: 'You are in the draw. Good luck!',
  won: 'You won! Buy your unit before the deadline.',
  waitlisted: 'You are on the waitlist: if a winner does not buy, the unit is offered to you.',
  lost: 'You were not drawn this time.',
};

// drawPanel returns { el, canBuy } for item (from GET /api/items/{id}).
// deps: h (element builder), say (status line), retrying (waits out
// 429/503), clock (server clock), when (date format), user, signal.
export function drawPanel(item, deps) {
  const { h, say, retrying, clock, when, user, signal } = deps;
  const id = item.id;
  let draw = null;
  let entry = null;
  let busy = false;

  const state = h('p', {}, h('span', { class: 'badge', id: 'draw-state', 'data-testid': 'draw-state' }));
  const badge = state.firstChild;
  const opens = h('dd', { id: 'draw-opens' });
  const closes = h('dd', { id: 'draw-closes' });
  const drawAt = h('dd', { id: 'draw-at' });
  const entries = h('dd', { id: 'draw-entries', 'data-testid': 'draw-entries' });
  const mine = h('p', { class: 'entry', id: 'entry-state', 'data-testid': 'entry-state', 'aria-live': 'polite' });
  const claim = h('p', { class: 'countdown', id: 'claim-countdown', 'data-testid': 'claim-countdown', role: 'timer', hidden: true });
  const enterBtn = h('button', { type: 'button', class: 'big', id: 'enter-button', 'data-testid': 'enter', hidden: true }, 'Enter the draw');
  const loginHint = h('p', { id: 'draw-login-hint', hidden: true }, h('a', { href: '#/login', onclick: () => sessionStorage.setItem('seckill_back', location.hash) }, 'Log in'), ' to enter the draw.');
  const proof = h('dl', { class: 'facts proof', id: 'draw-proof', 'data-testid': 'draw-proof' });
  const el = h('section', { class: 'card draw', id: 'draw', 'data-testid': 'draw', 'aria-labelledby': 'draw-title' },
    h('h2', { id: 'draw-title', text: 'This sale is a draw' }),
    h('p', { class: 'hint', text: 'Speed does not matter: enter any time while entries are open. Winners are drawn from a seed fixed before entries opened; anybody can check the result.' }),
    state,
    h('dl', { class: 'facts' },
      h('dt', { text: 'Entries open' }), opens,
      h('dt', { text: 'Entries close' }), closes,
      h('dt', { text: 'Draw' }), drawAt,
      h('dt', { text: 'Entries' }), entries),
    mine, claim, enterBtn, loginHint,
    h('h3', { text: 'Proof' }), proof);

  function code(text) { return h('code', { class: 'hash', text }); }

  function render() {
    if (!draw) return;
    badge.textContent = DRAW_LABEL[draw.state] || draw.state;
    badge.dataset.state = draw.state === 'open' || draw.state === 'drawn' ? 'live' : 'upcoming';
    el.dataset.drawState = draw.state;
    opens.textContent = when(parseTime(draw.entries_open_at));
    closes.textContent = when(parseTime(draw.entries_close_at));
    drawAt.textContent = when(parseTime(draw.draw_at));
    entries.textContent = String(draw.entries);
    const st = entry ? entry.state : (user.name ? '' : 'none');
    mine.dataset.state = st;
    if (!user.name) mine.textContent = '';
    else if (st === 'won' && entry.claim_until) {
      mine.textContent = `${ENTRY_TEXT.won} (place ${entry.place}; buy before ${when(parseTime(entry.claim_until))})`;
    } else if (st === 'waitlisted') mine.textContent = `${ENTRY_TEXT.waitlisted} (place ${entry.place})`;
    else mine.textContent = ENTRY_TEXT[st] || '';
    if (entry && entry.entry_id) mine.title = `Your entry id: ${entry.entry_id}`;
    enterBtn.hidden = !user.name || draw.state !== 'open' || (entry && entry.state !== 'none');
    enterBtn.disabled = busy;
    loginHint.hidden = !!user.name || draw.state !== 'open';
    tick();
    const rows = [['Commitment (SHA-256 of the seed)', draw.commitment, 'proof-commitment']];
    if (draw.entries_hash) rows.push(['Entry-list hash', draw.entries_hash, 'proof-hash']);
    if (draw.seed) rows.push(['Seed', draw.seed, 'proof-seed']);
    if (entry && entry.entry_id) rows.push(['Your entry id', entry.entry_id, 'proof-entry']);
    proof.replaceChildren(...rows.flatMap(([k, v, tid]) => [h('dt', { text: k }), h('dd', { 'data-testid': tid }, code(v))]));
    if (draw.entries_hash) {
      proof.append(h('dt', { text: 'Entry list' }), h('dd', {}, h('a', { href: `/api/items/${id}/draw/entries`, id: 'entries-export', download: `draw-${id}-entries.json` }, 'Download (JSON)')));
    }
  }

  // tick redraws the claim countdown on the server clock.
  function tick() {
    const now = clock.now();
    if (entry && entry.state === 'won' && entry.claim_until) {
      const from = parseTime(entry.claim_from);
      const until = parseTime(entry.claim_until);
      claim.hidden = false;
      if (now < from) claim.textContent = `Your window opens in ${formatRemaining(from - now)}`;
      else if (now < until) claim.textContent = `Buy within ${formatRemaining(until - now)}`;
      else claim.textContent = 'Your window has closed.';
      claim.dataset.open = String(now >= from && now < until);
    } else {
      claim.hidden = true;
    }
  }

  async function load() {
    draw = await retrying(() => api('GET', `/api/items/${id}/draw`, undefined, { signal }), signal);
    if (user.name) {
      try {
        entry = await retrying(() => api('GET', `/api/items/${id}/entry`, undefined, { signal }), signal);
      } catch (e) {
        if (e.name === 'AbortError') throw e;
        if (e.code !== 'unauthenticated') throw e;
        user.name = '';
        entry = null;
      }
    }
    render();
    el.dataset.loaded = 'true';
  }

  enterBtn.addEventListener('click', async () => {
    if (busy) return;
    busy = true;
    render();
    say('Entering the draw…');
    try {
      entry = await retrying(() => api('POST', `/api/items/${id}/entry`, undefined, { signal }), signal);
      say('You are in the draw.', 'success');
    } catch (e) {
      if (e.name === 'AbortError') return;
      say(messageFor(e), 'error', e.code || '');
    } finally {
      busy = false;
      render();
    }
  });

  const ticker = setInterval(tick, 250);
  signal.addEventListener('abort', () => clearInterval(ticker));
  (async () => {
    for (;;) {
      await load().catch((e) => { if (e.name === 'AbortError') throw e; say(messageFor(e), 'error', e.code || ''); });
      await sleep(2000, signal);
    }
  })().catch(() => {});

  return {
    el,
    // canBuy: this account's place has an open claim window now.
    canBuy() {
      if (!entry || entry.state !== 'won' || !entry.claim_until) return false;
      const now = clock.now();
      return now >= parseTime(entry.claim_from) && now < parseTime(entry.claim_until);
    },
  };
}
