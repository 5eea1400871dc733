package e2e

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"seckill/backendclient"
	"seckill/captcha/pow"
	"seckill/clientip"
	"seckill/edge"
	"seckill/internal/testenv"
	"seckill/limit"
	"seckill/limit/redislimit"
)

// Registration costs something (issue 15 §1): a challenge bound to the
// client's network, single use, then per-IP and per-/24 account budgets in
// Redis shared by every edge. These tests run the edge role on the real
// Redis, PostgreSQL, RabbitMQ with the shipped budgets (5 per IP, 50 per
// /24, 24 h) and a low difficulty.

// regRules: token buckets no registration test reaches, so every refusal
// is the budgets'.
var regRules = []limit.Rule{{Name: "everything", Class: "*", Key: "global", Rate: 1e6, Burst: 1e6}}

func regConfig() edge.Config {
	r := limit.DefaultRegistration
	r.Difficulty = 6
	return edge.Config{Difficulty: 4, Registration: r}
}

func fromIP(ip string) map[string]string {
	if ip == "" {
		return nil
	}
	return map[string]string{"X-Forwarded-For": ip}
}

// regChallenge asks for a registration challenge from ip (through the
// trusted X-Forwarded-For) and returns its id and answer.
func regChallenge(t *testing.T, pub, ip string) (id, answer string) {
	t.Helper()
	a := call(t, "POST", pub+"/api/register/challenge", nil, fromIP(ip))
	if a.status != 200 || a.str("kind") != "pow" || a.str("challenge_id") == "" || a.str("expires_at") == "" {
		t.Fatalf("registration challenge from %s: %d %v", ip, a.status, a.body)
	}
	d, ok := a.body["difficulty"].(float64)
	if !ok {
		t.Fatalf("registration challenge without a difficulty: %v", a.body)
	}
	return a.str("challenge_id"), pow.Solve(a.str("seed"), int(d))
}

// registerAs registers name with a challenge's id and answer, from ip.
func registerAs(t *testing.T, pub, ip, name, id, answer string) answer {
	t.Helper()
	return registerBody(t, pub, ip, map[string]any{"username": name, "password": "correct horse"}, id, answer)
}

// registerBody sends body (username, password, anything else) with the
// challenge's id and answer added, from ip.
func registerBody(t *testing.T, pub, ip string, body map[string]any, id, answer string) answer {
	t.Helper()
	body["challenge_id"], body["answer"] = id, answer
	return call(t, "POST", pub+"/api/register", body, fromIP(ip))
}

// registerPassword solves a challenge and registers name with password,
// from the peer's own address.
func registerPassword(t *testing.T, pub, name, password string) answer {
	t.Helper()
	id, ans := regChallenge(t, pub, "")
	return registerBody(t, pub, "", map[string]any{"username": name, "password": password}, id, ans)
}

// registerFrom solves a registration challenge and registers name, both
// from ip ("" = the peer's own address). A refused challenge request (429:
// the budget is already spent) is returned as it is.
func registerFrom(t *testing.T, pub, ip, name string) answer {
	t.Helper()
	ch := call(t, "POST", pub+"/api/register/challenge", nil, fromIP(ip))
	if ch.status != 200 {
		return ch
	}
	d, _ := ch.body["difficulty"].(float64)
	return registerAs(t, pub, ip, name, ch.str("challenge_id"), pow.Solve(ch.str("seed"), int(d)))
}

// TestRegisterBudgetPerIPConcurrent: 20 concurrent registrations from one
// IP, each with its own solved challenge: exactly 5 accounts, 15 × 429
// rate_limited with a Retry-After of about the window and the RateLimit
// fields naming accounts-per-ip; each account stores the /24.
func TestRegisterBudgetPerIPConcurrent(t *testing.T) {
	t.Parallel()
	env := newEdgeEnv(t, regRules, regConfig())
	const ip = "192.0.2.7"
	type sol struct{ id, ans string }
	sols := make([]sol, 20)
	for i := range sols {
		sols[i].id, sols[i].ans = regChallenge(t, env.pub.URL, ip)
	}
	answers := make([]answer, 20)
	var wg sync.WaitGroup
	for i := range sols {
		wg.Go(func() {
			id, ans := sols[i].id, sols[i].ans
			for {
				answers[i] = registerAs(t, env.pub.URL, ip, fmt.Sprintf("crowd%d", i), id, ans)
				if answers[i].status != 503 || answers[i].code() != "overloaded" {
					return
				}
				// The backend's password hashing was full: nothing was
				// made and the take was given back; try again, as a
				// client told Retry-After would, with a new challenge.
				time.Sleep(50 * time.Millisecond)
				ch := call(t, "POST", env.pub.URL+"/api/register/challenge", nil, fromIP(ip))
				if ch.status != 200 {
					answers[i] = ch // the budget is spent by now: 429
					return
				}
				d, _ := ch.body["difficulty"].(float64)
				id, ans = ch.str("challenge_id"), pow.Solve(ch.str("seed"), int(d))
			}
		})
	}
	wg.Wait()
	created, refused := 0, 0
	for i, a := range answers {
		switch {
		case a.status == 201:
			created++
			u, err := env.s.db.UserByName(context.Background(), fmt.Sprintf("crowd%d", i))
			if err != nil || u.Network != "192.0.2.0/24" {
				t.Errorf("crowd%d: network %q (%v), want 192.0.2.0/24", i, u.Network, err)
			}
		case a.status == 429 && a.code() == "rate_limited":
			refused++
			ra, _ := strconv.Atoi(a.header.Get("Retry-After"))
			if ra < 86000 || ra > 86400 {
				t.Errorf("Retry-After %q, want about 86400 s (the window frees the oldest take)", a.header.Get("Retry-After"))
			}
			if p := a.header.Get("RateLimit-Policy"); p != `"accounts-per-ip";q=5;w=86400` {
				t.Errorf("RateLimit-Policy %q", p)
			}
		default:
			t.Errorf("registration %d: %d %v", i, a.status, a.body)
		}
	}
	if created != 5 || refused != 15 {
		t.Fatalf("created %d, refused %d: want exactly 5 and 15", created, refused)
	}
	// The spent budget is told before any work: the challenge itself is 429.
	if a := call(t, "POST", env.pub.URL+"/api/register/challenge", nil, fromIP(ip)); a.status != 429 || a.code() != "rate_limited" || a.header.Get("Retry-After") == "" {
		t.Fatalf("a challenge for a spent budget: %d %v, want 429 with Retry-After", a.status, a.body)
	}
	// Another address of the same /24 still has its own 5.
	if a := registerFrom(t, env.pub.URL, "192.0.2.8", "neighbour"); a.status != 201 {
		t.Fatalf("another IP of the /24: %d %v", a.status, a.body)
	}
}

// TestRegisterBudgetPerNetwork: 55 registrations from 11 addresses of one
// /24 (5 each, within every IP's budget): exactly 50 accounts; then the
// 429 names accounts-per-network; another /24 is untouched; IPv6 counts
// by /64 and /48.
func TestRegisterBudgetPerNetwork(t *testing.T) {
	t.Parallel()
	env := newEdgeEnv(t, regRules, regConfig())
	created := 0
	for i := range 55 {
		ip := fmt.Sprintf("198.51.100.%d", 10+i/5)
		a := registerFrom(t, env.pub.URL, ip, fmt.Sprintf("net%d", i))
		switch {
		case a.status == 201:
			created++
		case a.status == 429 && a.code() == "rate_limited":
			if p := a.header.Get("RateLimit-Policy"); p != `"accounts-per-network";q=50;w=86400` {
				t.Errorf("refusal %d: RateLimit-Policy %q, want accounts-per-network", i, p)
			}
		default:
			t.Fatalf("registration %d: %d %v", i, a.status, a.body)
		}
	}
	if created != 50 {
		t.Fatalf("created %d accounts in one /24, want exactly 50", created)
	}
	if a := registerFrom(t, env.pub.URL, "203.0.113.5", "elsewhere"); a.status != 201 {
		t.Fatalf("another /24: %d %v", a.status, a.body)
	}
	// IPv6: 5 per /64; a second /64 of the same /48 has its own 5.
	for i := range 6 {
		a := registerFrom(t, env.pub.URL, fmt.Sprintf("2001:db8:7:1::%x", i+1), fmt.Sprintf("six%d", i))
		if want := map[bool]int{true: 201, false: 429}[i < 5]; a.status != want {
			t.Fatalf("IPv6 registration %d from one /64: %d %v, want %d", i, a.status, a.body, want)
		}
	}
	if a := registerFrom(t, env.pub.URL, "2001:db8:7:2::1", "six-other64"); a.status != 201 {
		t.Fatalf("another /64 of the /48: %d %v", a.status, a.body)
	}
	if u, err := env.s.db.UserByName(context.Background(), "six-other64"); err != nil || u.Network != "2001:db8:7::/48" {
		t.Fatalf("IPv6 account network %q (%v), want 2001:db8:7::/48", u.Network, err)
	}
}

// TestRegisterChallengeRules: no challenge, a wrong answer, an answer from
// another /24, a reused challenge: 400 challenge_failed and no account; an
// answer from another address of the same /24 is accepted; an item's
// challenge does not register.
func TestRegisterChallengeRules(t *testing.T) {
	t.Parallel()
	env := newEdgeEnv(t, regRules, regConfig())
	pub := env.pub.URL
	fail := func(what string, a answer) {
		t.Helper()
		if a.status != 400 || a.code() != "challenge_failed" {
			t.Fatalf("%s: %d %v, want 400 challenge_failed", what, a.status, a.body)
		}
	}
	fail("no challenge", call(t, "POST", pub+"/api/register", map[string]any{"username": "nochal", "password": "correct horse"}, fromIP("192.0.2.1")))
	id, ans := regChallenge(t, pub, "192.0.2.1")
	wrong := "0"
	for pow.Check("x", wrong, 6) {
		wrong += "1"
	}
	if wrong == ans {
		wrong = ans + "1"
	}
	fail("wrong answer", registerAs(t, pub, "192.0.2.1", "wrong", id, wrong))
	fail("right answer after a wrong one (burned)", registerAs(t, pub, "192.0.2.1", "wrong", id, ans))

	id, ans = regChallenge(t, pub, "192.0.2.1")
	fail("answer from another /24", registerAs(t, pub, "198.51.100.1", "thief", id, ans))
	fail("then from its own /24 (burned)", registerAs(t, pub, "192.0.2.1", "thief", id, ans))

	id, ans = regChallenge(t, pub, "192.0.2.1")
	if a := registerAs(t, pub, "192.0.2.200", "sameNet", id, ans); a.status != 201 {
		t.Fatalf("answer from another address of the same /24: %d %v", a.status, a.body)
	}
	fail("reused challenge", registerAs(t, pub, "192.0.2.1", "again", id, ans))

	// An item's challenge is not a registration challenge.
	item := env.createItem(5, "pow", -time.Second, time.Hour)
	tok := env.sessions("shopper")["shopper"]
	ic := call(t, "POST", fmt.Sprintf("%s/api/items/%d/challenge", pub, item), nil, map[string]string{"Authorization": "Bearer " + tok})
	d, _ := ic.body["difficulty"].(float64)
	fail("an item's challenge", registerAs(t, pub, "", "itemch", ic.str("challenge_id"), pow.Solve(ic.str("seed"), int(d))))

	// Pushed settings (as from ZooKeeper): a captcha instead of a proof of
	// work, its answer read through the test hook.
	capt := limit.DefaultRegistration
	capt.Challenge = "captcha"
	if err := env.edge.Reconfigure(edge.Dynamic{Rules: regRules, Difficulty: 4, MaxInFlight: 512, Registration: &capt}); err != nil {
		t.Fatal(err)
	}
	cc := call(t, "POST", pub+"/api/register/challenge", nil, fromIP("192.0.2.1"))
	if cc.status != 200 || cc.str("kind") != "captcha" || !strings.HasPrefix(cc.str("image"), "data:image/png;base64,") || cc.body["difficulty"] != nil {
		t.Fatalf("captcha registration challenge: %d %v", cc.status, cc.body)
	}
	capAns, err := env.ch.AnswerForTest(context.Background(), cc.str("challenge_id"))
	if err != nil {
		t.Fatal(err)
	}
	if a := registerAs(t, pub, "192.0.2.1", "reader", cc.str("challenge_id"), capAns); a.status != 201 {
		t.Fatalf("captcha answered: %d %v", a.status, a.body)
	}

	for _, n := range []string{"nochal", "wrong", "thief", "again", "itemch"} {
		if _, err := env.s.db.UserByName(context.Background(), n); err == nil {
			t.Errorf("account %s exists after a failed challenge", n)
		}
	}
}

// TestRegisterNameTakenGivesBack: four attempts at a taken name from one IP
// cost nothing: the IP still creates 4 more accounts (5 in all), then 429.
func TestRegisterNameTakenGivesBack(t *testing.T) {
	t.Parallel()
	env := newEdgeEnv(t, regRules, regConfig())
	const ip = "192.0.2.50"
	if a := registerFrom(t, env.pub.URL, ip, "taken"); a.status != 201 {
		t.Fatal(a.status, a.body)
	}
	for range 4 {
		if a := registerFrom(t, env.pub.URL, ip, "taken"); a.status != 409 || a.code() != "username_taken" {
			t.Fatalf("taken name: %d %v", a.status, a.body)
		}
	}
	for i := range 4 {
		if a := registerFrom(t, env.pub.URL, ip, fmt.Sprintf("fresh%d", i)); a.status != 201 {
			t.Fatalf("fresh%d after refused names: %d %v (the refusals kept their takes)", i, a.status, a.body)
		}
	}
	if a := registerFrom(t, env.pub.URL, ip, "sixth"); a.status != 429 {
		t.Fatalf("sixth account: %d %v, want 429", a.status, a.body)
	}
}

// TestRegisterBudgetsSharedByEdges: two edges on one Redis: 3 accounts
// through one and 3 through the other from the same IP make 5, and the
// sixth is refused whichever edge it reaches.
func TestRegisterBudgetsSharedByEdges(t *testing.T) {
	t.Parallel()
	env := newEdgeEnv(t, regRules, regConfig())
	lim2, _ := limit.New(regRules, limit.Options{})
	t.Cleanup(func() { _ = lim2.Close() })
	cfg := regConfig()
	cfg.SessionSecret, cfg.AdminToken = env.secret, "x"
	e2 := edge.New(cfg, edge.Deps{
		Backend: backendclient.New("http://"+env.be.addr, "", nil), Redis: env.s.st.Client(), Prefix: env.s.prefix,
		Limiter: lim2, Challenges: env.ch, Buyers: env.s.st, Log: quietLog(t), IPs: trustLoopback(t),
	})
	pub2 := httptest.NewServer(e2.Public())
	t.Cleanup(pub2.Close)
	const ip = "192.0.2.77"
	created := 0
	for i := range 8 {
		pub := env.pub.URL
		if i%2 == 1 {
			pub = pub2.URL
		}
		switch a := registerFrom(t, pub, ip, fmt.Sprintf("two%d", i)); a.status {
		case 201:
			created++
		case 429:
		default:
			t.Fatalf("registration %d: %d %v", i, a.status, a.body)
		}
	}
	if created != 5 {
		t.Fatalf("two edges created %d accounts for one IP, want 5", created)
	}
	// A challenge from one edge is answered at the other (state in Redis).
	id, ans := regChallenge(t, env.pub.URL, "192.0.2.78")
	if a := registerAs(t, pub2.URL, "192.0.2.78", "crossed", id, ans); a.status != 201 {
		t.Fatalf("challenge of edge 1 answered at edge 2: %d %v", a.status, a.body)
	}
}

// TestRegisterRedisDownIs503: the budgets' Redis away (connections cut and
// refused): 503 dependency_unavailable with Retry-After, never a 500 and
// never an account; back, registration works again.
func TestRegisterRedisDownIs503(t *testing.T) {
	t.Parallel()
	f := testenv.RedisBehindProxy(t)
	env := newEdgeEnvWith(t, regRules, regConfig(), func(d *edge.Deps) {
		d.Budget = redislimit.New(f.Client, d.Prefix)
	}, nil)
	id, ans := regChallenge(t, env.pub.URL, "192.0.2.90")
	f.Proxy.Refuse(true)
	f.Proxy.CutAll()
	a := registerAs(t, env.pub.URL, "192.0.2.90", "outage", id, ans)
	if a.status != 503 || a.code() != "dependency_unavailable" || a.header.Get("Retry-After") == "" {
		t.Fatalf("budgets' Redis down: %d %v Retry-After %q, want 503 dependency_unavailable with Retry-After", a.status, a.body, a.header.Get("Retry-After"))
	}
	if _, err := env.s.db.UserByName(context.Background(), "outage"); err == nil {
		t.Fatal("an account was made without its budget")
	}
	f.Proxy.Refuse(false)
	testenv.Eventually(t, 10*time.Second, "registration after Redis is back", func() bool {
		return registerFrom(t, env.pub.URL, "192.0.2.90", "afterwards").status == 201
	})
}

// trustLoopback believes X-Forwarded-For from loopback, like the harness's
// edge.
func trustLoopback(t *testing.T) *clientip.Resolver {
	r, err := clientip.New([]string{"127.0.0.1/32"})
	if err != nil {
		t.Fatal(err)
	}
	return r
}
