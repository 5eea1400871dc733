package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"seckill/edge"
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
