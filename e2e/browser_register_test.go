package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"seckill/captcha"
	"seckill/edge"
	"seckill/limit"
	"seckill/web"
)

// The storefront's registration with its challenge (issue 15 §1), in
// Chromium against the real edge: POST /api/register/challenge, the proof
// of work solved by the page's Web Worker (or the captcha answered), then
// POST /api/register and the login.

// regOpts is the registration challenge of a test edge.
type regOpts struct {
	kind       string        // pow or captcha
	difficulty int           // pow: 0 is the edge's default (limit.DefaultRegistration)
	perIP      int           // accounts per IP per 24 h: 0 is the edge's default (5)
	ttl        time.Duration // lifetime of a challenge: 0 is the edge's default
}

// newRegisterEnv is newBrowserEnv with these registration settings.
func newRegisterEnv(t *testing.T, o regOpts, cfg edge.Config) *browserEnv {
	t.Helper()
	cfg.Registration = limit.DefaultRegistration
	if o.kind != "" {
		cfg.Registration.Challenge = o.kind
	}
	if o.difficulty != 0 {
		cfg.Registration.Difficulty = o.difficulty
	}
	if o.perIP != 0 {
		cfg.Registration.PerIP = o.perIP
	}
	reqs := &requestLog{}
	env := newEdgeEnvWith(t, browserRules(), cfg, func(d *edge.Deps) {
		d.Storefront, d.Dashboard = web.Storefront(), web.Dashboard()
		if o.ttl > 0 {
			d.Challenges = captcha.NewStore(d.Redis, d.Prefix, captcha.Options{TTL: o.ttl})
		}
	}, reqs.wrap)
	return &browserEnv{edgeEnv: env, reqs: reqs}
}

// recordStatus makes the page remember every code the status line shows
// (window.__codes) and the challenges the registration shows
// (window.__challenges: id, kind, whether a progress bar and a Cancel
// button were there).
func (b *browser) recordStatus() {
	b.t.Helper()
	b.evalString(`(() => { window.__codes = []; window.__challenges = [];
		new MutationObserver(() => {
			const code = document.getElementById('status').dataset.code;
			if (window.__codes[window.__codes.length - 1] !== code) window.__codes.push(code);
		}).observe(document.getElementById('status'), { attributes: true, childList: true, characterData: true, subtree: true });
		new MutationObserver(() => {
			const box = document.getElementById('register-challenge');
			if (!box || !box.dataset.challengeId) return;
			let c = window.__challenges.find((x) => x.id === box.dataset.challengeId);
			if (!c) { c = { id: box.dataset.challengeId, kind: box.dataset.kind, bar: false, cancel: false, tried: 0 }; window.__challenges.push(c); }
			const bar = document.getElementById('register-pow-progress');
			if (bar) { c.bar = true; c.tried = Math.max(c.tried, Number(bar.dataset.tried || 0)); }
			if (document.getElementById('register-cancel')) c.cancel = true;
		}).observe(document.getElementById('main'), { attributes: true, childList: true, subtree: true });
		return true; })()`)
}

// fillRegister opens the register page and fills the form in.
func (b *browser) fillRegister(base, username, password string) {
	b.t.Helper()
	b.do(10*time.Second, "the register page",
		chromedp.Navigate(base+"/#/register"),
		b.typeInto("register-username", username),
		b.typeInto("register-password", password))
	b.recordStatus()
}

// TestBrowserRegisterAndBuy: a shopper registers in the page with the
// edge's default proof of work, solved by the Web Worker with a progress
// bar and a Cancel button, is logged in at once and buys. A second account:
// its first challenge is spent by another request before the page answers
// it (400 challenge_failed); the page says why, solves a new one and the
// account is made.
func TestBrowserRegisterAndBuy(t *testing.T) {
	t.Parallel()
	env := newRegisterEnv(t, regOpts{kind: "pow"}, edge.Config{Difficulty: 8})
	b := newBrowser(t)
	item := env.createItem(3, "pow", -time.Second, time.Hour)

	b.fillRegister(env.pub.URL, "erin", "correct horse battery")
	b.shot("register-form")
	began := time.Now()
	b.do(5*time.Second, "create the account", chromedp.Click(chromedp.ID("register-submit")))
	b.waitJS(90*time.Second, "signed in", `!!document.getElementById('signed-in') && location.hash === '#/'`)
	t.Logf("registered with the default proof of work in %v", time.Since(began).Round(time.Millisecond))
	if got := b.text("signed-in"); !strings.Contains(got, "erin") {
		t.Errorf("signed-in shows %q", got)
	}
	if got := b.text("status"); got != "Account created. Welcome, erin!" {
		t.Errorf("after registering the status says %q", got)
	}
	var chs []struct {
		ID, Kind    string
		Bar, Cancel bool
	}
	b.evalJSON(`window.__challenges`, &chs)
	if len(chs) != 1 || chs[0].Kind != "pow" || !chs[0].Bar || !chs[0].Cancel {
		t.Errorf("the registration showed %+v, want one pow challenge with a progress bar and a Cancel button", chs)
	}
	b.shot("registered")
	checkRequests(t, env, `^POST /api/(register|register/challenge|login)$`,
		"POST /api/register/challenge 200", "POST /api/register 201", "POST /api/login 200")

	// Logged in by the registration: buy.
	b.do(10*time.Second, "open the item", chromedp.Navigate(fmt.Sprintf("%s/#/items/%d", env.pub.URL, item)))
	b.waitJS(10*time.Second, "live", `document.getElementById('main').dataset.state === 'live' && !document.getElementById('buy-button').disabled`)
	b.do(5*time.Second, "buy", chromedp.Click(chromedp.ID("buy-button")))
	b.waitJS(30*time.Second, "the order to be confirmed", `document.getElementById('order-status').dataset.status === 'confirmed'`)
	b.shot("bought")

	// A second account, whose first challenge another request spends first
	// (the same answer sent twice: the edge accepts a challenge once).
	b.do(5*time.Second, "log out", chromedp.Click(chromedp.ID("logout")))
	b.waitJS(5*time.Second, "logged out", `!!document.getElementById('nav-register')`)
	b.fillRegister(env.pub.URL, "erin2", "correct horse battery")
	b.evalString(`(() => { const f = window.fetch; window.__spent = 0;
		window.fetch = async (url, init) => {
			if (String(url) === '/api/register' && !window.__spent) {
				window.__spent = 1;
				const body = JSON.parse(init.body);
				const r = await f(url, { ...init, body: JSON.stringify({ ...body, answer: String(BigInt(body.answer) + 1n) }) });
				window.__spent = r.status;
			}
			return f(url, init);
		}; return true; })()`)
	mark := env.reqs.count()
	b.do(5*time.Second, "create the second account", chromedp.Click(chromedp.ID("register-submit")))
	b.waitJS(90*time.Second, "signed in as erin2", `!!document.getElementById('signed-in') && document.getElementById('signed-in').textContent.includes('erin2')`)
	if got := b.evalString(`window.__spent`); got != "400" {
		t.Errorf("spending the first challenge with a wrong answer: %s, want 400", got)
	}
	if got := b.evalString(`window.__codes.join(' ')`); !strings.Contains(got, "challenge_failed") || !strings.Contains(got, "registered") {
		t.Errorf("status codes %q: want challenge_failed said, then registered", got)
	}
	b.evalJSON(`window.__challenges`, &chs)
	if len(chs) != 2 || chs[0].ID == chs[1].ID {
		t.Errorf("challenges shown %+v, want two", chs)
	}
	checkRequestsSince(t, env, mark, `^POST /api/(register|register/challenge|login)$`,
		"POST /api/register/challenge 200", "POST /api/register 400", "POST /api/register 400",
		"POST /api/register/challenge 200", "POST /api/register 201", "POST /api/login 200")
	b.shot("registered-after-refusal")
}

// TestBrowserRegisterCaptcha: with captcha registration, the right answer
// to an expired challenge and a wrong answer are refused (400
// challenge_failed); each time the page shows a new image at once and says
// why; another image on request; the right answer makes the account.
// Cancel leaves no account.
// Past the network's account budget the page says when to come back, from
// Retry-After, and does not retry by itself.
func TestBrowserRegisterCaptcha(t *testing.T) {
	t.Parallel()
	const regTTL = 8 * time.Second // long enough for each step of the page, short enough to wait out once
	env := newRegisterEnv(t, regOpts{kind: "captcha", perIP: 1, ttl: regTTL}, edge.Config{Difficulty: 8})
	b := newBrowser(t)

	captchaShown := func(notID string) string {
		b.t.Helper()
		b.waitJS(10*time.Second, "a captcha", fmt.Sprintf(`(() => { const c = document.getElementById('register-challenge'); const img = document.getElementById('register-captcha-image');
			return c && !c.hidden && c.dataset.kind === 'captcha' && c.dataset.challengeId !== %q && img && img.complete && img.naturalWidth > 0; })()`, notID))
		return b.attr("register-challenge", "data-challenge-id")
	}
	answerOf := func(id string) string {
		ans, err := env.ch.AnswerForTest(context.Background(), id)
		if err != nil {
			t.Fatalf("answer of challenge %q: %v", id, err)
		}
		return ans
	}

	// Cancel: the form is back, nothing was sent.
	b.fillRegister(env.pub.URL, "fay", "correct horse battery")
	b.do(5*time.Second, "create the account", chromedp.Click(chromedp.ID("register-submit")))
	first := captchaShown("")
	b.do(5*time.Second, "cancel", chromedp.Click(chromedp.ID("register-cancel")))
	b.waitJS(5*time.Second, "cancelled", `document.getElementById('status').dataset.code === 'cancelled' && document.getElementById('register-challenge').hidden && !document.getElementById('register-submit').disabled`)
	b.shot("cancelled")
	if n := len(env.reqs.matching(`^POST /api/register$`)); n != 0 {
		t.Errorf("%d registrations sent after Cancel", n)
	}

	// The right answer after the challenge expired: refused, a new image.
	b.do(5*time.Second, "create the account again", chromedp.Click(chromedp.ID("register-submit")))
	expiring := captchaShown(first)
	expired := answerOf(expiring)
	time.Sleep(regTTL + 500*time.Millisecond)
	b.do(5*time.Second, "the right answer, too late", chromedp.SendKeys(chromedp.ID("register-captcha-answer"), expired),
		chromedp.Click(chromedp.ID("register-captcha-submit")))
	id := captchaShown(expiring)
	if got := b.text("status"); got != "That answer was not accepted (wrong, expired or already used). Here is a new image." {
		t.Errorf("after an expired challenge the status says %q", got)
	}
	b.shot("captcha-expired")

	// A wrong answer, then another image, then the right answer.
	if focused := b.evalString(`document.activeElement && document.activeElement.id`); focused != "register-captcha-answer" {
		t.Errorf("focus is on %q, want the captcha answer", focused)
	}
	n, _ := strconv.Atoi(answerOf(id))
	b.do(5*time.Second, "a wrong answer", chromedp.SendKeys(chromedp.ID("register-captcha-answer"), strconv.Itoa(n+1)))
	b.shot("captcha-wrong-answer")
	b.do(5*time.Second, "submit it", chromedp.Click(chromedp.ID("register-captcha-submit")))
	second := captchaShown(id)
	if got := b.text("status"); got != "That answer was not accepted (wrong, expired or already used). Here is a new image." {
		t.Errorf("after a wrong answer the status says %q", got)
	}
	if got := b.evalString(`document.getElementById('register-captcha-answer').value`); got != "" {
		t.Errorf("the new captcha's answer field holds %q", got)
	}
	b.shot("captcha-refused")
	b.do(5*time.Second, "another image", chromedp.Click(chromedp.ID("register-captcha-new")))
	third := captchaShown(second)
	b.do(5*time.Second, "the right answer", chromedp.SendKeys(chromedp.ID("register-captcha-answer"), answerOf(third)))
	b.shot("captcha-right-answer")
	b.do(5*time.Second, "submit it", chromedp.Click(chromedp.ID("register-captcha-submit")))
	b.waitJS(20*time.Second, "signed in", `!!document.getElementById('signed-in') && location.hash === '#/'`)
	b.shot("registered")
	checkRequests(t, env, `^POST /api/(register|register/challenge|login)$`,
		"POST /api/register/challenge 200",                           // cancelled
		"POST /api/register/challenge 200", "POST /api/register 400", // expired
		"POST /api/register/challenge 200", "POST /api/register 400", // wrong
		"POST /api/register/challenge 200", // another image
		"POST /api/register/challenge 200", "POST /api/register 201", "POST /api/login 200")

	// Past the budget (one account per IP in this test).
	b.do(5*time.Second, "log out", chromedp.Click(chromedp.ID("logout")))
	b.waitJS(5*time.Second, "logged out", `!!document.getElementById('nav-register')`)
	b.fillRegister(env.pub.URL, "gus", "correct horse battery")
	mark := env.reqs.count()
	b.do(5*time.Second, "create a second account", chromedp.Click(chromedp.ID("register-submit")))
	b.waitJS(10*time.Second, "a captcha or the refusal", `document.getElementById('status').dataset.code === 'rate_limited' || !!document.getElementById('register-captcha-image')`)
	if b.evalString(`!!document.getElementById('register-captcha-image')`) == "true" {
		id := captchaShown("")
		b.do(5*time.Second, "the right answer", chromedp.SendKeys(chromedp.ID("register-captcha-answer"), answerOf(id)),
			chromedp.Click(chromedp.ID("register-captcha-submit")))
	}
	b.waitJS(10*time.Second, "the budget message", `!!document.getElementById('register-form').dataset.retryAfter`)
	b.shot("budget")
	var limited []loggedRequest
	for _, r := range env.reqs.since(mark, `^POST /api/register(/challenge)?$`) {
		if r.status == 429 {
			limited = append(limited, r)
		}
	}
	if len(limited) != 1 {
		t.Fatalf("%d answers 429 to the registration past the budget, want 1", len(limited))
	}
	secs, err := strconv.Atoi(limited[0].retryAfter)
	if err != nil || secs < 3600 {
		t.Fatalf("429 with Retry-After %q, want hours", limited[0].retryAfter)
	}
	if got := b.attr("register-form", "data-retry-after"); got != limited[0].retryAfter {
		t.Errorf("the page took Retry-After %q, the edge sent %q", got, limited[0].retryAfter)
	}
	want := "Too many accounts have been created from your network recently. You can create one again in " + formatWait(secs) + " ("
	if got := b.text("status"); !strings.HasPrefix(got, want) {
		t.Errorf("the budget message says %q, want %q…", got, want)
	}
	if b.evalString(`document.getElementById('register-submit').disabled`) != "false" {
		t.Errorf("the form stays disabled after the refusal")
	}
	time.Sleep(1500 * time.Millisecond) // the page must not retry by itself
	if after := env.reqs.since(mark, `^POST /api/register(/challenge)?$`); after[len(after)-1] != limited[0] {
		t.Errorf("registration requests after the 429: %+v", after)
	}
	if a := call(t, "POST", env.pub.URL+"/api/login", map[string]any{"username": "gus", "password": "correct horse battery"}, nil); a.status != 401 {
		t.Errorf("logging in as gus: %d %v; want 401 (no account)", a.status, a.body)
	}
}

// TestBrowserRegisterCancelAndOffline: a proof of work too hard to finish
// shows its progress until Cancel, which stops it and sends nothing; a
// challenge request that cannot reach the shop says so and leaves the form
// usable.
func TestBrowserRegisterCancelAndOffline(t *testing.T) {
	t.Parallel()
	env := newRegisterEnv(t, regOpts{kind: "pow", difficulty: 32}, edge.Config{Difficulty: 8})
	b := newBrowser(t)
	b.fillRegister(env.pub.URL, "hal", "correct horse battery")
	b.do(5*time.Second, "create the account", chromedp.Click(chromedp.ID("register-submit")))
	b.waitJS(10*time.Second, "progress", `(() => { const p = document.getElementById('register-pow-progress'); return p && Number(p.dataset.tried || 0) > 0; })()`)
	if focused := b.evalString(`document.activeElement && document.activeElement.id`); focused != "register-cancel" {
		t.Errorf("focus is on %q while solving, want Cancel", focused)
	}
	if got := b.evalString(`document.getElementById('register-username').readOnly`); got != "true" {
		t.Errorf("the username can be edited while solving")
	}
	b.shot("solving")
	b.do(5*time.Second, "cancel", chromedp.Click(chromedp.ID("register-cancel")))
	b.waitJS(5*time.Second, "cancelled", `document.getElementById('status').dataset.code === 'cancelled' && document.getElementById('register-challenge').hidden`)
	if got := b.text("status"); got != "Cancelled: no account was created. Press “Create account” to try again." {
		t.Errorf("after Cancel the status says %q", got)
	}
	if focused := b.evalString(`document.activeElement && document.activeElement.id`); focused != "register-submit" {
		t.Errorf("after Cancel the focus is on %q, want Create account", focused)
	}
	b.shot("cancelled")
	if n := len(env.reqs.matching(`^POST /api/register$`)); n != 0 {
		t.Errorf("%d registrations sent", n)
	}

	// The network fails under the challenge request.
	b.offline(env.pub.URL+"/api/register/challenge", true)
	b.do(5*time.Second, "create the account offline", chromedp.Click(chromedp.ID("register-submit")))
	b.waitJS(10*time.Second, "the network error", `document.getElementById('status').dataset.code === 'network' && !document.getElementById('register-submit').disabled`)
	if got := b.text("status"); got != "Cannot reach the shop. Check your connection and try again. No account was created." {
		t.Errorf("offline, the status says %q", got)
	}
	b.shot("offline")
	b.offline(env.pub.URL+"/api/register/challenge", false)
	b.do(5*time.Second, "create the account online", chromedp.Click(chromedp.ID("register-submit")))
	b.waitJS(10*time.Second, "progress again", `(() => { const p = document.getElementById('register-pow-progress'); return p && Number(p.dataset.tried || 0) > 0; })()`)
	b.do(5*time.Second, "cancel", chromedp.Click(chromedp.ID("register-cancel")))
	b.waitJS(5*time.Second, "cancelled", `document.getElementById('status').dataset.code === 'cancelled'`)
}

// formatWait is register.js's formatWait.
func formatWait(secs int) string {
	u := func(n int, unit string) string { return fmt.Sprintf("%d\u00a0%s", n, unit) }
	if secs < 60 {
		return u(secs, "s")
	}
	min := (secs + 59) / 60
	if min < 60 {
		return u(min, "min")
	}
	h, m := min/60, min%60
	if h < 24 {
		if m != 0 {
			return u(h, "h") + " " + u(m, "min")
		}
		return u(h, "h")
	}
	d, hh := h/24, h%24
	s := u(d, "day")
	if d > 1 {
		s = u(d, "days")
	}
	if hh != 0 {
		s += " " + u(hh, "h")
	}
	return s
}

// checkRequests compares the logged requests matching re with want
// ("METHOD path status").
func checkRequests(t *testing.T, env *browserEnv, re string, want ...string) {
	t.Helper()
	checkRequestsSince(t, env, 0, re, want...)
}

// checkRequestsSince is checkRequests on the requests logged after the
// first n.
func checkRequestsSince(t *testing.T, env *browserEnv, n int, re string, want ...string) {
	t.Helper()
	var got []string
	for _, r := range env.reqs.since(n, re) {
		got = append(got, fmt.Sprintf("%s %s %d", r.method, r.path, r.status))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
