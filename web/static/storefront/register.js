// register.js: the registration page (#/register). An account costs a
// solved challenge (docs/API.md, "Registration"): on "Create account" the
// page asks the edge for one (POST /api/register/challenge), then either
// solves its proof of work in the Web Worker of pow-worker.js (a progress
// bar and a Cancel button meanwhile) or shows its captcha with a box for
// the answer, sends POST /api/register {username, password, challenge_id,
// answer}, and logs the new account in.
//
// A refused challenge (400 challenge_failed: wrong, expired or already
// used) is replaced by a new one at once, saying why. A 429 or 503 with a
// short Retry-After is waited out (counting down) and the page starts again
// with a new challenge; a long one (the per-network account budget: hours)
// is not waited for: the page says when to come back.
import { api, ApiError } from './api.js';
import { messageFor } from './messages.js';
import { powProgress } from './progress.js';
import { runPoW } from './pow.js';

const USERNAME_RE = /^[A-Za-z0-9_.-]{3,32}$/;
const utf8Length = (s) => new TextEncoder().encode(s).length;

// LONGEST_WAIT is the longest Retry-After (seconds) the page waits out by
// itself; past it, it says when to come back instead.
const LONGEST_WAIT = 60;
// ATTEMPTS bounds the challenges one press of "Create account" goes
// through (refused answers and waits; "another image" does not count).
const ATTEMPTS = 5;

// registerProblems checks the form as the server will, in words.
export function registerProblems(username, password) {
  const p = {};
  if (!username) p['register-username'] = 'Choose a username.';
  else if (username.length < 3) p['register-username'] = 'Your username is too short: use at least 3 characters.';
  else if (username.length > 32) p['register-username'] = 'Your username is too long: use at most 32 characters.';
  else if (!USERNAME_RE.test(username)) p['register-username'] = 'Use only letters, digits, “_”, “.” and “-” in your username.';
  if (!password) p['register-password'] = 'Choose a password.';
  else if (password.length < 8) p['register-password'] = `Your password is too short: use at least 8 characters (${password.length} so far).`;
  else if (utf8Length(password) > 72) p['register-password'] = 'Your password is too long: use at most 72 characters (fewer with accents or emoji).';
  return p;
}

// formatWait says a number of seconds in words, each number kept with
// its unit (a no-break space): "45 s", "12 min", "5 h 3 min", "2 days 1 h".
export function formatWait(secs) {
  const s = Math.max(0, Math.ceil(secs));
  const u = (n, unit) => `${n}\u00a0${unit}`;
  if (s < 60) return u(s, 's');
  const min = Math.ceil(s / 60);
  if (min < 60) return u(min, 'min');
  const h = Math.floor(min / 60), m = min % 60;
  if (h < 24) return m ? `${u(h, 'h')} ${u(m, 'min')}` : u(h, 'h');
  const d = Math.floor(h / 24), hh = h % 24;
  return `${u(d, d > 1 ? 'days' : 'day')}${hh ? ` ${u(hh, 'h')}` : ''}`;
}

// budgetMessage is said for a 429 not worth waiting for in the page.
export function budgetMessage(secs, now = Date.now()) {
  const at = new Date(now + secs * 1000);
  const sameDay = at.toDateString() === new Date(now).toDateString();
  const time = at.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
  const when = sameDay ? `at ${time}` : `on ${at.toLocaleDateString(undefined, { weekday: 'long', day: 'numeric', month: 'long' })} at ${time}`;
  return `Too many accounts have been created from your network recently. You can create one again in ${formatWait(secs)} (${when}).`;
}

// registerView draws the page. ui holds app.js's helpers: h, field,
// fieldError, say, waitFor, go and setUser.
export async function registerView(signal, ui) {
  const { h, field, fieldError, say } = ui;
  document.title = 'Register — Flash sale';
  const submitBtn = h('button', { type: 'submit', id: 'register-submit' }, 'Create account');
  const form = h('form', { id: 'register-form', novalidate: true },
    field('register-username', 'Username', { autocomplete: 'username', required: true, minlength: 3, maxlength: 32, pattern: '[A-Za-z0-9_.\\-]{3,32}' },
      '3 to 32 letters, digits, “_”, “.” or “-”.'),
    field('register-password', 'Password', { type: 'password', autocomplete: 'new-password', required: true, minlength: 8 },
      '8 to 72 characters.'),
    h('p', { class: 'hint', id: 'register-check-hint' },
      'To keep bots from making accounts, your browser solves a small puzzle when you create the account (a second or two), or you answer a short sum.'),
    h('div', {}, submitBtn));
  // The challenge of the attempt in progress: data-kind, data-challenge-id
  // and, once solved, data-answer.
  const box = h('section', { id: 'register-challenge', 'data-testid': 'register-challenge', 'aria-labelledby': 'register-challenge-title', hidden: true });
  main().append(h('h1', { text: 'Create an account' }), form, box,
    h('p', {}, 'Already registered? ', h('a', { href: '#/login' }, 'Log in')));
  focusHeading();

  const inputs = () => [form.elements['register-username'], form.elements['register-password']];
  const show = (problems) => {
    for (const id of ['register-username', 'register-password']) fieldError(id, problems[id] || '');
    const first = Object.keys(problems)[0];
    if (first) document.getElementById(first).focus();
  };
  let attempt = null; // AbortController of the attempt in progress (Cancel)

  function clearBox() {
    box.hidden = true;
    box.replaceChildren();
    delete box.dataset.kind;
    delete box.dataset.challengeId;
    delete box.dataset.answer;
  }

  function cancelButton() {
    return h('button', { type: 'button', class: 'secondary', id: 'register-cancel', onclick: () => { if (attempt) attempt.abort(); } }, 'Cancel');
  }

  // solvePoW shows the puzzle's progress and resolves with its answer.
  async function solvePoW(ch, why, sig) {
    const difficulty = Number(ch.difficulty) || 0;
    const expected = 2 ** difficulty;
    const STEPS = 1000;
    const typical = `a puzzle of this size takes about ${expected.toLocaleString()} on average; some take longer`;
    const text = h('p', { id: 'register-pow-text', text: `Solving a puzzle in your browser: 0 hashes tried (${typical}).` });
    const progress = h('progress', { id: 'register-pow-progress', 'data-testid': 'register-pow-progress', max: String(STEPS), value: '0', 'aria-labelledby': 'register-pow-text' });
    const cancel = cancelButton();
    box.append(h('h2', { id: 'register-challenge-title', text: 'Checking your browser' }), text, progress, h('div', { class: 'row' }, cancel));
    box.hidden = false;
    cancel.focus();
    say(why || 'Checking your browser: solving a small puzzle…', why ? 'error' : 'info', why ? 'challenge_failed' : 'pow');
    const { answer, tried } = await runPoW(ch, {
      signal: sig,
      onProgress: (n) => {
        progress.value = powProgress(n, expected, STEPS);
        progress.dataset.tried = String(n);
        text.textContent = `Solving a puzzle in your browser: ${n.toLocaleString()} hashes tried (${typical}).`;
      },
    });
    progress.value = STEPS;
    progress.dataset.tried = String(tried);
    text.textContent = `Puzzle solved after ${tried.toLocaleString()} hashes.`;
    box.dataset.answer = answer;
    return answer;
  }

  // solveCaptcha shows the image and resolves with the typed answer, or
  // null when the shopper asks for another image.
  function solveCaptcha(ch, why, sig) {
    return new Promise((resolve, reject) => {
      const input = h('input', { id: 'register-captcha-answer', name: 'register-captcha-answer', inputmode: 'numeric', autocomplete: 'off', required: true, 'aria-describedby': 'register-captcha-hint' });
      const cform = h('form', { id: 'register-captcha-form', class: 'captcha' },
        h('img', { id: 'register-captcha-image', 'data-testid': 'register-captcha-image', src: ch.image, alt: 'A small arithmetic problem. If you cannot read it, ask for another image.' }),
        h('div', {}, h('label', { for: 'register-captcha-answer', text: 'Your answer' }), input,
          h('p', { class: 'hint', id: 'register-captcha-hint', text: 'Type the result of the calculation shown in the image (a whole number).' })),
        h('div', { class: 'row' },
          h('button', { type: 'submit', id: 'register-captcha-submit' }, 'Create account'),
          h('button', { type: 'button', class: 'secondary', id: 'register-captcha-new', onclick: () => resolve(null) }, 'Another image'),
          cancelButton()));
      cform.addEventListener('submit', (ev) => {
        ev.preventDefault();
        const v = input.value.trim();
        if (!v) { input.focus(); return; }
        resolve(v);
      });
      sig.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')), { once: true });
      box.append(h('h2', { id: 'register-challenge-title', text: 'Prove you are human' }), cform);
      box.hidden = false;
      say(why || 'One more step: type the result of the sum in the image.', why ? 'error' : 'info', why ? 'challenge_failed' : 'challenge');
      input.focus();
    });
  }

  // tooLong: a 429 the page does not wait out (the account budget).
  const tooLong = (e) => e instanceof ApiError && e.status === 429 && e.retryAfter > LONGEST_WAIT;

  // create goes through challenges until the account exists; it throws
  // the error that ends the attempt.
  async function create(username, password, sig) {
    let why = '';
    for (let tries = 0, shown = 0; tries < ATTEMPTS && shown < 50; shown++) {
      clearBox();
      if (!why) say('Preparing a check that you are not a bot…');
      let ch;
      try {
        ch = await api('POST', '/api/register/challenge', undefined, { signal: sig });
      } catch (e) {
        if (!(e instanceof ApiError) || !e.retryable || tooLong(e)) throw e;
        tries++;
        await ui.waitFor(e, sig);
        continue;
      }
      box.dataset.kind = ch.kind;
      box.dataset.challengeId = ch.challenge_id;
      const answer = ch.kind === 'captcha' ? await solveCaptcha(ch, why, sig) : await solvePoW(ch, why, sig);
      why = '';
      if (answer === null) continue; // another image
      say('Creating your account…');
      try {
        return await api('POST', '/api/register', { username, password, challenge_id: ch.challenge_id, answer }, { signal: sig });
      } catch (e) {
        tries++;
        if (e.code === 'challenge_failed') {
          why = ch.kind === 'captcha'
            ? 'That answer was not accepted (wrong, expired or already used). Here is a new image.'
            : 'The check was not accepted (it expired or was already used). Solving a new one…';
          continue;
        }
        if (!(e instanceof ApiError) || !e.retryable || tooLong(e)) throw e;
        clearBox();
        await ui.waitFor(e, sig); // then a new challenge: the old one may be spent
      }
    }
    throw Object.assign(new Error('too many attempts'), { code: 'gave_up' });
  }

  // logIn logs the new account in; false when it could not (the login
  // page then takes over, the username filled in).
  async function logIn(username, password, sig) {
    for (let i = 0; i < 3; i++) {
      try {
        await api('POST', '/api/login', { username, password }, { signal: sig });
        return true;
      } catch (e) {
        if (!(e instanceof ApiError) || !e.retryable || e.retryAfter > LONGEST_WAIT) return false;
        await ui.waitFor(e, sig);
      }
    }
    return false;
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (attempt) return;
    const username = form.elements['register-username'].value.trim();
    const password = form.elements['register-password'].value;
    const problems = registerProblems(username, password);
    show(problems);
    if (Object.keys(problems).length) { say(''); return; }
    delete form.dataset.retryAfter;
    attempt = new AbortController();
    const sig = attempt.signal; // Cancel, or the page changing
    const stop = attempt.abort.bind(attempt);
    signal.addEventListener('abort', stop, { once: true });
    submitBtn.disabled = true;
    submitBtn.hidden = true; // the challenge below has its own buttons
    for (const i of inputs()) i.readOnly = true;
    let focusAfter = submitBtn;
    try {
      await create(username, password, sig);
      clearBox();
      say('Account created. Logging you in…', 'success');
      if (await logIn(username, password, signal)) {
        ui.setUser(username);
        const back = sessionStorage.getItem('seckill_back');
        sessionStorage.removeItem('seckill_back');
        ui.go(back || '#/', `Account created. Welcome, ${username}!`, 'success', 'registered');
      } else {
        sessionStorage.setItem('seckill_prefill', username);
        ui.go('#/login', 'Account created. You can log in now.', 'success', 'registered');
      }
      focusAfter = null;
    } catch (e) {
      if (signal.aborted) return; // the page changed
      clearBox();
      const detail = (e.detail || '').toLowerCase();
      if (e.name === 'AbortError') {
        say('Cancelled: no account was created. Press “Create account” to try again.', 'info', 'cancelled');
      } else if (e.code === 'username_taken') {
        say('');
        show({ 'register-username': 'That username is already taken. Please choose another one.' });
        focusAfter = null;
      } else if (e.code === 'invalid' && detail.includes('password')) {
        say('');
        show({ 'register-password': 'Use a password of 8 to 72 characters.' });
        focusAfter = null;
      } else if (e.code === 'invalid' && detail.includes('username')) {
        say('');
        show({ 'register-username': 'Use 3 to 32 letters, digits, “_”, “.” or “-”.' });
        focusAfter = null;
      } else if (tooLong(e)) {
        form.dataset.retryAfter = String(e.retryAfter);
        say(budgetMessage(e.retryAfter), 'error', e.code || 'rate_limited');
      } else if (e.code === 'gave_up') {
        say('Too many checks failed in a row. Please try again in a moment.', 'error', 'gave_up');
      } else if (e instanceof ApiError && e.network) {
        say(`${messageFor(e)} No account was created.`, 'error', 'network');
      } else {
        say(messageFor(e), 'error', e.code || '');
      }
    } finally {
      signal.removeEventListener('abort', stop);
      attempt = null;
      if (!signal.aborted) {
        submitBtn.disabled = false;
        submitBtn.hidden = false;
        for (const i of inputs()) i.readOnly = false;
        if (focusAfter) focusAfter.focus();
      }
    }
  });

  function main() { return document.getElementById('main'); }
  function focusHeading() {
    const h1 = main().querySelector('h1');
    if (h1) { h1.tabIndex = -1; h1.focus({ preventScroll: true }); }
  }
}
