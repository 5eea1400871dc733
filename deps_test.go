package seckill_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportGraph keeps the seams of ARCHITECTURE.md ("Import graph"): a
// package links only what its part needs. The domain speaks no transport
// (codes become HTTP statuses in package httpapi). The edge talks to the backend
// through the contract of package seckill and never links the backend's
// queue or database drivers; lab is a black-box client of the public API
// and links no store at all; the shipped binary links no test-only
// browser driver and no test-only store hook (internal/testhook).
func TestImportGraph(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	const (
		amqp    = "github.com/rabbitmq/amqp091-go"
		pgx     = "github.com/jackc/pgx"
		redis   = "github.com/redis/go-redis"
		browser = "github.com/chromedp"
		hook    = "seckill/internal/testhook"
	)
	for _, c := range []struct {
		pkg       string
		forbidden []string
	}{
		{".", []string{"net/http", redis, amqp, pgx}},
		{"./edge", []string{amqp, pgx}},
		{"./lab", []string{pgx, amqp, redis}},
		{"./bench", []string{pgx, amqp, redis}},
		{"./apiclient", []string{pgx, amqp, redis}},
		{"./backendclient", []string{pgx, amqp, redis}},
		{"./cmd/seckill", []string{browser, hook}},
	} {
		out, err := exec.Command("go", "list", "-deps", c.pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", c.pkg, err, out)
		}
		deps := strings.Fields(string(out))
		for _, f := range c.forbidden {
			for _, d := range deps {
				if d == f || strings.HasPrefix(d, f+"/") {
					t.Errorf("%s links %s (%s); see ARCHITECTURE.md, \"Import graph\"", c.pkg, d, f)
					break
				}
			}
		}
	}
}
