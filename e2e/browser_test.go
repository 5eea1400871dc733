package e2e

import (
	"context"
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
	start := time.Now().Add(7 * time.Second)
	item := env.createItem(5, "captcha", time.Until(start), time.Hour)

	b.registerAndLogin(env.pub.URL, "alice", "correct horse battery")
	b.waitJS(5*time.Second, "the sale list", fmt.Sprintf(`!!document.querySelector('#items li[data-item-id="%d"] .badge[data-state="upcoming"]')`, item))
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
	b.shot("confirmed")
	// the order status was followed with a backoff, well inside the status limit
	polls := env.reqs.matching(fmt.Sprintf(`^GET /api/items/%d/order$`, item))
	for i := 1; i < len(polls); i++ {
		if gap := polls[i].at.Sub(polls[i-1].at); gap < 400*time.Millisecond {
			t.Errorf("order polls %v apart", gap)
		}
	}

	// A second attempt: already bought.
	b.do(5*time.Second, "buy again", chromedp.Click(chromedp.ID("buy-button")))
	b.waitJS(10*time.Second, "already bought", `document.getElementById('status').dataset.code === 'already_bought'`)
	if got := b.text("status"); !strings.Contains(got, "already bought") {
		t.Errorf("second attempt: status %q", got)
	}
	b.shot("already-bought")

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
	b.do(5*time.Second, "a wrong answer", chromedp.SendKeys(chromedp.ID("captcha-answer"), strconv.Itoa(n+1)), chromedp.Click(chromedp.ID("captcha-submit")))
	b.waitJS(5*time.Second, "challenge failed", `document.getElementById('status').dataset.code === 'challenge_failed'`)
	b.shot("challenge-failed")
	b.waitJS(10*time.Second, "the wait message", `document.getElementById('status').dataset.code === 'rate_limited'`)
	msg := b.text("status")
	if !strings.Contains(msg, "Too many requests — retrying in ") {
		t.Errorf("wait message %q", msg)
	}
	b.shot("rate-limited")
	b.waitJS(15*time.Second, "a new captcha", fmt.Sprintf(`(() => { const c = document.getElementById('challenge'); return c.dataset.challengeId !== %q && !!document.getElementById('captcha-answer'); })()`, first))
	second := b.attr("challenge", "data-challenge-id")
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
	env := newBrowserEnv(t, browserRules(), edge.Config{Difficulty: 12})
	b := newBrowser(t)
	item := env.createItem(5, "pow", -time.Second, time.Hour)
	b.registerAndLogin(env.pub.URL, "carol", "correct horse battery")
	b.do(5*time.Second, "open the item", chromedp.Navigate(fmt.Sprintf("%s/#/items/%d", env.pub.URL, item)))
	b.waitJS(5*time.Second, "live", `document.getElementById('main').dataset.state === 'live' && !document.getElementById('buy-button').disabled`)
	b.shot("live")
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
	t.Logf("difficulty 12 solved by the worker (answer %s) and confirmed in %v", answer, time.Since(began).Round(time.Millisecond))
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

	b.do(10*time.Second, "open the dashboard", chromedp.Navigate(env.adm.URL+"/"))
	b.waitJS(5*time.Second, "the token form", `location.pathname === '/dashboard/' && !!document.getElementById('admin-token')`)
	b.shot("token")
	b.do(5*time.Second, "a wrong token", chromedp.SendKeys(chromedp.ID("admin-token"), "wrong"), chromedp.Click(chromedp.ID("token-submit")))
	b.waitJS(5*time.Second, "the refusal", `document.getElementById('status').textContent.includes('refused') && document.getElementById('admin').hidden`)
	b.do(5*time.Second, "the token", chromedp.SendKeys(chromedp.ID("admin-token"), env.token), chromedp.Click(chromedp.ID("token-submit")))
	b.waitJS(5*time.Second, "the dashboard", `!document.getElementById('admin').hidden`)
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

	// Watch the sale the test ran: the same numbers as the API.
	b.do(5*time.Second, "watch", b.typeInto("watch-id", strconv.FormatInt(item, 10)), chromedp.Click(chromedp.ID("watch-submit")))
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
