package e2e

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"seckill/edge"
	"seckill/limit"
)

// TestBrowserWaitingRoom: a sale with a waiting room (allocation queue).
// Two shoppers join through the API before the start, then the page's
// user: the page offers to join, shows the place in line (a random one
// among the pre-queue), the wait and a progress bar, keeps the Buy button
// off while waiting, turns to "your turn" by itself once admitted (polling
// at poll_after), and the purchase goes through with the pass the edge set
// as a cookie. The dashboard shows the room's numbers.
func TestBrowserWaitingRoom(t *testing.T) {
	t.Parallel()
	env := newBrowserEnv(t, browserRules(), edge.Config{Difficulty: 4})
	b := newBrowser(t)
	now := time.Now()
	start := now.Add(15 * time.Second)
	a := env.admin("POST", "/admin/items", map[string]any{
		"name": "Queued sale", "price_cents": 1999, "stock": 3, "challenge": "none",
		"starts_at": start.UTC().Format(time.RFC3339Nano), "ends_at": start.Add(time.Hour).UTC().Format(time.RFC3339Nano),
		"allocation": "queue", "queue_opens_at": now.Add(-time.Second).UTC().Format(time.RFC3339Nano),
		"new_users_per_minute": 60, "session_duration": "2m",
	})
	if a.status != 201 {
		t.Fatalf("create a queue sale: %d %v", a.status, a.body)
	}
	item := int64(a.body["id"].(float64))
	base := fmt.Sprintf("/api/items/%d", item)
	tok := env.sessions("bob", "carol")
	for _, n := range []string{"bob", "carol"} {
		sh := shopper{e: env.edgeEnv, token: tok[n]}
		if j := sh.do("POST", base+"/queue", nil); j.status != 200 || j.str("state") != "waiting" {
			t.Fatalf("%s joins: %d %v", n, j.status, j.body)
		}
	}

	b.registerAndLogin(env.pub.URL, "alice", "correct horse battery")
	b.do(10*time.Second, "open the item", chromedp.Navigate(fmt.Sprintf("%s/#/items/%d", env.pub.URL, item)))
	b.waitJS(10*time.Second, "the waiting room", `(() => { const q = document.getElementById('queue');
		return q && !q.hidden && q.dataset.state === 'none' && !document.getElementById('queue-join').hidden; })()`)
	b.shot("waiting-room-join")
	b.do(5*time.Second, "join", chromedp.Click(chromedp.ID("queue-join")))
	b.waitJS(10*time.Second, "a place in line", `document.getElementById('queue').dataset.state === 'waiting' && !!document.getElementById('queue-position').dataset.position`)
	pos, _ := strconv.Atoi(b.attr("queue-position", "data-position"))
	if pos < 1 || pos > 3 {
		t.Errorf("alice's place among the pre-queue of 3: %d", pos)
	}
	if got := b.text("queue-eta"); !strings.Contains(got, "3 waiting") || !strings.Contains(got, "estimated wait") {
		t.Errorf("the wait says %q", got)
	}
	if b.evalString(`document.getElementById('buy-button').disabled`) != "true" {
		t.Errorf("the Buy button is enabled while waiting")
	}
	if b.evalString(`document.getElementById('queue-progress').tagName`) != "PROGRESS" {
		t.Errorf("no progress bar")
	}
	b.shot("waiting-room-waiting")

	// After the start, 1 a second is admitted: alice within a few seconds,
	// found by the page's own polling.
	b.waitJS(time.Until(start)+20*time.Second, "alice's turn", `document.getElementById('queue').dataset.state === 'admitted' && !document.getElementById('buy-button').disabled`)
	if got := b.text("queue-state"); !strings.Contains(got, "your turn") {
		t.Errorf("admitted state says %q", got)
	}
	b.shot("waiting-room-admitted")
	b.do(5*time.Second, "buy", chromedp.Click(chromedp.ID("buy-button")))
	b.waitJS(20*time.Second, "the order to be confirmed", `document.getElementById('order-status').dataset.status === 'confirmed'`)
	b.shot("waiting-room-bought")
	// The page polled the queue no faster than poll_after (at least 1 s).
	polls := env.reqs.matching(fmt.Sprintf(`^GET /api/items/%d/queue$`, item))
	for i := 1; i < len(polls); i++ {
		if gap := polls[i].at.Sub(polls[i-1].at); gap < 900*time.Millisecond {
			t.Errorf("queue polls %v apart", gap)
		}
	}
	if len(polls) < 2 {
		t.Errorf("the page polled the queue %d times", len(polls))
	}

	// The dashboard shows the waiting room.
	b.do(10*time.Second, "open the dashboard", chromedp.Navigate(env.adm.URL+"/"))
	b.do(5*time.Second, "the token", b.typeInto("admin-token", env.token), chromedp.Click(chromedp.ID("token-submit")))
	b.waitJS(5*time.Second, "the dashboard", `!document.getElementById('admin').hidden`)
	b.do(5*time.Second, "watch", b.typeInto("watch-id", strconv.FormatInt(item, 10)), chromedp.Click(chromedp.ID("watch-submit")))
	b.waitJS(10*time.Second, "the waiting room's numbers", `!document.getElementById('queue-stats').hidden && document.getElementById('stat-queue-total').dataset.value >= '1'`)
	b.shot("dashboard-waiting-room")
}

// MessageChallengeFailed is the storefront's message for challenge_failed
// (web/static/storefront/messages.js).
const MessageChallengeFailed = "That answer was not accepted (wrong, expired or already used). Here is a new challenge."

// queueSale creates a waiting-room sale whose joining takes a challenge
// (queue_challenge) of kind challenge, opening a second before start and
// lasting an hour; extra fields are added to (or replace) those.
func queueSale(t *testing.T, env *browserEnv, challenge string, stock int, start time.Time, extra map[string]any) int64 {
	t.Helper()
	opens := time.Now()
	if start.Before(opens) {
		opens = start
	}
	body := map[string]any{
		"name": "Queued sale, checked", "price_cents": 2499, "stock": stock, "challenge": challenge,
		"starts_at": start.UTC().Format(time.RFC3339Nano), "ends_at": start.Add(time.Hour).UTC().Format(time.RFC3339Nano),
		"allocation": "queue", "queue_opens_at": opens.Add(-time.Second).UTC().Format(time.RFC3339Nano),
		"new_users_per_minute": 60, "session_duration": "2m", "queue_challenge": true,
	}
	for k, v := range extra {
		body[k] = v
	}
	a := env.admin("POST", "/admin/items", body)
	if a.status != 201 {
		t.Fatalf("create a queue sale with queue_challenge: %d %v", a.status, a.body)
	}
	return int64(a.body["id"].(float64))
}

// settled waits until the sale's orders are stored and returns its stats.
func settled(t *testing.T, env *browserEnv, item int64) answer {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st := env.admin("GET", fmt.Sprintf("/admin/items/%d/stats", item), nil)
		if st.status == 200 && st.body["orders"] == st.body["reserved"] && st.body["outbox_pending"] == float64(0) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sale did not settle: %d %v", st.status, st.body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// statuses lists the statuses of requests.
func statuses(reqs []loggedRequest) []int {
	out := make([]int, len(reqs))
	for i, r := range reqs {
		out[i] = r.status
	}
	return out
}

// TestBrowserWaitingRoomChallenge: joining a waiting room with
// queue_challenge (a captcha sale) in the page. Join shows the captcha of
// POST /queue/challenge in the challenge step, saying why; a wrong answer is
// refused (challenge_failed), said in words, and a new image replaces the
// refused one at once; the right answer joins (position 1, waiting for the
// start), the page turns to "your turn" by itself after the start, and the
// purchase (its own captcha) goes through: one order, stock 3 → 2.
func TestBrowserWaitingRoomChallenge(t *testing.T) {
	t.Parallel()
	env := newBrowserEnv(t, browserRules(), edge.Config{Difficulty: 8})
	b := newBrowser(t)
	b.registerAndLogin(env.pub.URL, "dora", "correct horse battery")
	start := time.Now().Add(25 * time.Second)
	item := queueSale(t, env, "captcha", 3, start, nil)
	base := fmt.Sprintf("/api/items/%d", item)

	b.do(10*time.Second, "open the item", chromedp.Navigate(fmt.Sprintf("%s/#/items/%d", env.pub.URL, item)))
	b.waitJS(10*time.Second, "the waiting room", `(() => { const q = document.getElementById('queue');
		return q && !q.hidden && q.dataset.state === 'none' && !document.getElementById('queue-join').hidden && !document.getElementById('queue-join').disabled; })()`)
	captchaShown := func(notID string) string {
		t.Helper()
		b.waitJS(10*time.Second, "a captcha to join", fmt.Sprintf(`(() => { const c = document.getElementById('challenge'); const img = document.getElementById('captcha-image');
			return c && !c.hidden && c.dataset.kind === 'captcha' && c.dataset.purpose === 'queue' && c.dataset.challengeId !== %q && img && img.complete && img.naturalWidth > 0; })()`, notID))
		return b.attr("challenge", "data-challenge-id")
	}
	b.do(5*time.Second, "join", chromedp.Click(chromedp.ID("queue-join")))
	first := captchaShown("")
	if got := b.text("challenge-purpose"); got != "Joining the waiting room takes one check that you are not a bot." {
		t.Errorf("the challenge step says %q", got)
	}
	if got := b.text("queue-state"); got != "Joining the waiting room: one check that you are not a bot first…" {
		t.Errorf("while joining the room says %q", got)
	}
	if b.evalString(`document.getElementById('queue-join').disabled`) != "true" {
		t.Errorf("the join button is enabled while joining")
	}
	if focused := b.evalString(`document.activeElement && document.activeElement.id`); focused != "captcha-answer" {
		t.Errorf("focus is on %q, want the captcha answer", focused)
	}
	ans, err := env.ch.AnswerForTest(context.Background(), first)
	if err != nil {
		t.Fatalf("answer of challenge %q: %v", first, err)
	}
	n, _ := strconv.Atoi(ans)
	b.do(5*time.Second, "a wrong answer", chromedp.SendKeys(chromedp.ID("captcha-answer"), strconv.Itoa(n+1)))
	b.shot("join-challenge")
	b.do(5*time.Second, "submit it", chromedp.Click(chromedp.ID("captcha-submit")))
	second := captchaShown(first)
	if got, code := b.text("status"), b.attr("status", "data-code"); got != MessageChallengeFailed || code != "challenge_failed" {
		t.Errorf("after a wrong answer the status says %q (%s), want %q", got, code, MessageChallengeFailed)
	}
	if got := b.evalString(`document.getElementById('captcha-answer').value`); got != "" {
		t.Errorf("the new captcha's answer field holds %q", got)
	}
	b.shot("join-challenge-refused")
	ans, err = env.ch.AnswerForTest(context.Background(), second)
	if err != nil {
		t.Fatal(err)
	}
	b.do(5*time.Second, "the right answer", chromedp.SendKeys(chromedp.ID("captcha-answer"), ans), chromedp.Click(chromedp.ID("captcha-submit")))
	b.waitJS(10*time.Second, "a place in line", `document.getElementById('queue').dataset.state === 'waiting' && document.getElementById('queue-position').dataset.position === '1'`)
	if time.Now().After(start) {
		t.Fatalf("joined only after the start: the waiting page was not seen")
	}
	for id, want := range map[string]string{
		"status":         "You joined the waiting room.",
		"queue-state":    "You are in the queue.",
		"queue-position": "You are next in line.",
	} {
		if got := b.text(id); got != want {
			t.Errorf("#%s says %q, want %q", id, got, want)
		}
	}
	if got := b.text("queue-eta"); !strings.HasPrefix(got, "1 waiting · estimated wait ") {
		t.Errorf("the wait says %q", got)
	}
	if b.evalString(`document.getElementById('challenge').hidden && !document.getElementById('captcha-image')`) != "true" {
		t.Errorf("the challenge is still on the page after joining")
	}
	if b.evalString(`document.getElementById('buy-button').disabled`) != "true" {
		t.Errorf("the Buy button is enabled while waiting")
	}
	b.shot("waiting")

	b.waitJS(time.Until(start)+20*time.Second, "dora's turn", `document.getElementById('queue').dataset.state === 'admitted' && !document.getElementById('buy-button').disabled`)
	if got := b.text("queue-state"); got != "It is your turn! You may buy now." {
		t.Errorf("admitted, the room says %q", got)
	}
	b.shot("admitted")
	b.do(5*time.Second, "buy", chromedp.Click(chromedp.ID("buy-button")))
	b.waitJS(10*time.Second, "the purchase's captcha", `(() => { const c = document.getElementById('challenge'); const img = document.getElementById('captcha-image');
		return c && !c.hidden && c.dataset.purpose === 'buy' && !document.getElementById('challenge-purpose') && img && img.complete && img.naturalWidth > 0; })()`)
	ans, err = env.ch.AnswerForTest(context.Background(), b.attr("challenge", "data-challenge-id"))
	if err != nil {
		t.Fatal(err)
	}
	b.do(5*time.Second, "answer it", chromedp.SendKeys(chromedp.ID("captcha-answer"), ans), chromedp.Click(chromedp.ID("captcha-submit")))
	b.waitJS(20*time.Second, "the order to be confirmed", `document.getElementById('order-status').dataset.status === 'confirmed'`)
	b.waitJS(10*time.Second, "the stock", `document.getElementById('stock').textContent === '2 of 3 left'`)
	b.shot("bought")

	st := settled(t, env, item)
	if st.body["orders"] != float64(1) || st.body["stock_left"] != float64(2) || st.body["failed"] != float64(0) {
		t.Errorf("after one purchase: %v; want 1 order, 2 left, 0 failed", st.body)
	}
	for route, want := range map[string][]int{
		`^POST ` + base + `/queue/challenge$`: {200, 200},
		`^POST ` + base + `/queue$`:           {400, 200},
		`^POST ` + base + `/challenge$`:       {200},
		`^POST ` + base + `/path$`:            {200},
	} {
		if got := statuses(env.reqs.matching(route)); !slices.Equal(got, want) {
			t.Errorf("%s: statuses %v, want %v", route, got, want)
		}
	}
}

// TestBrowserWaitingRoomChallengePoW: joining a waiting room with
// queue_challenge (a proof-of-work sale) in the page, through everything a
// join can meet. The page's fetch is wrapped to hold the first join (the
// screenshot of the solved puzzle) and send it with a tampered answer: 400
// challenge_failed, so the page fetches a new challenge, saying why, and
// solves it in the Web Worker. The per-user challenge limit (2, then one
// every 5 s; joins count in it) answers 429: the page waits exactly
// Retry-After and sends the same request again. The first join that
// succeeds loses its answer on the way back: the page sends it again as it
// was and gets the same ticket (no third challenge, one ticket in the
// room). Then the turn comes and the purchase goes through: one order.
func TestBrowserWaitingRoomChallengePoW(t *testing.T) {
	t.Parallel()
	env := newBrowserEnv(t, browserRules(limit.Rule{Name: "challenge-per-user", Class: "challenge", Key: "user", Rate: 0.2, Burst: 2}), edge.Config{Difficulty: 16})
	b := newBrowser(t)
	b.registerAndLogin(env.pub.URL, "emil", "correct horse battery")
	item := queueSale(t, env, "pow", 2, time.Now(), nil)
	base := fmt.Sprintf("/api/items/%d", item)

	b.do(10*time.Second, "open the item", chromedp.Navigate(fmt.Sprintf("%s/#/items/%d", env.pub.URL, item)))
	b.waitJS(10*time.Second, "the waiting room", `(() => { const q = document.getElementById('queue');
		return q && !q.hidden && q.dataset.state === 'none' && !document.getElementById('queue-join').hidden && !document.getElementById('queue-join').disabled; })()`)
	b.evalString(fmt.Sprintf(`(() => {
		const real = window.fetch.bind(window);
		const join = /^\/api\/items\/%d\/queue$/;
		let tampered = false, lost = false;
		window.__joins = []; window.__held = false; window.__codes = [];
		window.fetch = async (url, init = {}) => {
			if (init.method !== 'POST' || !join.test(String(url))) return real(url, init);
			const rec = { sent: JSON.parse(init.body || 'null') };
			window.__joins.push(rec);
			if (!tampered) {
				tampered = true; rec.tampered = true; window.__held = true;
				await new Promise((resolve) => { window.__release = resolve; });
				window.__held = false;
				init = { ...init, body: JSON.stringify({ ...rec.sent, answer: 'tampered' }) };
			}
			const res = await real(url, init);
			rec.status = res.status;
			if (res.ok) rec.ticket = (await res.clone().json()).ticket;
			if (res.ok && !lost) { lost = true; rec.lost = true; throw new TypeError('Failed to fetch'); }
			return res;
		};
		new MutationObserver(() => {
			const code = document.getElementById('status').dataset.code;
			if (window.__codes[window.__codes.length - 1] !== code) window.__codes.push(code);
		}).observe(document.getElementById('status'), { attributes: true, childList: true, characterData: true, subtree: true });
		return true; })()`, item))
	b.do(5*time.Second, "join", chromedp.Click(chromedp.ID("queue-join")))
	b.waitJS(20*time.Second, "the solved puzzle, its join held", `window.__held === true`)
	for expr, want := range map[string]string{
		`document.getElementById('challenge').dataset.purpose`:                                                       "queue",
		`document.getElementById('challenge').dataset.kind`:                                                          "pow",
		`document.getElementById('challenge').hidden`:                                                                "false",
		`/^Puzzle solved after [\d,.\u00a0\u202f]+ hashes\.$/.test(document.getElementById('pow-text').textContent)`: "true",
		`document.getElementById('pow-progress').value === 1000`:                                                     "true",
		`document.getElementById('status').textContent`:                                                              "Checking your answer…",
		`document.getElementById('challenge-purpose').textContent`:                                                   "Joining the waiting room takes one check that you are not a bot.",
	} {
		if got := b.evalString(expr); got != want {
			t.Errorf("%s = %q, want %q", expr, got, want)
		}
	}
	first := b.attr("challenge", "data-challenge-id")
	b.shot("join-challenge-pow")
	b.evalString(`window.__release()`)
	b.waitJS(20*time.Second, "the wait of a 429", `document.getElementById('status').dataset.code === 'rate_limited'`)
	if got := b.text("status"); !strings.HasPrefix(got, "Too many requests — retrying in ") {
		t.Errorf("the wait says %q", got)
	}
	b.shot("join-rate-limited")
	// (the room's own polling may show the ticket of the lost join first)
	b.waitJS(40*time.Second, "the join", `document.getElementById('status').dataset.code === 'queue_joined'`)
	if got := b.text("status"); got != "You joined the waiting room." && got != "You joined the waiting room, and it is your turn." {
		t.Errorf("after joining the status says %q", got)
	}
	if st := b.attr("queue", "data-state"); st != "waiting" && st != "admitted" {
		t.Errorf("after joining the room is %q", st)
	}
	b.waitJS(20*time.Second, "emil's turn", `document.getElementById('queue').dataset.state === 'admitted' && !document.getElementById('buy-button').disabled`)
	if got := b.text("queue-state"); got != "It is your turn! You may buy now." {
		t.Errorf("admitted, the room says %q", got)
	}
	b.shot("admitted")

	// What the page sent: the tampered answer was refused; the first answer
	// that joined was lost and sent again as it was, and got the same ticket.
	var joins []struct {
		Sent struct {
			ChallengeID string `json:"challenge_id"`
			Answer      string `json:"answer"`
		} `json:"sent"`
		Status   int    `json:"status"`
		Ticket   string `json:"ticket"`
		Tampered bool   `json:"tampered"`
		Lost     bool   `json:"lost"`
	}
	b.evalJSON(`window.__joins`, &joins)
	var ok []int
	for i, j := range joins {
		if j.Status != 429 {
			ok = append(ok, i)
		}
	}
	if len(ok) != 3 {
		t.Fatalf("joins sent (429s aside): %+v; want the tampered one, the lost one and its resend", joins)
	}
	tam, lostJ, again := joins[ok[0]], joins[ok[1]], joins[ok[2]]
	if !tam.Tampered || tam.Status != 400 || tam.Sent.ChallengeID != first {
		t.Errorf("the tampered join: %+v (challenge %s)", tam, first)
	}
	if !lostJ.Lost || lostJ.Status != 200 || again.Lost || again.Status != 200 {
		t.Errorf("the lost join %+v and its resend %+v", lostJ, again)
	}
	if lostJ.Sent != again.Sent || lostJ.Sent.ChallengeID == first || lostJ.Ticket == "" || lostJ.Ticket != again.Ticket {
		t.Errorf("the resend %+v is not the lost join %+v (same answer, same ticket)", again, lostJ)
	}
	var codes []string
	b.evalJSON(`window.__codes`, &codes)
	if i, j := slices.Index(codes, "challenge_failed"), slices.Index(codes, "network"); i < 0 || j < i || slices.Index(codes, "rate_limited") < 0 || codes[len(codes)-1] != "queue_joined" {
		t.Errorf("the status codes said: %v; want challenge_failed, rate_limited, network, then queue_joined last", codes)
	}

	b.do(5*time.Second, "buy", chromedp.Click(chromedp.ID("buy-button")))
	b.waitJS(40*time.Second, "the order to be confirmed", `document.getElementById('order-status').dataset.status === 'confirmed'`)
	b.waitJS(10*time.Second, "the stock", `document.getElementById('stock').textContent === '1 of 2 left'`)
	if b.attr("challenge", "data-purpose") != "buy" {
		t.Errorf("the purchase's challenge was not the buy step's")
	}
	b.shot("bought")

	st := settled(t, env, item)
	if st.body["orders"] != float64(1) || st.body["stock_left"] != float64(1) || st.body["failed"] != float64(0) {
		t.Errorf("after one purchase: %v; want 1 order, 1 left, 0 failed", st.body)
	}
	if q, _ := st.body["queue"].(map[string]any); q == nil || q["admitted_total"] != float64(1) || q["waiting"] != float64(0) {
		t.Errorf("the room after one join: %v; want one admitted in all, nobody waiting", st.body["queue"])
	}
	// The server saw: challenges 200, 200 (and 429s); joins 400, 200, 200
	// (and 429s); each 429 followed by the same request Retry-After later.
	for route, want := range map[string][]int{
		`^POST ` + base + `/queue/challenge$`: {200, 200},
		`^POST ` + base + `/queue$`:           {400, 200, 200},
	} {
		reqs := env.reqs.matching(route)
		var got []int
		for i, r := range reqs {
			if r.status != 429 {
				got = append(got, r.status)
				continue
			}
			secs, err := strconv.Atoi(r.retryAfter)
			if err != nil || secs < 1 || i+1 >= len(reqs) {
				t.Errorf("%s: a 429 with Retry-After %q, then %d more requests", route, r.retryAfter, len(reqs)-i-1)
				continue
			}
			gap, want := reqs[i+1].at.Sub(r.at), time.Duration(secs)*time.Second
			if gap < want-20*time.Millisecond || gap > want+time.Second {
				t.Errorf("%s: sent again %v after a 429 with Retry-After %d", route, gap, secs)
			}
			t.Logf("%s: 429 with Retry-After %d s; sent again %v later", route, secs, gap.Round(time.Millisecond))
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: statuses %v (429s aside), want %v", route, got, want)
		}
	}
	if n := len(env.reqs.matching(`^POST ` + base + `/(queue|queue/challenge)$`)); n < 6 {
		t.Errorf("no 429 on the way: %d requests", n)
	}
}

// TestBrowserWaitingRoomRefusals: what the room says when joining cannot
// work. A sale the fresh account may not take part in (min_account_age)
// refuses it at the challenge, before any work (409 not_eligible): the page
// says so in the room and shows no challenge. A sold-out sale and an ended
// one offer no join at all and say why.
func TestBrowserWaitingRoomRefusals(t *testing.T) {
	t.Parallel()
	env := newBrowserEnv(t, browserRules(), edge.Config{Difficulty: 8})
	b := newBrowser(t)
	b.registerAndLogin(env.pub.URL, "fern", "correct horse battery")
	now := time.Now()
	young := queueSale(t, env, "pow", 2, now, map[string]any{"min_account_age": "1h"})
	ended := queueSale(t, env, "pow", 2, now, map[string]any{"ends_at": now.Add(2 * time.Second).UTC().Format(time.RFC3339Nano)})
	soldOut := queueSale(t, env, "pow", 1, now, map[string]any{"queue_challenge": false})

	// Another shopper takes soldOut's only unit through its waiting room.
	gus := shopper{e: env.edgeEnv, token: env.sessions("gus")["gus"]}
	pass := ""
	for deadline := time.Now().Add(15 * time.Second); pass == ""; {
		j := gus.do("POST", fmt.Sprintf("/api/items/%d/queue", soldOut), nil)
		if j.status != 200 {
			t.Fatalf("gus joins: %d %v", j.status, j.body)
		}
		pass = j.str("pass")
		if time.Now().After(deadline) {
			t.Fatalf("gus was not admitted: %v", j.body)
		}
		if pass == "" {
			time.Sleep(500 * time.Millisecond)
		}
	}
	if got, _ := buyWithPass(gus, soldOut, pass); got != "202" {
		t.Fatalf("gus buys the only unit: %s", got)
	}

	// not_eligible, at the challenge.
	b.do(10*time.Second, "open the young-accounts-only sale", chromedp.Navigate(fmt.Sprintf("%s/#/items/%d", env.pub.URL, young)))
	b.waitJS(10*time.Second, "the join button", `document.getElementById('queue').dataset.state === 'none' && !document.getElementById('queue-join').hidden && !document.getElementById('queue-join').disabled`)
	b.do(5*time.Second, "join", chromedp.Click(chromedp.ID("queue-join")))
	b.waitJS(10*time.Second, "the refusal", `document.getElementById('queue-state').dataset.code === 'not_eligible'`)
	const notEligible = "Your account cannot take part in this sale: it is too new, or accounts from its network already hold the units allowed. If you signed in long ago, sign in again."
	if got := b.text("queue-state"); got != notEligible {
		t.Errorf("the room says %q, want %q", got, notEligible)
	}
	if got, code := b.text("status"), b.attr("status", "data-code"); got != notEligible || code != "not_eligible" {
		t.Errorf("the status says %q (%s)", got, code)
	}
	if b.evalString(`document.getElementById('challenge').hidden && !document.getElementById('challenge').dataset.purpose`) != "true" {
		t.Errorf("a challenge was shown to an account the sale refuses")
	}
	if b.evalString(`!document.getElementById('queue-join').hidden && !document.getElementById('queue-join').disabled`) != "true" {
		t.Errorf("the join button is not offered again after the refusal")
	}
	b.shot("join-not-eligible")
	// (the room keeps saying it: its ticker redraws every 500 ms)
	time.Sleep(time.Second)
	if got := b.text("queue-state"); got != notEligible {
		t.Errorf("a second later the room says %q", got)
	}
	base := fmt.Sprintf("/api/items/%d", young)
	for route, want := range map[string][]int{`^POST ` + base + `/queue/challenge$`: {409}, `^POST ` + base + `/queue$`: nil} {
		if got := statuses(env.reqs.matching(route)); !slices.Equal(got, want) {
			t.Errorf("%s: statuses %v, want %v", route, got, want)
		}
	}

	// Sold out and ended: no join, and why.
	for _, c := range []struct {
		name string
		item int64
		text string
		code string
	}{
		{"sold-out", soldOut, "Sold out: no unit is left, so the waiting room takes no one.", "sold_out"},
		{"ended", ended, "The sale is over: the waiting room is closed.", "not_live"},
	} {
		time.Sleep(time.Until(now.Add(2500 * time.Millisecond))) // ended has ended
		seen := env.reqs.count()
		b.do(10*time.Second, "open the "+c.name+" sale", chromedp.Navigate(fmt.Sprintf("%s/#/items/%d", env.pub.URL, c.item)))
		b.waitJS(10*time.Second, "the closed room", fmt.Sprintf(`(document.getElementById('queue-state') || { dataset: {} }).dataset.code === %q`, c.code))
		if got := b.text("queue-state"); got != c.text {
			t.Errorf("%s: the room says %q, want %q", c.name, got, c.text)
		}
		if b.evalString(`document.getElementById('queue-join').hidden && document.getElementById('buy-button').disabled`) != "true" {
			t.Errorf("%s: a join or buy button is offered", c.name)
		}
		b.shot("room-" + c.name)
		if n := len(env.reqs.since(seen, fmt.Sprintf(`^POST /api/items/%d/queue`, c.item))); n != 0 {
			t.Errorf("%s: the page sent %d joins", c.name, n)
		}
	}
}
