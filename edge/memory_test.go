package edge

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"seckill"
	"seckill/limit"
)

// noBackend answers nothing: the routes below never reach it.
type noBackend struct{ Backend }

func (noBackend) Items(ctx context.Context) ([]seckill.ItemView, error) { return nil, nil }

// TestMemoryMillionUsers: one million distinct users, each from its own
// address, go through the gate of a per-user route class (challenge, path,
// buy, status in turn: 250,000 users each, twice the per-rule cap) under
// the shipped limits. The edge's heap must stay
// under 200 MB: token buckets are capped per rule and the Bloom filters
// have a fixed size.
func TestMemoryMillionUsers(t *testing.T) {
	if testing.Short() {
		t.Skip("takes about 20 s")
	}
	raw, err := os.ReadFile("../configs/limits.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rules, err := limit.ParseRules(raw)
	if err != nil {
		t.Fatal(err)
	}
	// The caps the edge command uses by default.
	lim, err := limit.New(rules, limit.Options{MaxKeysPerRule: DefaultMaxKeysPerRule, IdleAfter: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lim.Close() }()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	e := New(Config{SessionSecret: []byte("k"), AdminToken: "a"}, Deps{Backend: noBackend{}, Limiter: lim})
	h := e.Public()
	routes := []struct{ method, path string }{
		{"POST", "/api/items/77/challenge"}, {"POST", "/api/items/77/path"},
		{"POST", "/api/items/77/buy/0123456789abcdef0123456789abcdef"}, {"GET", "/api/items/77/order"},
	}
	const users = 1_000_000
	start := time.Now()
	rec := httptest.NewRecorder()
	for u := 1; u <= users; u++ {
		tok, _ := e.sessions.Sign(int64(u), "u"+strconv.Itoa(u))
		ip := fmt.Sprintf("10.%d.%d.%d:1234", u>>16&255, u>>8&255, u&255)
		r := routes[u%len(routes)]
		req := httptest.NewRequest(r.method, r.path, nil)
		req.RemoteAddr = ip
		req.Header.Set("Authorization", "Bearer "+tok)
		rec.Body.Reset()
		h.ServeHTTP(rec, req)
		if u <= 4 && rec.Code != http.StatusNotFound && rec.Code != http.StatusBadRequest {
			t.Fatalf("unknown item answered %d", rec.Code)
		}
	}
	elapsed := time.Since(start)
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	buckets := 0
	for _, n := range lim.Stats() {
		buckets += n
	}
	t.Logf("%d users over %d routes in %v: heap %d MB (grew %d MB), %d live buckets",
		users, len(routes), elapsed.Round(time.Millisecond), after.HeapAlloc>>20, grown>>20, buckets)
	if after.HeapAlloc > 200<<20 {
		t.Fatalf("heap %d MB with a million users, want under 200 MB", after.HeapAlloc>>20)
	}
	_ = seckill.EInvalid
}
