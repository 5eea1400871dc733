package edge_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"seckill"
	"seckill/edge"
)

// sendPass is env.send with an admission pass header.
func (env *outageEnv) sendPass(t *testing.T, method, path string, user int64, pass string, body any) reply {
	t.Helper()
	var rd io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = strings.NewReader(string(raw))
	}
	req, err := http.NewRequest(method, env.pub.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	tok, _ := env.e.Sessions().Sign(user, fmt.Sprintf("u%d", user))
	req.Header.Set("Authorization", "Bearer "+tok)
	if pass != "" {
		req.Header.Set(edge.PassHeader, pass)
	}
	resp, err := outageClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	r := reply{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), body: map[string]any{}}
	_ = json.NewDecoder(resp.Body).Decode(&r.body)
	r.code, _ = r.body["code"].(string)
	return r
}

// TestQueueRoutes: a waiting-room sale through the public API. Without a
// pass a challenge, a path and a purchase are 409 not_admitted; joining
// twice is one ticket; the admitted user gets a pass that opens the
// purchase, for that user only; a race sale has no waiting room (409); the
// edge's Redis down makes joining and polling 503 with Retry-After, never
// 500.
func TestQueueRoutes(t *testing.T) {
	env := newOutageEnv(t)
	now := time.Now()
	cr := env.admin(t, "POST", "/admin/items", map[string]any{
		"name": "queued", "stock": 1, "starts_at": now.Add(-time.Second), "ends_at": now.Add(time.Hour), "challenge": "none",
		"allocation": "queue", "new_users_per_minute": 6000, "total_active_users": 1, "session_duration": "1m"})
	if cr.status != 201 {
		t.Fatalf("creating a queue sale: %d %v", cr.status, cr.body)
	}
	id := int64(cr.body["id"].(float64))
	base := fmt.Sprintf("/api/items/%d", id)
	testenvEventually(t, func() bool { return env.do(t, "GET", base, 0, nil).status == 200 })

	const a, b = 41, 42
	for _, r := range []struct{ method, path string }{{"POST", "/challenge"}, {"POST", "/path"}, {"POST", "/buy/" + strings.Repeat("0", 32)}} {
		if got := env.do(t, r.method, base+r.path, a, map[string]any{}); got.status != 409 || got.code != string(seckill.ENotAdmitted) {
			t.Fatalf("%s without a pass: %d %v", r.path, got.status, got.body)
		}
	}
	if got := env.do(t, "GET", base+"/queue", a, nil); got.status != 404 {
		t.Fatalf("polling without a ticket: %d %v", got.status, got.body)
	}
	j1 := env.do(t, "POST", base+"/queue", a, nil)
	j2 := env.do(t, "POST", base+"/queue", a, nil)
	if j1.status != 200 || j1.body["ticket"] == "" || j1.body["ticket"] != j2.body["ticket"] {
		t.Fatalf("joining twice: %v then %v", j1.body, j2.body)
	}
	jb := env.do(t, "POST", base+"/queue", b, nil)
	if jb.status != 200 || jb.body["ticket"] == j1.body["ticket"] {
		t.Fatalf("second user: %d %v", jb.status, jb.body)
	}
	var pass string
	testenvEventually(t, func() bool {
		p := env.do(t, "GET", base+"/queue", a, nil)
		pass, _ = p.body["pass"].(string)
		return p.body["state"] == "admitted" && pass != "" && p.body["admitted_until"] != nil
	})
	// One slot (total_active_users 1): b waits, first in line.
	if p := env.do(t, "GET", base+"/queue", b, nil); p.body["state"] != "waiting" || p.body["position"] != float64(1) || p.body["poll_after"].(float64) < 1 {
		t.Fatalf("b while a is admitted: %v", p.body)
	}
	if got := env.sendPass(t, "POST", base+"/challenge", b, pass, nil); got.status != 409 || got.code != string(seckill.ENotAdmitted) {
		t.Fatalf("a's pass used by b: %d %v", got.status, got.body)
	}
	ch := env.sendPass(t, "POST", base+"/challenge", a, pass, nil)
	if ch.status != 200 {
		t.Fatalf("challenge with a pass: %d %v", ch.status, ch.body)
	}
	pa := env.sendPass(t, "POST", base+"/path", a, pass, map[string]any{"challenge_id": ch.body["challenge_id"], "answer": "0"})
	if pa.status != 200 {
		t.Fatalf("path with a pass: %d %v", pa.status, pa.body)
	}
	if got := env.do(t, "POST", base+"/buy/"+pa.body["path"].(string), a, nil); got.status != 409 || got.code != string(seckill.ENotAdmitted) {
		t.Fatalf("buy without the pass: %d %v", got.status, got.body)
	}
	if got := env.sendPass(t, "POST", base+"/buy/"+pa.body["path"].(string), a, pass, nil); got.status != 202 {
		t.Fatalf("buy with the pass: %d %v", got.status, got.body)
	}
	// The last unit is sold: b is told so, never admitted.
	testenvEventually(t, func() bool {
		p := env.do(t, "GET", base+"/queue", b, nil)
		return p.body["state"] == "sold_out"
	})
	st := env.admin(t, "GET", fmt.Sprintf("/admin/items/%d/stats", id), nil)
	q, _ := st.body["queue"].(map[string]any)
	if st.status != 200 || q == nil || q["admitted_total"] != float64(1) || q["units_left"] != float64(0) {
		t.Fatalf("admin stats: %d %v", st.status, st.body)
	}

	if got := env.do(t, "POST", fmt.Sprintf("/api/items/%d/queue", env.live), a, nil); got.status != 409 || got.code != string(seckill.EConflict) {
		t.Fatalf("joining a race: %d %v", got.status, got.body)
	}

	cr = env.admin(t, "POST", "/admin/items", map[string]any{
		"name": "queued 2", "stock": 5, "starts_at": now.Add(-time.Second), "ends_at": now.Add(time.Hour), "allocation": "queue"})
	base2 := fmt.Sprintf("/api/items/%v", cr.body["id"])
	testenvEventually(t, func() bool { return env.do(t, "GET", base2, 0, nil).status == 200 })
	env.edgeRedis.Proxy.Refuse(true)
	env.edgeRedis.Proxy.CutAll()
	for _, m := range []string{"POST", "GET"} {
		if got := env.do(t, m, base2+"/queue", a, nil); got.status != 503 || got.code != string(seckill.EDependency) || got.retryAfter == "" {
			t.Fatalf("%s queue with Redis down: %d %v (Retry-After %q)", m, got.status, got.body, got.retryAfter)
		}
	}
	env.edgeRedis.Proxy.Refuse(false)
}

func testenvEventually(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sendToken is a poll of user showing a poll token as the header (or, with
// asCookie, as the cookie), with the answer's headers.
func (env *outageEnv) sendToken(t *testing.T, path string, user int64, token string, asCookie bool) (reply, http.Header) {
	t.Helper()
	req, err := http.NewRequest("GET", env.pub.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := env.e.Sessions().Sign(user, fmt.Sprintf("u%d", user))
	req.Header.Set("Authorization", "Bearer "+tok)
	if asCookie {
		id := strings.Split(path, "/")[3]
		req.AddCookie(&http.Cookie{Name: "seckill_queue_" + id, Value: token})
	} else if token != "" {
		req.Header.Set(edge.PollTokenHeader, token)
	}
	resp, err := outageClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := reply{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), body: map[string]any{}}
	_ = json.NewDecoder(resp.Body).Decode(&r.body)
	r.code, _ = r.body["code"].(string)
	return r, resp.Header
}

// TestQueuePollToken: a join answers a poll token (and its cookie); a poll
// showing it, as the header or the cookie, is answered by the edge's view
// of the queue, so it still answers (the exact position, among the first
// tickets) while the edge's Redis is down, where a poll without a token,
// with another user's token, a forged one, or of the ticket at the head,
// is asked of Redis: 503 with Retry-After.
func TestQueuePollToken(t *testing.T) {
	env := newOutageEnv(t, func(c *edge.Config) { c.QueueViewStale = time.Hour })
	now := time.Now()
	cr := env.admin(t, "POST", "/admin/items", map[string]any{
		"name": "queued", "stock": 5, "starts_at": now.Add(time.Hour), "ends_at": now.Add(2 * time.Hour), "challenge": "none",
		"allocation": "queue", "queue_opens_at": now.Add(-time.Minute)})
	if cr.status != 201 {
		t.Fatalf("creating a queue sale: %d %v", cr.status, cr.body)
	}
	id := int64(cr.body["id"].(float64))
	base := fmt.Sprintf("/api/items/%d", id)
	testenvEventually(t, func() bool { return env.do(t, "GET", base, 0, nil).status == 200 })

	tokens, positions := map[int64]string{}, map[int64]float64{}
	for u := int64(51); u <= 53; u++ {
		j := env.do(t, "POST", base+"/queue", u, nil)
		tokens[u], _ = j.body["poll_token"].(string)
		if j.status != 200 || j.body["state"] != "waiting" || tokens[u] == "" {
			t.Fatalf("join of %d: %d %v", u, j.status, j.body)
		}
	}
	for u := int64(51); u <= 53; u++ { // the exact positions, from Redis
		p := env.do(t, "GET", base+"/queue", u, nil)
		positions[u], _ = p.body["position"].(float64)
		// a new token (signed now: its issue time, roomView.record), same ticket and place
		tok, _ := p.body["poll_token"].(string)
		if tok == "" || tok == tokens[u] || !sameTicketAndPlace(tok, tokens[u]) {
			t.Fatalf("poll of %d: token %v, joined with %s", u, p.body["poll_token"], tokens[u])
		}
		tokens[u] = tok
	}
	var head, last int64
	for u, p := range positions {
		switch p {
		case 1:
			head = u
		case 3:
			last = u
		}
	}
	if head == 0 || last == 0 {
		t.Fatalf("positions %v", positions)
	}
	// Redis up: the token's poll, from the view.
	p, hdr := env.sendToken(t, base+"/queue", last, tokens[last], false)
	if p.status != 200 || p.body["state"] != "waiting" || p.body["position"] != float64(3) || p.body["poll_token"] != tokens[last] ||
		p.body["waiting"] != float64(3) {
		t.Fatalf("poll with the token: %d %v", p.status, p.body)
	}
	if hdr.Get("Set-Cookie") != "" {
		t.Fatalf("a poll from the view set a cookie: %s", hdr.Get("Set-Cookie"))
	}

	env.edgeRedis.Proxy.Refuse(true)
	env.edgeRedis.Proxy.CutAll()
	defer env.edgeRedis.Proxy.Refuse(false)
	for _, asCookie := range []bool{false, true} {
		if p, _ := env.sendToken(t, base+"/queue", last, tokens[last], asCookie); p.status != 200 || p.body["position"] != float64(3) {
			t.Fatalf("Redis down, the token (cookie %v): %d %v", asCookie, p.status, p.body)
		}
	}
	forged := []byte(tokens[last])
	forged[2] ^= 1
	for _, c := range []struct {
		name  string
		user  int64
		token string
	}{
		{"no token", last, ""},
		{"another user's token", head, tokens[last]},
		{"a forged token", last, string(forged)},
		{"the head's own token", head, tokens[head]},
	} {
		if p, _ := env.sendToken(t, base+"/queue", c.user, c.token, false); p.status != 503 || p.code != string(seckill.EDependency) || p.retryAfter == "" {
			t.Fatalf("Redis down, %s: %d %v", c.name, p.status, p.body)
		}
	}
}

// sameTicketAndPlace tells whether two poll tokens name the same user,
// item, ticket and place (their payload
// "<user>.<item>.<ticket>.<issued>.<run>.<place>" but for the issue time
// and the Redis server).
func sameTicketAndPlace(a, b string) bool {
	fields := func(tok string) []string {
		p, _, _ := strings.Cut(tok, ".")
		raw, err := base64.RawURLEncoding.DecodeString(p)
		if err != nil {
			return nil
		}
		f := strings.SplitN(string(raw), ".", 6)
		if len(f) != 6 {
			return nil
		}
		return append(f[:3:3], f[5])
	}
	fa, fb := fields(a), fields(b)
	return fa != nil && slices.Equal(fa, fb)
}
