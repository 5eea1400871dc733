// queue.js: the waiting room of a sale with allocation "queue" (docs/API.md
// "Waiting room"). It joins the queue, polls it every poll_after seconds
// and shows the place in line, the estimated wait, a progress bar and what
// happens next; once admitted, the buy button of the item page works (the
// admission pass travels as an HttpOnly cookie the edge sets).
//
// Joining a room with queue_challenge first takes a challenge (POST
// /api/items/{id}/queue/challenge), solved by the item page's own challenge
// step (the proof of work in the Web Worker, or the captcha shown to the
// shopper), then POST /api/items/{id}/queue {challenge_id, answer}. A
// refused answer (challenge_failed) gets a new challenge at once, saying
// why; 429 and 503 are waited out (Retry-After) and the same answer is sent
// again; a join whose answer was lost on the way is sent again as it was
// (the server keeps the ticket of a join that reached it); not_eligible,
// sold_out and not_live are said in the room.
import { api, ApiError, sleep, parseTime } from './api.js';
import { messageFor } from './messages.js';
import { formatRemaining } from './clock.js';

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) e.append(c);
  return e;
}

function minutes(secs) {
  if (secs < 60) return 'less than a minute';
  const m = Math.round(secs / 60);
  if (m < 90) return `about ${m} minute${m === 1 ? '' : 's'}`;
  return `about ${Math.round(m / 60)} hours`;
}

// JOIN_ATTEMPTS bounds the challenges one press of "Join" goes through
// (as the purchase's five).
const JOIN_ATTEMPTS = 5;
// LOST_REPLIES bounds the resends of a join whose answer did not arrive.
const LOST_REPLIES = 3;

// waitingRoom mounts the room in box and keeps it current until signal
// aborts. clock is the page's server clock; signedIn tells whether a
// session is there; onChange is called whenever the admission changes.
// The item page's helpers: say (the status line), retrying (waits out 429
// and 503), solve(challenge, failed) (its challenge step: resolves with
// the answer, or null for another captcha) and clearChallenge; current()
// is the page's latest copy of the item (stock left).
// It returns { admitted(), refresh() }.
export function waitingRoom({ id, item, box, clock, signal, signedIn, onChange, say, retrying, solve, clearChallenge, current = () => item }) {
  let ticket = null; // the last answer of the queue routes
  let first = 0; // the first position seen: the progress bar's start
  let wake = null; // ends the current wait early (refresh)
  let joining = false; // a join (and its challenge) is under way
  let joins = 0; // successful joins: a poll sent before one is stale
  let refusal = null; // why the last join was refused: {text, code}

  const heading = el('h2', { id: 'queue-title', text: 'Waiting room' });
  const stateEl = el('p', { class: 'queue-state', id: 'queue-state', 'data-testid': 'queue-state', 'aria-live': 'polite' });
  const position = el('p', { class: 'queue-position', id: 'queue-position', 'data-testid': 'queue-position' });
  const eta = el('p', { class: 'hint', id: 'queue-eta', 'data-testid': 'queue-eta' });
  const bar = el('progress', { id: 'queue-progress', 'data-testid': 'queue-progress', max: '100', value: '0', 'aria-labelledby': 'queue-title' });
  const next = el('p', { class: 'hint', id: 'queue-next', 'data-testid': 'queue-next' });
  const join = el('button', { type: 'button', class: 'big', id: 'queue-join', 'data-testid': 'queue-join', hidden: true }, 'Join the waiting room');
  box.replaceChildren(heading, stateEl, position, bar, eta, join, next);
  box.hidden = false;
  box.classList.add('card', 'queue');

  const session = item.session_duration ? parseDuration(item.session_duration) : 600;
  const opens = parseTime(item.queue_opens_at || item.starts_at);

  function render() {
    const st = ticket ? ticket.state : 'none';
    box.dataset.state = st;
    const now = clock.now();
    // closed: no join can succeed (the server refuses it): the sale is
    // over, or no unit is left by the page's latest copy of the item.
    const it = current();
    const closed = now >= parseTime(it.ends_at) ? 'ended' : it.stock_left <= 0 || it.state === 'sold_out' ? 'sold_out' : '';
    position.hidden = bar.hidden = eta.hidden = st !== 'waiting';
    join.hidden = !(signedIn() && (st === 'none' || st === 'expired') && (joining || !closed));
    join.textContent = joining ? 'Joining…' : st === 'expired' ? 'Join again' : 'Join the waiting room';
    join.disabled = joining || now < opens;
    delete stateEl.dataset.code;
    if (!signedIn()) {
      stateEl.textContent = 'Log in to join the waiting room.';
      next.textContent = '';
      return;
    }
    if ((st === 'none' || st === 'expired') && (joining || refusal)) {
      stateEl.textContent = joining
        ? (item.queue_challenge ? 'Joining the waiting room: one check that you are not a bot first…' : 'Joining the waiting room…')
        : refusal.text;
      if (!joining) stateEl.dataset.code = refusal.code;
      next.textContent = '';
      return;
    }
    if ((st === 'none' || st === 'expired') && closed) {
      stateEl.textContent = closed === 'ended' ? 'The sale is over: the waiting room is closed.' : 'Sold out: no unit is left, so the waiting room takes no one.';
      stateEl.dataset.code = closed === 'ended' ? 'not_live' : 'sold_out';
      next.textContent = '';
      return;
    }
    switch (st) {
      case 'none':
        stateEl.textContent = now < opens
          ? `The waiting room opens in ${formatRemaining(opens - now)}.`
          : 'Join the waiting room to get your place in line.';
        next.textContent = now < parseTime(item.starts_at)
          ? 'Everyone who joins before the sale starts gets a random place: there is no need to hurry.'
          : 'Places are given in order of arrival.';
        break;
      case 'waiting': {
        stateEl.textContent = 'You are in the queue.';
        position.textContent = ticket.position === 1 ? 'You are next in line.' : `You are number ${ticket.position} in line.`;
        position.dataset.position = String(ticket.position);
        first = Math.max(first, ticket.position);
        const done = first > 1 ? Math.round(100 * (first - ticket.position) / (first - 1)) : 100;
        bar.value = done;
        bar.dataset.value = String(done);
        eta.textContent = `${ticket.waiting} waiting · estimated wait ${minutes(ticket.eta_seconds)}.`;
        next.textContent = `When it is your turn, this page says so and you have ${formatRemaining(session * 1000)} to buy. ` +
          'Keep this page open: a place that is not checked for a few minutes is given up.';
        break;
      }
      case 'admitted': {
        const left = parseTime(ticket.admitted_until) - now;
        stateEl.textContent = 'It is your turn! You may buy now.';
        next.textContent = `Your turn ends in ${formatRemaining(left)}.`;
        next.dataset.remainingMs = String(Math.round(left));
        break;
      }
      case 'expired':
        stateEl.textContent = 'Your turn has passed, or your place was given up.';
        next.textContent = 'Join again to queue at the end of the line.';
        break;
      case 'sold_out':
        stateEl.textContent = 'Sold out: no unit is left.';
        next.textContent = 'Your place is kept in case a unit comes back.';
        break;
      case 'bought':
        stateEl.textContent = 'You hold a unit of this sale.';
        next.textContent = '';
        break;
    }
  }

  function set(t) {
    const was = ticket && ticket.state;
    ticket = t;
    render();
    if (was !== (t && t.state)) onChange();
  }

  async function call(method) {
    for (;;) {
      try {
        return await api(method, `/api/items/${id}/queue`, undefined, { signal });
      } catch (e) {
        if (!(e instanceof ApiError) || !e.retryable) throw e;
        stateEl.textContent = messageFor(e);
        await sleep(e.retryAfter * 1000, signal);
      }
    }
  }

  async function poll() {
    for (;;) {
      if (signedIn()) {
        const seen = joins;
        try {
          const t = await call('GET');
          if (seen === joins) set(t);
        } catch (e) {
          if (e.name === 'AbortError') throw e;
          if (e.code === 'not_found') { if (seen === joins) set(null); } else stateEl.textContent = messageFor(e);
        }
      }
      const secs = ticket && ticket.poll_after > 0 ? ticket.poll_after : 5;
      await new Promise((resolve, reject) => {
        wake = resolve;
        sleep(secs * 1000, signal).then(resolve, reject);
      });
    }
  }

  // send posts the join, waiting out 429 and 503 (the same answer again:
  // a refused request did not spend it) and resending it after a lost
  // answer (1 s, 2 s, 4 s later): a join that reached the server answers
  // the same ticket without a second challenge.
  async function send(body) {
    for (let lost = 0; ; lost++) {
      try {
        return await retrying(() => api('POST', `/api/items/${id}/queue`, body, { signal }), signal);
      } catch (e) {
        if (!(e instanceof ApiError) || !e.network || lost >= LOST_REPLIES) throw e;
        say('No answer from the shop: sending the join again…', 'wait', 'network');
        await sleep(1000 * 2 ** lost, signal);
      }
    }
  }

  // joinFlow joins, through the challenge when the sale takes one, and
  // resolves with the ticket.
  async function joinFlow() {
    if (!item.queue_challenge) {
      say('Joining the waiting room…');
      return send(undefined);
    }
    let failed = null; // the refusal of the last answer, said until the next challenge is answered
    try {
      for (let attempt = 0; attempt < JOIN_ATTEMPTS; attempt++) {
        if (!failed) say('Requesting a challenge…');
        const ch = await retrying(() => api('POST', `/api/items/${id}/queue/challenge`, undefined, { signal }), signal);
        const answer = await solve(ch, failed);
        failed = null;
        if (answer === null) continue; // another image
        say('Checking your answer…');
        try {
          return await send({ challenge_id: ch.challenge_id, answer });
        } catch (e) {
          clearChallenge(); // the refused image and answer go at once
          if (e.code !== 'challenge_failed') throw e;
          failed = e;
          say(messageFor(e), 'error', e.code);
        }
      }
    } finally {
      clearChallenge();
    }
    const e = new Error('too many failed attempts');
    e.code = 'gave_up';
    throw e;
  }

  join.addEventListener('click', async () => {
    if (joining) return;
    joining = true;
    refusal = null;
    render();
    try {
      const t = await joinFlow();
      joins++;
      joining = false;
      set(t);
      say(t.state === 'admitted' ? 'You joined the waiting room, and it is your turn.' : 'You joined the waiting room.', 'success', 'queue_joined');
    } catch (e) {
      if (e.name === 'AbortError') return;
      const text = e.code === 'gave_up' ? 'Too many failed attempts. Please try again.' : messageFor(e);
      refusal = { text, code: e.code || '' };
      say(text, 'error', refusal.code);
    } finally {
      joining = false;
      render();
    }
  });

  const ticker = setInterval(() => { if (!ticket || ticket.state === 'admitted' || ticket.state === 'none') render(); }, 500);
  signal.addEventListener('abort', () => clearInterval(ticker));
  render();
  poll().catch(() => {});

  return {
    admitted: () => !!ticket && ticket.state === 'admitted' && parseTime(ticket.admitted_until) > clock.now(),
    refresh: () => { if (wake) wake(); },
  };
}

// parseDuration reads Go's duration text ("10m0s", "1h30m", "90s") as seconds.
function parseDuration(s) {
  if (typeof s === 'number') return s;
  let total = 0;
  for (const [, n, unit] of String(s).matchAll(/([\d.]+)(h|ms|m|s)/g)) {
    total += Number(n) * ({ h: 3600, m: 60, s: 1, ms: 0.001 }[unit]);
  }
  return total || 600;
}
