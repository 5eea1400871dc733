package edge_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"seckill"
	"seckill/captcha"
	"seckill/captcha/pow"
	"seckill/internal/rkeys"
)

// solved answers a challenge reply (POST .../challenge or .../queue/challenge)
// as a client that solved it would: a proof of work by working it out, a
// captcha through the store's test hook.
func solved(t *testing.T, store *captcha.Store, ch reply) (id, answer string) {
	t.Helper()
	if ch.status != 200 {
		t.Fatalf("challenge: %d %v", ch.status, ch.body)
	}
	id, _ = ch.body["challenge_id"].(string)
	switch ch.body["kind"] {
	case captcha.KindPoW:
		seed, _ := ch.body["seed"].(string)
		d, _ := ch.body["difficulty"].(float64)
		return id, pow.Solve(seed, int(d))
	case captcha.KindCaptcha:
		a, err := store.AnswerForTest(context.Background(), id)
		if err != nil {
			t.Fatalf("reading the captcha's answer: %v", err)
		}
		return id, a
	}
	t.Fatalf("challenge of unknown kind: %v", ch.body)
	return "", ""
}

// wantChallengeFailed checks a 400 challenge_failed whose detail names why.
func wantChallengeFailed(t *testing.T, what string, got reply, why string) {
	t.Helper()
	detail, _ := got.body["detail"].(string)
	if got.status != 400 || got.code != string(seckill.EChallengeFailed) || !strings.Contains(detail, why) {
		t.Errorf("%s: %d %v, want 400 challenge_failed (%q)", what, got.status, got.body, why)
	}
}

// TestQueueChallengeBinding: the waiting room's join challenge and the
// purchase's challenge have distinct bindings, so each is accepted only on
// its own route, for each kind an item may ask for (the join's follows the
// item's challenge as the purchase's does). A solved join challenge shown
// at POST /path (by the admitted user, with the pass) is 400
// challenge_failed and burned: shown again it is "already used". A solved
// purchase challenge shown at the join is refused the same way (reachable
// when the room's record of the user's ticket is gone, Redis restarted from
// an older state, while the signed pass is still good: a user with a
// ticket joins again without a challenge). Another user's join challenge is
// refused at the join, and burned. Each challenge still works on its own
// route. Before the fix the first two were accepted (the same user-and-item
// binding), handing a path for a join challenge.
func TestQueueChallengeBinding(t *testing.T) {
	env := newOutageEnv(t)
	store := captcha.NewStore(env.edgeRedis.Client, env.edgeRedis.Prefix, captcha.Options{})
	ctx := context.Background()
	for n, tc := range []struct {
		challenge, kind string
		difficulty      float64
	}{{"pow", captcha.KindPoW, 16}, {"none", captcha.KindPoW, 0}, {"captcha", captcha.KindCaptcha, -1}} {
		t.Run(tc.challenge, func(t *testing.T) {
			now := time.Now()
			cr := env.admin(t, "POST", "/admin/items", map[string]any{
				"name": "queued " + tc.challenge, "stock": 5, "starts_at": now.Add(-time.Second), "ends_at": now.Add(time.Hour),
				"challenge": tc.challenge, "allocation": "queue", "queue_challenge": true,
				"new_users_per_minute": 6000, "total_active_users": 2, "session_duration": "1m"})
			if cr.status != 201 {
				t.Fatalf("creating a queue sale: %d %v", cr.status, cr.body)
			}
			id := int64(cr.body["id"].(float64))
			base := fmt.Sprintf("/api/items/%d", id)
			testenvEventually(t, func() bool { return env.do(t, "GET", base, 0, nil).status == 200 })
			a, b := int64(100+10*n), int64(101+10*n)
			join := func(user int64, chID, answer string) reply {
				return env.do(t, "POST", base+"/queue", user, map[string]any{"challenge_id": chID, "answer": answer})
			}

			// The join challenge is of the item's kind.
			qa := env.do(t, "POST", base+"/queue/challenge", a, nil)
			if qa.status != 200 || qa.body["kind"] != tc.kind || (tc.difficulty >= 0 && qa.body["difficulty"] != tc.difficulty) {
				t.Fatalf("join challenge of a %s sale: %d %v", tc.challenge, qa.status, qa.body)
			}
			// Another user's join challenge, solved: refused, and burned.
			qaID, qaAnswer := solved(t, store, qa)
			wantChallengeFailed(t, "b joining with a's challenge", join(b, qaID, qaAnswer), "another network or user")
			wantChallengeFailed(t, "b joining with a's challenge again", join(b, qaID, qaAnswer), "already used")
			if p := env.do(t, "GET", base+"/queue", b, nil); p.status != 404 {
				t.Fatalf("b has a ticket after two refused joins: %d %v", p.status, p.body)
			}
			// Each user's own join challenge joins.
			for _, u := range []int64{a, b} {
				chID, answer := solved(t, store, env.do(t, "POST", base+"/queue/challenge", u, nil))
				if j := join(u, chID, answer); j.status != 200 || j.body["ticket"] == "" {
					t.Fatalf("join of %d with its own challenge: %d %v", u, j.status, j.body)
				}
			}
			var pass string
			testenvEventually(t, func() bool {
				p := env.do(t, "GET", base+"/queue", a, nil)
				pass, _ = p.body["pass"].(string)
				return p.body["state"] == "admitted" && pass != ""
			})
			path := func(chID, answer string) reply {
				return env.sendPass(t, "POST", base+"/path", a, pass, map[string]any{"challenge_id": chID, "answer": answer})
			}

			// A join challenge (the room issues one to a ticket holder
			// too), solved, shown at /path with the pass: refused, and
			// burned by that first use.
			qID, qAnswer := solved(t, store, env.do(t, "POST", base+"/queue/challenge", a, nil))
			wantChallengeFailed(t, "a join challenge at /path", path(qID, qAnswer), "another purpose")
			wantChallengeFailed(t, "a join challenge at /path again", path(qID, qAnswer), "already used")

			// The purchase challenge still opens the path.
			pID, pAnswer := solved(t, store, env.sendPass(t, "POST", base+"/challenge", a, pass, nil))
			if got := path(pID, pAnswer); got.status != 200 || got.body["path"] == "" {
				t.Fatalf("a purchase challenge at /path: %d %v", got.status, got.body)
			}

			// The room's record of a's ticket is lost (the pass, signed,
			// is still good): a's join takes a challenge again. A purchase
			// challenge, solved, is refused there, and burned.
			pID, pAnswer = solved(t, store, env.sendPass(t, "POST", base+"/challenge", a, pass, nil))
			if err := env.edgeRedis.Client.HDel(ctx, rkeys.Space(env.edgeRedis.Prefix).Queue(id).Tickets, fmt.Sprint(a)).Err(); err != nil {
				t.Fatal(err)
			}
			wantChallengeFailed(t, "a purchase challenge at the join", join(a, pID, pAnswer), "another purpose")
			wantChallengeFailed(t, "that purchase challenge at /path after the join", path(pID, pAnswer), "already used")
			chID, answer := solved(t, store, env.do(t, "POST", base+"/queue/challenge", a, nil))
			if j := join(a, chID, answer); j.status != 200 || j.body["ticket"] == "" {
				t.Fatalf("join of a with its own challenge after the loss: %d %v", j.status, j.body)
			}
		})
	}
}
