package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"seckill"
	"seckill/edge"
	"seckill/internal/app"
)

// drawVerifier returns the python3 program of docs/DRAW.md.
func drawVerifier(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile("../docs/DRAW.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```python\n# verify_draw.py")
	if !ok {
		t.Fatal("docs/DRAW.md has no python verifier")
	}
	src, _, _ := strings.Cut(rest, "```")
	return "# verify_draw.py" + src
}

// verifyDraw runs the documented python3 verifier on the raw answers of
// GET /api/items/{id}/draw and /draw/entries, and returns its winners
// and waitlist.
func verifyDraw(t *testing.T, drawJSON, entriesJSON []byte) (winners, waitlist []string) {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is needed to verify the draw")
	}
	dir := t.TempDir()
	files := map[string][]byte{"verify_draw.py": []byte(drawVerifier(t)), "draw.json": drawJSON, "entries.json": entriesJSON}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(py, filepath.Join(dir, "verify_draw.py"), filepath.Join(dir, "draw.json"), filepath.Join(dir, "entries.json"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("verify_draw.py: %v\n%s", err, stderr.String())
	}
	var res struct{ Winners, Waitlist []string }
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("verify_draw.py printed %q: %v", out, err)
	}
	return res.Winners, res.Waitlist
}

// raw GETs a public URL and returns the body as it came.
func raw(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	if _, err := fmt.Fprint(&b, readAll(resp)); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b.String())
	}
	return []byte(b.String())
}

func readAll(resp *http.Response) string {
	var sb strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			return sb.String()
		}
	}
}

func waitUntil(t *testing.T, at time.Time) {
	t.Helper()
	time.Sleep(time.Until(at) + 100*time.Millisecond)
}

// TestDrawEndToEnd runs a draw on the real servers through the edge:
// the commitment before entries open, one entry per account under
// concurrent repeats, no entry after close, the entry-list hash before the
// draw, the seed only at draw_at, the documented python3 verifier finding
// the same winners from the published seed and the exported list, winners
// buying through the normal purchase path within their window, everybody
// else refused before the reservation script, an unclaimed unit going to
// the waitlist's first place with its own window, a backend started
// afterwards drawing the same, and every invariant of the sale at the end.
func TestDrawEndToEnd(t *testing.T) {
	t.Parallel()
	env := newEdgeEnv(t, shippedRules(t), edge.Config{Difficulty: 4})
	ctx := context.Background()
	// Each phase's requests must fit in its window on a busy machine: the
	// setup before open (1 to 2 s with open at +2 s was tight), 40-odd
	// entries while open, and about 15 requests between close and the
	// draw (1 s was tight: a late one would see the seed).
	now := time.Now().Truncate(time.Second)
	open := now.Add(4 * time.Second)
	closeAt := open.Add(6 * time.Second)
	drawAt := closeAt.Add(3 * time.Second)
	const stock, waitlist, entrants = 3, 2, 12
	cw := 4 * time.Second
	a := env.admin("POST", "/admin/items", map[string]any{
		"name": "sneaker", "price_cents": 19900, "stock": stock, "challenge": "pow",
		"starts_at": drawAt.UTC().Format(time.RFC3339Nano), "ends_at": drawAt.Add(time.Minute).UTC().Format(time.RFC3339Nano),
		"allocation": "draw", "entries_open_at": open.UTC().Format(time.RFC3339Nano), "entries_close_at": closeAt.UTC().Format(time.RFC3339Nano),
		"draw_at": drawAt.UTC().Format(time.RFC3339Nano), "claim_window": cw.String(), "waitlist": waitlist,
	})
	if a.status != 201 {
		t.Fatalf("create draw item: %d %v", a.status, a.body)
	}
	id := int64(a.body["id"].(float64))
	commitment, _ := a.body["item"].(map[string]any)["draw_commitment"].(string)
	if len(commitment) != 64 {
		t.Fatalf("the created item carries no commitment: %v", a.body["item"])
	}
	// An admin cannot choose the commitment (nor so the seed).
	if b := env.admin("POST", "/admin/items", map[string]any{
		"name": "rigged", "price_cents": 1, "stock": 1, "starts_at": drawAt.UTC().Format(time.RFC3339), "ends_at": drawAt.Add(time.Minute).UTC().Format(time.RFC3339),
		"allocation": "draw", "entries_open_at": open.UTC().Format(time.RFC3339), "entries_close_at": closeAt.UTC().Format(time.RFC3339),
		"draw_at": drawAt.UTC().Format(time.RFC3339), "draw_commitment": commitment,
	}); b.status != 400 || b.code() != "invalid" {
		t.Errorf("an admin-chosen commitment: %d %v, want 400 invalid", b.status, b.body)
	}

	names := make([]string, entrants+1)
	for i := range names {
		names[i] = fmt.Sprintf("drawer%02d", i)
	}
	tokens := env.sessions(names...)
	userIDs := map[string]int64{}
	for _, n := range names {
		u, err := env.s.db.UserByName(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		userIDs[n] = u.ID
	}
	sh := func(name string) shopper {
		return shopper{e: env, token: tokens[name], ip: fmt.Sprintf("10.9.%d.1", userIDs[name]%250)}
	}
	drawPath := fmt.Sprintf("/api/items/%d/draw", id)
	entryPath := fmt.Sprintf("/api/items/%d/entry", id)

	// Before entries open: the commitment is public, nothing else.
	d := sh(names[0]).do("GET", drawPath, nil)
	if d.status != 200 || d.str("state") != "upcoming" || d.str("commitment") != commitment || d.str("seed") != "" || d.str("entries_hash") != "" {
		t.Fatalf("draw before entries open: %d %v", d.status, d.body)
	}
	if e := sh(names[0]).do("POST", entryPath, nil); e.status != 409 || e.code() != "not_live" {
		t.Errorf("entry before open: %d %v, want 409 not_live", e.status, e.body)
	}
	if e := sh(names[0]).do("GET", drawPath+"/entries", nil); e.status != 409 || e.code() != "not_live" {
		t.Errorf("entry list before close: %d %v, want 409 not_live", e.status, e.body)
	}
	waitUntil(t, open)

	// Entries: one per account. The first entrant sends 5 at once (the
	// path-per-user bucket's burst) through the edge, the second 20 at once
	// straight to the backend.
	entryIDs := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	created := 0
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := sh(names[0]).do("POST", entryPath, nil)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case e.status == 201:
				created++
			case e.status != 200:
				t.Errorf("concurrent entry: %d %v", e.status, e.body)
				return
			}
			if prev, ok := entryIDs[names[0]]; ok && prev != e.str("entry_id") {
				t.Errorf("two entry ids for one account: %s, %s", prev, e.str("entry_id"))
			}
			entryIDs[names[0]] = e.str("entry_id")
		}()
	}
	wg.Wait()
	if created != 1 {
		t.Errorf("%d of 5 concurrent entries of one account answered 201, want 1", created)
	}
	created = 0
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := env.s.svc.Enter(ctx, id, userIDs[names[1]])
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("concurrent backend entry: %v", err)
				return
			}
			if st.Created {
				created++
			}
		}()
	}
	wg.Wait()
	if created != 1 {
		t.Errorf("%d of 20 concurrent backend entries of one account were created, want 1", created)
	}
	for _, n := range names[1:entrants] {
		e := sh(n).do("POST", entryPath, nil)
		if want := map[bool]int{true: 200, false: 201}[n == names[1]]; e.status != want || e.str("state") != "entered" || len(e.str("entry_id")) != 64 {
			t.Fatalf("entry of %s: %d %v", n, e.status, e.body)
		}
		entryIDs[n] = e.str("entry_id")
		if again := sh(n).do("POST", entryPath, nil); again.status != 200 || again.str("entry_id") != e.str("entry_id") {
			t.Errorf("repeated entry of %s: %d %v", n, again.status, again.body)
		}
	}
	if d := sh(names[0]).do("GET", drawPath, nil); d.str("state") != "open" || d.body["entries"].(float64) != entrants || d.str("seed") != "" {
		t.Errorf("draw while open: %v", d.body)
	}
	// No unit before the draw, for an entrant either: refused at the
	// challenge by the edge, and by the backend before the script.
	if c := sh(names[1]).challenge(id); c.status != 409 || c.code() != "not_live" {
		t.Errorf("challenge before the draw: %d %v, want 409 not_live (the sale starts at draw_at)", c.status, c.body)
	}
	if _, err := env.s.svc.Reserve(ctx, id, seckill.Account{ID: userIDs[names[1]]}, "early-"+names[1]); seckill.ErrorCode(err) != seckill.ENotDrawn {
		t.Errorf("backend reservation before the draw: %v, want not_drawn", err)
	}
	waitUntil(t, closeAt)

	// Closed: nobody new gets in; the hash and the list are public.
	late := names[entrants]
	if e := sh(late).do("POST", entryPath, nil); e.status != 409 || e.code() != "not_live" {
		t.Errorf("entry after close: %d %v, want 409 not_live", e.status, e.body)
	}
	if e := sh(late).do("GET", entryPath, nil); e.status != 200 || e.str("state") != "none" {
		t.Errorf("entry state of a late account: %d %v", e.status, e.body)
	}
	d = sh(names[0]).do("GET", drawPath, nil)
	if d.str("state") != "closed" || len(d.str("entries_hash")) != 64 || d.str("seed") != "" || d.body["entries"].(float64) != entrants {
		t.Fatalf("draw after close: %v", d.body)
	}
	hash := d.str("entries_hash")
	list := sh(names[0]).do("GET", drawPath+"/entries", nil)
	var ids []string
	for _, x := range list.body["entries"].([]any) {
		ids = append(ids, x.(string))
	}
	if len(ids) != entrants || !slices.IsSorted(ids) || list.str("entries_hash") != hash {
		t.Fatalf("entry list: %v", list.body)
	}
	h := sha256.New()
	for _, x := range ids {
		b, _ := hex.DecodeString(x)
		h.Write(b)
	}
	if hex.EncodeToString(h.Sum(nil)) != hash {
		t.Errorf("the published hash is not SHA-256 of the sorted ids")
	}
	for n, eid := range entryIDs {
		if !slices.Contains(ids, eid) {
			t.Errorf("%s's entry %s is not in the list", n, eid)
		}
	}
	// The seed is in no answer before draw_at, admin ones included.
	// (The test reads the secret from the database to look for it.)
	rec, err := env.s.db.Draw(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	secret := hex.EncodeToString(rec.Seed)
	for _, path := range []string{"/admin/items", fmt.Sprintf("/admin/items/%d/draw", id), fmt.Sprintf("/admin/items/%d/stats", id),
		fmt.Sprintf("/admin/items/%d/draw/entries", id), "/admin/audit"} {
		if r := env.admin("GET", path, nil); r.status != 200 || strings.Contains(fmt.Sprint(r.body), secret) {
			t.Errorf("GET %s before the draw: %d, tells the seed: %v", path, r.status, strings.Contains(fmt.Sprint(r.body), secret))
		}
	}
	for _, path := range []string{"/api/items", fmt.Sprintf("/api/items/%d", id), drawPath, drawPath + "/entries", entryPath} {
		if r := sh(names[2]).do("GET", path, nil); r.status != 200 || strings.Contains(fmt.Sprint(r.body), secret) {
			t.Errorf("GET %s before the draw: %d, tells the seed: %v", path, r.status, strings.Contains(fmt.Sprint(r.body), secret))
		}
	}
	if c := sh(names[1]).challenge(id); c.status != 409 || c.code() != "not_live" {
		t.Errorf("challenge after close, before the draw: %d %v", c.status, c.body)
	}
	if _, err := env.s.svc.Reserve(ctx, id, seckill.Account{ID: userIDs[names[1]]}, "closed-"+names[1]); seckill.ErrorCode(err) != seckill.ENotDrawn {
		t.Errorf("backend reservation after close, before the draw: %v, want not_drawn", err)
	}
	waitUntil(t, drawAt)

	// Drawn: the seed opens the commitment, and the documented verifier
	// finds the published order from the seed and the exported list.
	drawJSON := raw(t, env.pub.URL+drawPath)
	entriesJSON := raw(t, env.pub.URL+drawPath+"/entries")
	var view seckill.DrawView
	if err := json.Unmarshal(drawJSON, &view); err != nil {
		t.Fatal(err)
	}
	seed, _ := hex.DecodeString(view.Seed)
	if sum := sha256.Sum256(seed); view.State != seckill.DrawDrawn || hex.EncodeToString(sum[:]) != commitment || view.EntriesHash != hash {
		t.Fatalf("drawn: %+v", view)
	}
	winners, wl := verifyDraw(t, drawJSON, entriesJSON)
	if len(winners) != stock || len(wl) != waitlist {
		t.Fatalf("verifier: winners %v waitlist %v", winners, wl)
	}
	byEntry := map[string]string{}
	for n, eid := range entryIDs {
		byEntry[eid] = n
	}
	states := map[string]seckill.EntryState{}
	for _, n := range names[:entrants] {
		e := sh(n).do("GET", entryPath, nil)
		var st seckill.EntryState
		b, _ := json.Marshal(e.body)
		_ = json.Unmarshal(b, &st)
		states[n] = st
	}
	for i, eid := range winners {
		n := byEntry[eid]
		if st := states[n]; st.State != seckill.EntryWon || st.Place != i+1 || !st.ClaimFrom.Equal(drawAt) || !st.ClaimUntil.Equal(drawAt.Add(cw)) {
			t.Errorf("winner %d (%s) says %+v", i+1, n, st)
		}
	}
	for i, eid := range wl {
		if st := states[byEntry[eid]]; st.State != seckill.EntryWaitlisted || st.Place != stock+i+1 {
			t.Errorf("waitlist %d says %+v", i+1, st)
		}
	}
	lost := 0
	for _, st := range states {
		if st.State == seckill.EntryLost {
			lost++
		}
	}
	if lost != entrants-stock-waitlist {
		t.Errorf("%d lost, want %d", lost, entrants-stock-waitlist)
	}

	// Winners 1 and 2 buy; winner 3 does not. Everybody else is refused
	// before the reservation script (edge and backend).
	accepted := map[int64]string{}
	for _, eid := range winners[:2] {
		n := byEntry[eid]
		b := sh(n).buy(id, sh(n).getPath(id))
		if b.status != 202 {
			t.Fatalf("winner %s buys: %d %v", n, b.status, b.body)
		}
		accepted[userIDs[n]] = b.str("order_ref")
	}
	for _, eid := range append(slices.Clone(wl), ids...) {
		n := byEntry[eid]
		if slices.Contains(winners, eid) {
			continue
		}
		if c := sh(n).challenge(id); c.status != 409 || c.code() != "not_drawn" {
			t.Errorf("challenge of non-winner %s: %d %v", n, c.status, c.body)
		}
		if _, err := env.s.svc.Reserve(ctx, id, seckill.Account{ID: userIDs[n]}, "sneak-"+n); seckill.ErrorCode(err) != seckill.ENotDrawn {
			t.Errorf("backend reservation of non-winner %s: %v, want not_drawn", n, err)
		}
	}
	if _, err := env.s.svc.Reserve(ctx, id, seckill.Account{ID: userIDs[late]}, "sneak-late"); seckill.ErrorCode(err) != seckill.ENotDrawn {
		t.Errorf("backend reservation of an account without entry: %v, want not_drawn", err)
	}

	// Winner 3's window passes unclaimed: after the pause the waitlist's
	// first place gets that unit with its own window, the second does not.
	round1 := drawAt.Add(cw + 5*time.Second)
	waitUntil(t, round1)
	w1, w2, third := byEntry[wl[0]], byEntry[wl[1]], byEntry[winners[2]]
	st := sh(w1).do("GET", entryPath, nil)
	if until, _ := time.Parse(time.RFC3339Nano, st.str("claim_until")); st.str("state") != "won" || !until.Equal(round1.Add(cw)) {
		t.Fatalf("first of the waitlist after round 0: %v", st.body)
	}
	if st := sh(w2).do("GET", entryPath, nil); st.str("state") != "waitlisted" {
		t.Errorf("second of the waitlist: %v", st.body)
	}
	if c := sh(third).challenge(id); c.status != 409 || c.code() != "not_drawn" {
		t.Errorf("winner after the window: %d %v", c.status, c.body)
	}
	b := sh(w1).buy(id, sh(w1).getPath(id))
	if b.status != 202 {
		t.Fatalf("waitlisted winner buys: %d %v", b.status, b.body)
	}
	accepted[userIDs[w1]] = b.str("order_ref")
	if d := sh(names[0]).do("GET", drawPath, nil); len(d.body["rounds"].([]any)) != 2 {
		t.Errorf("rounds: %v", d.body["rounds"])
	}

	// Nothing changed the draw: a backend started now (a restart) draws
	// the same order; entering again changes nothing; no route edits items.
	ctx2, stop2 := context.WithCancel(ctx)
	b2, err := app.StartBackend(ctx2, app.BackendConfig{Stores: env.s.stores(env.s.amqpURL), Listen: "127.0.0.1:0", Token: testBackendToken, Log: quietLog(t)})
	if err != nil {
		stop2()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stop2()
		if err := b2.Wait(); err != nil {
			t.Errorf("second backend: %v", err)
		}
	})
	v2, err := b2.Service().Draw(ctx, id)
	if err != nil || v2.Seed != view.Seed || v2.EntriesHash != hash || !slices.Equal(v2.Order, view.Order) {
		t.Errorf("a new backend draws %+v, %v", v2, err)
	}
	if e := sh(names[3]).do("POST", entryPath, nil); e.status != 200 || e.str("entry_id") != entryIDs[names[3]] {
		t.Errorf("entry after the draw: %d %v", e.status, e.body)
	}
	for _, m := range []string{"PUT", "PATCH", "DELETE"} {
		if r := env.admin(m, fmt.Sprintf("/admin/items/%d", id), map[string]any{"stock": 100}); r.status < 400 || r.status == 500 {
			t.Errorf("%s /admin/items/%d: %d", m, id, r.status)
		}
	}
	if d := sh(names[0]).do("GET", drawPath, nil); d.str("seed") != view.Seed || d.str("entries_hash") != hash || d.body["entries"].(float64) != entrants {
		t.Errorf("draw changed: %v", d.body)
	}

	// Invariants: three units sold to three accounts, stored once, stock 0.
	env.s.waitOrders(id, stock, 30*time.Second)
	item, err := env.s.db.Item(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	env.s.checkFinal(item, accepted)
}
