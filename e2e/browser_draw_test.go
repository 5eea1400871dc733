package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"seckill/edge"
)

// TestBrowserDraw: the draw pages in Chromium. A shopper registers, enters
// three draws from their pages while entries are open (entered), sees the
// entry-list hash once they close, then: in the draw with one unit and no
// other entrant the page says won with the claim deadline and buys through
// the usual Buy button (order confirmed); in a draw with no unit and a
// waitlist of one it says waitlisted (Buy stays off); in one with no unit
// and no waitlist it says lost. The dashboard shows the draw's state,
// entries, commitment, hash, seed and rounds. Screenshots of each state.
func TestBrowserDraw(t *testing.T) {
	t.Parallel()
	env := newBrowserEnv(t, browserRules(), edge.Config{Difficulty: 4})
	b := newBrowser(t)
	b.registerAndLogin(env.pub.URL, "dora", "correct horse battery")

	now := time.Now()
	open := now.Add(3 * time.Second)
	closeAt := open.Add(10 * time.Second)
	drawAt := closeAt.Add(time.Second)
	create := func(name string, stock, waitlist int) int64 {
		body := map[string]any{
			"name": name, "price_cents": 12900, "stock": stock, "challenge": "pow",
			"starts_at": drawAt.UTC().Format(time.RFC3339Nano), "ends_at": drawAt.Add(5 * time.Minute).UTC().Format(time.RFC3339Nano),
			"allocation": "draw", "entries_open_at": open.UTC().Format(time.RFC3339Nano), "entries_close_at": closeAt.UTC().Format(time.RFC3339Nano),
			"draw_at": drawAt.UTC().Format(time.RFC3339Nano), "claim_window": "2m",
		}
		if waitlist > 0 {
			body["waitlist"] = waitlist
		}
		a := env.admin("POST", "/admin/items", body)
		if a.status != 201 {
			t.Fatalf("create %s: %d %v", name, a.status, a.body)
		}
		return int64(a.body["id"].(float64))
	}
	won, waitlisted, lost := create("Sneaker (1 unit)", 1, 0), create("Sneaker (waitlist)", 0, 1), create("Sneaker (none)", 0, 0)

	page := func(id int64) string { return fmt.Sprintf("%s/#/items/%d", env.pub.URL, id) }
	drawState := func(state string) string {
		return fmt.Sprintf(`(() => { const d = document.getElementById('draw'); return d && d.dataset.loaded === 'true' && d.dataset.drawState === %q; })()`, state)
	}
	entryState := func(state string) string {
		return fmt.Sprintf(`(document.getElementById('entry-state')||{dataset:{}}).dataset.state === %q`, state)
	}

	b.do(10*time.Second, "open the draw page", chromedp.Navigate(page(won)))
	b.waitJS(5*time.Second, "the draw before entries open", drawState("upcoming"))
	if !strings.HasPrefix(b.text("draw-proof"), "Commitment") || len(b.evalString(`document.querySelector('[data-testid=proof-commitment] code').textContent`)) != 64 {
		t.Errorf("the commitment is not shown before entries open: %q", b.text("draw-proof"))
	}
	if b.evalString(`document.getElementById('enter-button').hidden`) != "true" {
		t.Errorf("the Enter button is offered before entries open")
	}
	b.shot("draw-upcoming")

	for i, id := range []int64{won, waitlisted, lost} {
		b.do(10*time.Second, "open a draw page", chromedp.Navigate(page(id)))
		b.waitJS(time.Until(open)+8*time.Second, "entries open", drawState("open")+` && !document.getElementById('enter-button').hidden`)
		if i == 0 {
			b.shot("draw-open")
		}
		b.do(5*time.Second, "enter", chromedp.Click(chromedp.ID("enter-button")))
		b.waitJS(10*time.Second, "entered", entryState("entered")+` && document.getElementById('enter-button').hidden`)
		if i == 0 {
			b.shot("draw-entered")
		}
	}

	b.do(10*time.Second, "back to the first draw", chromedp.Navigate(page(won)))
	b.waitJS(time.Until(closeAt)+8*time.Second, "entries closed", `!!document.querySelector('[data-testid=proof-hash] code')`)
	if got := b.text("draw-entries"); got != "1" {
		t.Errorf("entries shown %q, want 1", got)
	}
	b.shot("draw-closed")

	// Drawn: won, with the deadline, and the Buy button works.
	b.waitJS(time.Until(drawAt)+8*time.Second, "won", drawState("drawn")+` && `+entryState("won")+` && !!document.querySelector('[data-testid=proof-seed] code')`)
	if got := b.text("entry-state"); !strings.Contains(got, "You won") || !strings.Contains(got, "buy before") {
		t.Errorf("the winner's page says %q", got)
	}
	b.waitJS(10*time.Second, "the Buy button", `document.getElementById('main').dataset.state === 'live' && !document.getElementById('buy-button').disabled && document.getElementById('claim-countdown').dataset.open === 'true'`)
	b.shot("draw-won")
	b.do(5*time.Second, "buy", chromedp.Click(chromedp.ID("buy-button")))
	b.waitJS(30*time.Second, "the order to be confirmed", `document.getElementById('order-status').dataset.status === 'confirmed'`)
	b.shot("draw-won-bought")

	b.do(10*time.Second, "the waitlisted draw", chromedp.Navigate(page(waitlisted)))
	b.waitJS(10*time.Second, "waitlisted", drawState("drawn")+` && `+entryState("waitlisted"))
	if b.evalString(`document.getElementById('buy-button').disabled`) != "true" {
		t.Errorf("the Buy button is offered to a waitlisted entry")
	}
	b.shot("draw-waitlisted")

	b.do(10*time.Second, "the lost draw", chromedp.Navigate(page(lost)))
	b.waitJS(10*time.Second, "lost", drawState("drawn")+` && `+entryState("lost"))
	if b.evalString(`document.getElementById('buy-button').disabled`) != "true" {
		t.Errorf("the Buy button is offered to a lost entry")
	}
	b.shot("draw-lost")

	// The dashboard's draw panel.
	b.do(10*time.Second, "open the dashboard", chromedp.Navigate(env.adm.URL+"/"),
		chromedp.WaitVisible(chromedp.ID("admin-token")),
		chromedp.SendKeys(chromedp.ID("admin-token"), env.token), chromedp.Click(chromedp.ID("token-submit")))
	b.waitJS(10*time.Second, "the sales table", fmt.Sprintf(`!!document.getElementById('watch-%d')`, won))
	b.do(5*time.Second, "watch", chromedp.Click(chromedp.ID(fmt.Sprintf("watch-%d", won))))
	b.waitJS(10*time.Second, "the draw panel", fmt.Sprintf(`(() => { const p = document.getElementById('draw-panel'); return !p.hidden && p.dataset.item === '%d' && p.dataset.drawState === 'drawn'; })()`, won))
	if got := b.text("draw-entries"); got != "1" {
		t.Errorf("dashboard entries %q", got)
	}
	if b.evalString(`!!document.querySelector('[data-testid=draw-seed] code') && document.getElementById('draw-rounds').children.length >= 1`) != "true" {
		t.Errorf("the dashboard's draw panel lacks the seed or the rounds: %q", b.text("draw-panel"))
	}
	b.shot("dashboard-draw")
}
