package bench

// CPU profiles of the edge's cheap paths, without network or wrk:
//
//	go test ./bench -run '^$' -bench 'Edge|Hello' -cpu 2 -cpuprofile /tmp/edge.pprof
//	go tool pprof -top /tmp/edge.pprof
//
// The edge is built as `seckill edge` builds it, with the limits of
// configs/bench-limits.yaml (the rules of configs/limits.yaml with generous
// numbers, buy-per-user kept tight) and a backend that only lists items;
// the paths measured never reach Redis or the backend.

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"seckill"
	"seckill/edge"
	"seckill/limit"
)

// listOnly is a backend that lists a live and a sold-out item.
type listOnly struct{ edge.Backend }

func (listOnly) Items(context.Context) ([]seckill.ItemView, error) {
	now := time.Now()
	it := func(id, left int64) seckill.ItemView {
		return seckill.ItemView{Item: seckill.Item{ID: id, Name: fmt.Sprint("item ", id), PriceCents: 100, Stock: 5_000_000,
			StartsAt: now.Add(-time.Hour), EndsAt: now.Add(24 * time.Hour), Challenge: "pow"}, StockLeft: left}
	}
	return []seckill.ItemView{it(1, 5_000_000), it(2, 0)}, nil
}

type profiledEdge struct {
	h      http.Handler
	tokens []string // sessions of distinct users
	hammer string   // a user whose buy bucket is empty
}

func newProfiledEdge(b *testing.B) *profiledEdge {
	raw, err := os.ReadFile("../configs/bench-limits.yaml")
	if err != nil {
		b.Fatal(err)
	}
	rules, err := limit.ParseRules(raw)
	if err != nil {
		b.Fatal(err)
	}
	lim, err := limit.New(rules, limit.Options{MaxKeysPerRule: edge.DefaultMaxKeysPerRule, IdleAfter: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = lim.Close() })
	secret := []byte("0123456789abcdef0123456789abcdef")
	e := edge.New(edge.Config{SessionSecret: secret, AdminToken: "a"}, edge.Deps{Backend: listOnly{}, Limiter: lim})
	ses := edge.NewSessions(secret, time.Hour, false)
	p := &profiledEdge{h: e.Public()}
	for u := 1; u <= 10000; u++ {
		t, _ := ses.Sign(int64(u), fmt.Sprint("user", u))
		p.tokens = append(p.tokens, t)
	}
	p.hammer, _ = ses.Sign(999999, "hammer")
	if _, err := e.Catalog().Items(context.Background()); err != nil {
		b.Fatal(err)
	}
	// Warm the catalogue, then empty the hammered user's buy bucket.
	p.serve(b, "GET", "/api/items/1", "", 200)
	for i := 0; ; i++ {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/api/items/2/buy/0123456789abcdef0123456789abcdef", nil)
		req.Header.Set("Authorization", "Bearer "+p.hammer)
		p.h.ServeHTTP(rec, req)
		if rec.Code == http.StatusTooManyRequests {
			break
		}
		if i > 100000 {
			b.Fatal("the buy bucket never refused")
		}
	}
	return p
}

func (p *profiledEdge) serve(b *testing.B, method, path, token string, want int) {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(method, path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	p.h.ServeHTTP(rec, req)
	if rec.Code != want {
		b.Fatalf("%s %s: %d, want %d: %s", method, path, rec.Code, want, rec.Body)
	}
}

// run serves method path from parallel goroutines; a token of -1 means
// none, -2 the hammered user, otherwise sessions rotate.
func (p *profiledEdge) run(b *testing.B, method, path string, who, want int) {
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(method, path, nil)
			switch who {
			case -1:
			case -2:
				req.Header.Set("Authorization", "Bearer "+p.hammer)
			default:
				req.Header.Set("Authorization", "Bearer "+p.tokens[next.Add(1)%int64(len(p.tokens))])
			}
			rec := httptest.NewRecorder()
			p.h.ServeHTTP(rec, req)
			if rec.Code != want {
				b.Errorf("%s %s: %d, want %d: %s", method, path, rec.Code, want, rec.Body)
				return
			}
		}
	})
}

const anyPath = "/buy/0123456789abcdef0123456789abcdef"

func BenchmarkHello(b *testing.B) {
	h := HelloHandler()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
			if rec.Code != 200 {
				b.Error(rec.Code)
				return
			}
		}
	})
}

func BenchmarkEdgeCatalogRead(b *testing.B) {
	newProfiledEdge(b).run(b, "GET", "/api/items/1", -1, 200)
}

func BenchmarkEdgeUnknownGet(b *testing.B) {
	newProfiledEdge(b).run(b, "GET", "/api/items/999999", -1, 404)
}

func BenchmarkEdgeUnknownBuy(b *testing.B) {
	newProfiledEdge(b).run(b, "POST", "/api/items/999999"+anyPath, 0, 404)
}

func BenchmarkEdgeSoldOut(b *testing.B) {
	newProfiledEdge(b).run(b, "POST", "/api/items/2"+anyPath, 0, 410)
}

func BenchmarkEdgeRateLimited(b *testing.B) {
	newProfiledEdge(b).run(b, "POST", "/api/items/1"+anyPath, -2, 429)
}
