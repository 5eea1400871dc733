package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"seckill/edge"
	"seckill/limit"
)

// The storefront (package web) in Debian's Chromium, driven by chromedp,
// against a real edge, backend, worker and stores. Screenshots of each step
// go to $SECKILL_SCREENSHOTS/<test> (else $TMPDIR/seckill-screenshots/<test>).

func browserRules(extra ...limit.Rule) []limit.Rule {
	return append(extra,
		limit.Rule{Name: "status-per-user", Class: "status", Key: "user", Rate: 2, Burst: 10},
		limit.Rule{Name: "everything", Class: "*", Key: "global", Rate: 100000, Burst: 100000},
	)
}

// TestBrowserShopper: register and log in in the page, watch the countdown
// of a sale that starts a few seconds later turn live by itself, solve the
// captcha, buy, see the order confirmed; a second attempt says "already
// bought"; a sold-out item says so.
func TestBrowserShopper(t *testing.T) {
	t.Parallel()
	env := newBrowserEnv(t, browserRules(), edge.Config{Difficulty: 8})
	b := newBrowser(t)
	soldOut := env.createItem(1, "pow", -time.Second, time.Hour)
	taker := shopper{e: env.edgeEnv, token: env.sessions("taker")["taker"]}
	if a := taker.buy(soldOut, taker.getPath(soldOut)); a.status != 202 {
		t.Fatalf("buying the only unit: %d %v", a.status, a.body)
	}
	// an unknown API path is a problem+json 404 (call checks the type), not the page
	if a := call(t, "GET", env.pub.URL+"/api/no-such-route", nil, nil); a.status != 404 || a.code() != "not_found" {
		t.Fatalf("GET /api/no-such-route: %d %v", a.status, a.body)
	}
	// (the registration solves a proof of work first: the sale is created
	// after it, so it is still upcoming when the list shows)
	b.registerAndLogin(env.pub.URL, "alice", "correct horse battery")
	// The list polls the catalogue every few seconds: the new sale may take
	// one period to show, and must still be upcoming when it does.
	start := time.Now().Add(20 * time.Second)
	item := env.createItem(5, "captcha", time.Until(start), time.Hour)
	b.waitJS(12*time.Second, "the sale list", fmt.Sprintf(`!!document.querySelector('#items li[data-item-id="%d"] .badge[data-state="upcoming"]')`, item))
	b.shot("sale-list")

	// The countdown runs on the server's clock and switches to live by itself.
	b.do(5*time.Second, "open the item", chromedp.Click(chromedp.ID(fmt.Sprintf("item-link-%d", item))))
	b.waitJS(5*time.Second, "the countdown", `document.getElementById('main').dataset.state === 'upcoming' && /\d\d:\d\d/.test(document.getElementById('countdown').textContent)`)
	remaining := time.Duration(b.intAttr("countdown", "data-remaining-ms")) * time.Millisecond
	if want := time.Until(start); math.Abs(float64(remaining-want)) > float64(time.Second) {
		t.Errorf("the countdown shows %v left, the server clock says %v", remaining, want)
	}
	if b.attr("buy-button", "disabled") != "" || b.evalString(`document.getElementById('buy-button').disabled`) != "true" {
		t.Errorf("the buy button is enabled before the start")
	}
	b.shot("countdown")
	b.waitJS(time.Until(start)+3*time.Second, "the page to turn live", `document.getElementById('main').dataset.state === 'live' && !document.getElementById('buy-button').disabled`)
	if time.Now().Before(start.Add(-time.Second)) {
		t.Errorf("the page turned live %v before the start", time.Until(start))
	}
	b.shot("live")

	// Buy: challenge (captcha), path, buy, order status.
	b.do(5*time.Second, "buy", chromedp.Click(chromedp.ID("buy-button")))
	b.waitJS(10*time.Second, "the captcha", `(() => { const c = document.getElementById('challenge'); const img = document.getElementById('captcha-image');
		return c && !c.hidden && c.dataset.kind === 'captcha' && img && img.complete && img.naturalWidth > 0; })()`)
	id := b.attr("challenge", "data-challenge-id")
	ans, err := env.ch.AnswerForTest(context.Background(), id)
	if err != nil {
		t.Fatalf("answer of challenge %q: %v", id, err)
	}
	if focused := b.evalString(`document.activeElement && document.activeElement.id`); focused != "captcha-answer" {
		t.Errorf("focus is on %q, want the captcha answer", focused)
	}
	b.do(5*time.Second, "type the answer", chromedp.SendKeys(chromedp.ID("captcha-answer"), ans))
	b.shot("captcha")
	b.do(5*time.Second, "submit the answer", chromedp.Click(chromedp.ID("captcha-submit")))
	b.waitJS(20*time.Second, "the order to be confirmed", `document.getElementById('order-status').dataset.status === 'confirmed'`)
	if got := b.text("status"); !strings.Contains(got, "Order confirmed") {
		t.Errorf("status %q", got)
	}
	// F17: beside "Order confirmed" the stock counts the unit just bought.
	if got := b.text("stock"); got != "4 of 5 left" {
		t.Errorf("beside the confirmed order the stock says %q, want 4 of 5 left", got)
	}
	// F4: no active Buy button once bought.
	if b.evalString(`(() => { const x = document.getElementById('buy-button'); return x.hidden && x.disabled; })()`) != "true" {
		t.Errorf("the Buy button is still offered after the purchase")
	}
	b.shot("confirmed")
	orderText := b.text("order-status")
	m := regexp.MustCompile(`order number (\d+)`).FindStringSubmatch(orderText)
	if m == nil {
		t.Fatalf("order status %q names no order number", orderText)
	}
	// the order status was followed with a backoff, well inside the status limit
	polls := env.reqs.matching(fmt.Sprintf(`^GET /api/items/%d/order$`, item))
	for i := 1; i < len(polls); i++ {
		if gap := polls[i].at.Sub(polls[i-1].at); gap < 400*time.Millisecond {
			t.Errorf("order polls %v apart", gap)
		}
	}

	// F4: a reload asks for the order at once and shows it, with the same
	// order number, and no Buy button.
	b.do(10*time.Second, "reload the item page", chromedp.Reload())
	b.waitJS(10*time.Second, "the order after the reload", `document.getElementById('main').dataset.orderChecked === 'true' && document.getElementById('order-status').dataset.status === 'confirmed'`)
	if got := b.text("order-status"); !strings.Contains(got, "order number "+m[1]) {
		t.Errorf("after a reload the order status says %q, want order number %s", got, m[1])
	}
	if b.evalString(`(() => { const x = document.getElementById('buy-button'); return x.hidden && x.disabled; })()`) != "true" {
		t.Errorf("after a reload the Buy button is offered again")
	}
	// (the edge's catalogue copy may be a second old: the page refreshes it)
	b.waitJS(10*time.Second, "the stock after the reload", `document.getElementById('stock').textContent === '4 of 5 left'`)
	b.shot("reloaded-order")

	// The item that sold out.
	b.do(5*time.Second, "open the sold-out item", chromedp.Navigate(fmt.Sprintf("%s/#/items/%d", env.pub.URL, soldOut)))
	b.waitJS(5*time.Second, "sold out", `document.getElementById('main').dataset.state === 'sold_out'`)
	if got := b.text("item-state"); got != "Sold out" {
		t.Errorf("item state %q", got)
	}
	if b.evalString(`document.getElementById('buy-button').disabled`) != "true" {
		t.Errorf("the buy button of a sold-out item is enabled")
	}
	b.shot("sold-out")

	// The same page on a phone.
	b.do(5*time.Second, "phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)),
		chromedp.Navigate(fmt.Sprintf("%s/#/items/%d", env.pub.URL, item)))
	b.waitJS(5*time.Second, "the item on a phone", `document.getElementById('main').dataset.state === 'live'`)
	if w := b.evalString(`document.documentElement.scrollWidth <= window.innerWidth`); w != "true" {
		t.Errorf("the item page scrolls sideways on a phone")
	}
	b.shot("phone")
}

// TestBrowserRetryAfter: a wrong captcha answer burns the challenge; the
// next challenge hits the per-user limit (429); the page says so and asks
// again after exactly Retry-After, then the purchase goes through.
func TestBrowserRetryAfter(t *testing.T) {
	t.Parallel()
	env := newBrowserEnv(t, browserRules(limit.Rule{Name: "challenge-per-user", Class: "challenge", Key: "user", Rate: 0.25, Burst: 1}), edge.Config{Difficulty: 8})
	b := newBrowser(t)
	item := env.createItem(5, "captcha", -time.Second, time.Hour)
	b.registerAndLogin(env.pub.URL, "bob", "correct horse battery")
	b.do(5*time.Second, "open the item", chromedp.Navigate(fmt.Sprintf("%s/#/items/%d", env.pub.URL, item)))
	b.waitJS(5*time.Second, "live", `document.getElementById('main').dataset.state === 'live' && !document.getElementById('buy-button').disabled`)
	b.do(5*time.Second, "buy", chromedp.Click(chromedp.ID("buy-button")))
	b.waitJS(10*time.Second, "the captcha", `document.getElementById('challenge').dataset.kind === 'captcha' && !!document.getElementById('captcha-answer')`)
	first := b.attr("challenge", "data-challenge-id")
	ans, err := env.ch.AnswerForTest(context.Background(), first)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(ans)
	// F16: record, whenever the status says the answer was refused, whether
	// the old image (and its answer) still shows.
	b.evalString(fmt.Sprintf(`(() => { window.__stale = []; window.__codes = []; new MutationObserver(() => {
		const code = document.getElementById('status').dataset.code;
		if (window.__codes[window.__codes.length - 1] !== code) window.__codes.push(code);
		if (code !== 'challenge_failed') return;
		const c = document.getElementById('challenge');
		window.__stale.push(!c.hidden && c.dataset.challengeId === %q && !!document.getElementById('captcha-image'));
	}).observe(document.getElementById('status'), { attributes: true, childList: true, characterData: true, subtree: true }); return true; })()`, first))
	b.do(5*time.Second, "a wrong answer", chromedp.SendKeys(chromedp.ID("captcha-answer"), strconv.Itoa(n+1)), chromedp.Click(chromedp.ID("captcha-submit")))
	b.waitJS(5*time.Second, "challenge failed", `window.__codes.includes('challenge_failed')`)
	b.waitJS(10*time.Second, "the wait message", `document.getElementById('status').dataset.code === 'rate_limited'`)
	msg := b.text("status")
	if !strings.Contains(msg, "Too many requests — retrying in ") {
		t.Errorf("wait message %q", msg)
	}
	b.shot("rate-limited")
	b.waitJS(15*time.Second, "a new captcha", fmt.Sprintf(`(() => { const c = document.getElementById('challenge'); return c.dataset.challengeId !== %q && !!document.getElementById('captcha-answer'); })()`, first))
	second := b.attr("challenge", "data-challenge-id")
	if got := b.evalString(`JSON.stringify(window.__stale)`); !strings.Contains(got, "false") || strings.Contains(got, "true") {
		t.Errorf("the refused captcha stayed on screen under the refusal (samples %s)", got)
	}
	if got := b.evalString(`document.getElementById('captcha-answer').value`); got != "" {
		t.Errorf("the new captcha's answer field holds %q", got)
	}
	ans, err = env.ch.AnswerForTest(context.Background(), second)
	if err != nil {
		t.Fatal(err)
	}
	b.do(5*time.Second, "the right answer", chromedp.SendKeys(chromedp.ID("captcha-answer"), ans), chromedp.Click(chromedp.ID("captcha-submit")))
	b.waitJS(20*time.Second, "the order to be confirmed", `document.getElementById('order-status').dataset.status === 'confirmed'`)
	b.shot("confirmed")

	// Every 429 was followed by exactly one retry, Retry-After later.
	reqs := env.reqs.matching(fmt.Sprintf(`^POST /api/items/%d/challenge$`, item))
	limited := 0
	for i, r := range reqs {
		if r.status != 429 {
			continue
		}
		limited++
		secs, err := strconv.Atoi(r.retryAfter)
		if err != nil || secs < 1 {
			t.Fatalf("429 with Retry-After %q", r.retryAfter)
		}
		if i+1 >= len(reqs) {
			t.Fatalf("no retry after the 429")
		}
		gap, want := reqs[i+1].at.Sub(r.at), time.Duration(secs)*time.Second
		if gap < want-20*time.Millisecond || gap > want+time.Second {
			t.Errorf("retried %v after a 429 with Retry-After %d", gap, secs)
		}
		t.Logf("429 with Retry-After %d s; retried %v later", secs, gap.Round(time.Millisecond))
	}
	if limited == 0 {
		t.Fatalf("no challenge request was limited: %+v", reqs)
	}
}

// TestBrowserPoW: the proof of work is solved by the page's Web Worker.
func TestBrowserPoW(t *testing.T) {
	t.Parallel()
	env := newBrowserEnv(t, browserRules(), edge.Config{Difficulty: 16})
	b := newBrowser(t)
	item := env.createItem(5, "pow", -time.Second, time.Hour)
	b.registerAndLogin(env.pub.URL, "carol", "correct horse battery")
	b.do(5*time.Second, "open the item", chromedp.Navigate(fmt.Sprintf("%s/#/items/%d", env.pub.URL, item)))
	b.waitJS(5*time.Second, "live", `document.getElementById('main').dataset.state === 'live' && !document.getElementById('buy-button').disabled`)
	b.shot("live")
	// F12: the bar's formula never reaches the end before the answer, even
	// after many times the expected hashes (the page used min(tried, 2^d)).
	script := b.evalString(`document.querySelector('script[type=module]').src`)
	for _, tried := range []string{"0", "65536", "655360", "6553600000"} {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		v, err := chromedp.Run(ctx, chromedp.Evaluate[float64](fmt.Sprintf(`import(%q.replace(/app\.js$/, 'progress.js')).then((m) => m.powProgress(%s, 65536, 1000))`, script, tried), chromedp.EvalAwaitPromise))
		cancel()
		if err != nil || v < 0 || v > 999 {
			t.Errorf("powProgress(%s of about 65536) = %v, %v; want below the end (1000)", tried, v, err)
		}
	}
	// and on the page: every sample of the bar before the answer is short of the end
	b.evalString(`(() => { window.__bar = []; new MutationObserver(() => { const p = document.getElementById('pow-progress'); if (!p) return;
		window.__bar.push([Number(p.value), Number(p.max), document.getElementById('challenge').dataset.answer !== undefined]); })
		.observe(document.getElementById('challenge'), { attributes: true, subtree: true, childList: true }); return true; })()`)
	began := time.Now()
	b.do(5*time.Second, "buy", chromedp.Click(chromedp.ID("buy-button")))
	b.waitJS(20*time.Second, "the order to be confirmed", `document.getElementById('order-status').dataset.status === 'confirmed'`)
	b.shot("confirmed")
	if kind := b.attr("challenge", "data-kind"); kind != "pow" {
		t.Errorf("challenge kind %q", kind)
	}
	answer := b.attr("challenge", "data-answer")
	if _, err := strconv.ParseUint(answer, 10, 64); err != nil {
		t.Errorf("the worker's answer %q", answer)
	}
	t.Logf("difficulty 16 solved by the worker (answer %s) and confirmed in %v", answer, time.Since(began).Round(time.Millisecond))
	var bar [][3]any
	if err := json.Unmarshal([]byte(b.evalString(`JSON.stringify(window.__bar)`)), &bar); err != nil || len(bar) == 0 {
		t.Fatalf("no sample of the progress bar: %v", err)
	}
	for _, s := range bar {
		if v, max, solved := s[0].(float64), s[1].(float64), s[2].(bool); !solved && v >= max {
			t.Errorf("the bar was full (%v of %v) before the answer was found", v, max)
		}
	}

	if paths := env.reqs.matching(fmt.Sprintf(`^POST /api/items/%d/path$`, item)); len(paths) != 1 || paths[0].status != 200 {
		t.Errorf("path requests: %+v", paths)
	}
}

// TestBrowserDashboard: the admin dashboard creates a sale and shows the
// counts of a sale run by the test exactly as the admin stats API does.
func TestBrowserDashboard(t *testing.T) {
	t.Parallel()
	env := newBrowserEnv(t, browserRules(), edge.Config{Difficulty: 4})
	b := newBrowser(t)
	item := env.createItem(3, "pow", -time.Second, time.Hour)
	names := []string{"buyer1", "buyer2", "buyer3", "buyer4", "buyer5"}
	tok := env.sessions(names...)
	outcomes := map[int]int{}
	for _, n := range names {
		sh := shopper{e: env.edgeEnv, token: tok[n]}
		ch := sh.challenge(item)
		if ch.status != 200 {
			outcomes[ch.status]++
			continue
		}
		p := sh.path(item, ch.str("challenge_id"), sh.solve(ch))
		outcomes[sh.buy(item, p.str("path")).status]++
	}
	for range 4 { // rejections for the chart
		shopper{e: env.edgeEnv}.buy(item, randomPath())
		shopper{e: env.edgeEnv, token: tok["buyer1"]}.buy(item, randomPath())
	}
	if outcomes[202] != 3 || outcomes[410] != 2 {
		t.Fatalf("outcomes %v, want 3 × 202 and 2 × 410", outcomes)
	}
	var stats answer
	deadline := time.Now().Add(15 * time.Second)
	for {
		stats = env.admin("GET", fmt.Sprintf("/admin/items/%d/stats", item), nil)
		if stats.status == 200 && stats.body["orders"] == stats.body["reserved"] && stats.body["outbox_pending"] == float64(0) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sale did not settle: %v", stats.body)
		}
		time.Sleep(100 * time.Millisecond)
	}

	if a := env.admin("GET", "/admin/items", nil); a.status != 200 || len(a.body["items"].([]any)) != 1 {
		t.Fatalf("GET /admin/items: %d %v", a.status, a.body)
	}
	if a := call(t, "GET", env.adm.URL+"/admin/items", nil, nil); a.status != 401 {
		t.Fatalf("GET /admin/items without the token: %d %v", a.status, a.body)
	}
	b.do(10*time.Second, "open the dashboard", chromedp.Navigate(env.adm.URL+"/"))
	b.waitJS(5*time.Second, "the token form", `location.pathname === '/dashboard/' && !!document.getElementById('admin-token')`)
	// F19: no "Forget token" before there is a token (a CSS rule used to
	// override the hidden attribute).
	if got := b.evalString(`getComputedStyle(document.getElementById('forget-token')).display`); got != "none" {
		t.Errorf("Forget token is displayed (%s) before any token", got)
	}
	b.shot("token")
	b.do(5*time.Second, "a wrong token", chromedp.SendKeys(chromedp.ID("admin-token"), "wrong"), chromedp.Click(chromedp.ID("token-submit")))
	b.waitJS(5*time.Second, "the refusal", `document.getElementById('status').textContent.includes('refused') && document.getElementById('admin').hidden`)
	b.do(5*time.Second, "the token", chromedp.SendKeys(chromedp.ID("admin-token"), env.token), chromedp.Click(chromedp.ID("token-submit")))
	b.waitJS(5*time.Second, "the dashboard", `!document.getElementById('admin').hidden`)
	if got := b.evalString(`getComputedStyle(document.getElementById('forget-token')).display`); got == "none" {
		t.Errorf("Forget token is not displayed with a token")
	}
	if got := b.evalString(`sessionStorage.getItem('seckill_admin_token')`); got != env.token {
		t.Errorf("sessionStorage holds %q", got)
	}

	// Create a sale through the form.
	b.do(5*time.Second, "the create form",
		b.typeInto("create-name", "Browser sale"),
		b.typeInto("create-stock", "7"),
		chromedp.SetValue(chromedp.ID("create-challenge"), "captcha"),
		chromedp.Click(chromedp.ID("create-submit")))
	b.waitJS(5*time.Second, "the new sale", `!!document.getElementById('create-form').dataset.createdId`)
	created, _ := strconv.ParseInt(b.attr("create-form", "data-created-id"), 10, 64)
	if a := call(t, "GET", fmt.Sprintf("%s/api/items/%d", env.pub.URL, created), nil, nil); a.status != 200 {
		t.Errorf("the created sale: %d %v", a.status, a.body)
	} else if it := a.body["item"].(map[string]any); it["name"] != "Browser sale" || it["stock"] != float64(7) || it["challenge"] != "captcha" || it["state"] != "upcoming" {
		t.Errorf("the created sale: %v", it)
	}
	b.shot("created")

	// F19: the sales are listed (no id to guess), the new one included;
	// watch the sale the test ran from its row: the same numbers as the API.
	b.waitJS(10*time.Second, "the list of sales", fmt.Sprintf(`!!document.querySelector('#sales-table tr[data-item-id="%d"]') && !!document.querySelector('#sales-table tr[data-item-id="%d"]')`, item, created))
	if got := b.evalString(fmt.Sprintf(`document.querySelector('#sales-table tr[data-item-id="%d"]').textContent`, created)); !strings.Contains(got, "Browser sale") || !strings.Contains(got, "7 / 7") {
		t.Errorf("the new sale's row: %q", got)
	}
	b.shot("sales")
	b.do(5*time.Second, "watch", chromedp.Click(chromedp.ID(fmt.Sprintf("watch-%d", item))))
	want := map[string]string{}
	for k, id := range map[string]string{"stock_left": "stat-stock-left", "stock_total": "stat-stock-total", "reserved": "stat-reserved",
		"orders": "stat-orders", "outbox_pending": "stat-outbox-pending", "failed": "stat-failed"} {
		want[id] = strconv.FormatInt(int64(stats.body[k].(float64)), 10)
	}
	cond := []string{fmt.Sprintf(`document.getElementById('stats').dataset.item === '%d'`, item)}
	for id, v := range want {
		cond = append(cond, fmt.Sprintf(`document.getElementById(%q).textContent === %q`, id, v))
	}
	b.waitJS(5*time.Second, "the stats", strings.Join(cond, " && "))
	for id, v := range want {
		if got := b.text(id); got != v {
			t.Errorf("#%s shows %q, the API %q", id, got, v)
		}
	}
	if want["stat-reserved"] != "3" || want["stat-orders"] != "3" || want["stat-stock-left"] != "0" {
		t.Errorf("stats %v", want)
	}

	// Rejections per second: a burst while the dashboard watches.
	b.waitJS(5*time.Second, "the first rates", `document.querySelectorAll('#rate-chart polyline').length > 0`)
	for range 10 {
		shopper{e: env.edgeEnv}.buy(item, randomPath())
		time.Sleep(50 * time.Millisecond)
	}
	b.waitJS(5*time.Second, "a rate of unauthenticated rejections", `(() => { const td = document.querySelector('#rates-table tr[data-series="unauthenticated"] td[data-rate]'); return td && Number(td.dataset.rate) > 0; })()`)
	b.shot("dashboard")
	// the totals are those of /metrics, exactly
	resp, err := http.Get(env.adm.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	totals := map[string]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "seckill_edge_purchases_accepted_total "); ok {
			totals["accepted"] = v
		} else if m := regexp.MustCompile(`^seckill_edge_rejections_total\{reason="([a-z_]+)"\} (\S+)$`).FindStringSubmatch(line); m != nil {
			totals[m[1]] = m[2]
		}
	}
	if totals["accepted"] != "3" || totals["sold_out"] == "" || totals["unauthenticated"] == "" {
		t.Fatalf("metrics: %v", totals)
	}
	cond = cond[:0]
	for series, v := range totals {
		cond = append(cond, fmt.Sprintf(`(document.querySelector('#rates-table tr[data-series=%q] td[data-total]')||{dataset:{}}).dataset.total === %q`, series, v))
	}
	b.waitJS(5*time.Second, "the totals of /metrics", strings.Join(cond, " && "))
	b.shot("dashboard-totals")
	if n := b.evalString(`document.querySelectorAll('#rate-chart polyline').length`); n != strconv.Itoa(len(totals)) {
		t.Errorf("%s lines in the chart, want %d (%v)", n, len(totals), totals)
	}
}

// TestBrowserPageChanges: an unknown item says so in its heading (F14); an
// error banner does not survive a page change (F15); registration errors
// are in words, beside their field (F18); the heading that takes the focus
// on a page change shows no focus ring (F18).
func TestBrowserPageChanges(t *testing.T) {
	t.Parallel()
	env := newBrowserEnv(t, browserRules(), edge.Config{Difficulty: 4})
	b := newBrowser(t)
	if a := registerPassword(t, env.pub.URL, "dave", "correct horse battery"); a.status != 201 {
		t.Fatalf("registering dave: %d %v", a.status, a.body)
	}

	registers := len(env.reqs.matching(`^POST /api/register(/challenge)?$`))

	// F14: an unknown item.
	b.do(10*time.Second, "an unknown item", chromedp.Navigate(env.pub.URL+"/#/items/9999"))
	b.waitJS(5*time.Second, "the unknown item page", `document.getElementById('main').dataset.state === 'unknown'`)
	if got := b.text("item-name"); got != "Item not found" {
		t.Errorf("the heading of an unknown item says %q", got)
	}
	if got := b.text("unknown-item"); !strings.Contains(got, "There is no item 9999") {
		t.Errorf("the unknown item page says %q", got)
	}
	b.shot("unknown-item")

	// F18: no focus ring on the heading focused by the page change.
	b.do(5*time.Second, "the register page", chromedp.Navigate(env.pub.URL+"/#/register"))
	b.waitJS(5*time.Second, "the register heading focused", `document.activeElement && document.activeElement.tagName === 'H1'`)
	if got := b.evalString(`getComputedStyle(document.activeElement).outlineStyle`); got != "none" {
		t.Errorf("the focused heading has a %s outline", got)
	}

	// F18: errors in words, by the field, not in the banner.
	b.do(5*time.Second, "a short password",
		b.typeInto("register-username", "erin"), b.typeInto("register-password", "short"),
		chromedp.Click(chromedp.ID("register-submit")))
	b.waitJS(5*time.Second, "the password error", `!document.getElementById('register-password-error').hidden`)
	if got := b.text("register-password-error"); got != "Your password is too short: use at least 8 characters (5 so far)." {
		t.Errorf("password error %q", got)
	}
	if got := b.attr("register-password", "aria-invalid"); got != "true" {
		t.Errorf("the password input is not marked invalid (%q)", got)
	}
	if b.evalString(`document.getElementById('status').hidden`) != "true" {
		t.Errorf("the banner shows %q for a field error", b.text("status"))
	}
	if regs := env.reqs.matching(`^POST /api/register(/challenge)?$`); len(regs) != registers {
		t.Errorf("a form the page knows is wrong was sent (or cost a challenge): %+v", regs)
	}
	b.shot("register-password-error")
	b.do(5*time.Second, "a taken username",
		b.typeInto("register-username", "dave"), b.typeInto("register-password", "a long enough password"),
		chromedp.Click(chromedp.ID("register-submit")))
	b.waitJS(90*time.Second, "the username error", `!document.getElementById('register-username-error').hidden`) // after the registration challenge
	if got := b.text("register-username-error"); got != "That username is already taken. Please choose another one." {
		t.Errorf("username error %q", got)
	}
	if b.text("register-password-error") != "" || b.evalString(`document.getElementById('register-password-error').hidden`) != "true" {
		t.Errorf("the fixed password still shows an error")
	}
	b.shot("register-username-taken")

	// F15: an error banner, then a page change: gone.
	b.do(5*time.Second, "a wrong password", chromedp.Navigate(env.pub.URL+"/#/login"),
		b.typeInto("login-username", "dave"), b.typeInto("login-password", "not the password"),
		chromedp.Click(chromedp.ID("login-submit")))
	b.waitJS(5*time.Second, "the refusal", `document.getElementById('status').dataset.code === 'bad_credentials' && !document.getElementById('status').hidden`)
	b.shot("login-refused")
	b.do(5*time.Second, "to the sale list", chromedp.Click(chromedp.ID("brand")))
	b.waitJS(5*time.Second, "the sale list", `location.hash === '#/' && !!document.getElementById('items')`)
	if b.evalString(`document.getElementById('status').hidden`) != "true" {
		t.Errorf("the banner %q survived the page change", b.text("status"))
	}
	b.shot("after-navigation")
	// while a message said for the next page (after login) stays there
	b.do(5*time.Second, "log in", chromedp.Navigate(env.pub.URL+"/#/login"),
		b.typeInto("login-username", "dave"), b.typeInto("login-password", "correct horse battery"),
		chromedp.Click(chromedp.ID("login-submit")))
	b.waitJS(5*time.Second, "signed in", `!!document.getElementById('signed-in') && location.hash === '#/'`)
	if got := b.text("status"); got != "Welcome, dave!" {
		t.Errorf("after logging in the banner says %q", got)
	}
}
