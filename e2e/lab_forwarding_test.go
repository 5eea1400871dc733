package e2e

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"seckill/clientip"
	"seckill/edge"
	"seckill/lab"
	"seckill/limit"
)

// TestLabRefusesUntrustingEdge (issue 14 F2): an edge that trusts no proxy
// (configs/edge.yaml as shipped) ignores the lab's X-Forwarded-For, so all
// lab users share one per-IP bucket. The lab sees it in the RateLimit
// headers of two probes from different forwarded addresses and stops before
// creating a sale, naming the fix; against an edge that trusts loopback the
// same check passes and the run goes on.
func TestLabRefusesUntrustingEdge(t *testing.T) {
	t.Parallel()
	untrusting := newEdgeEnvWith(t, shippedRules(t), edge.Config{Difficulty: 8}, func(d *edge.Deps) {
		ips, err := clientip.New(nil)
		if err != nil {
			t.Fatal(err)
		}
		d.IPs = ips
	}, nil)
	sc, err := lab.Load("../configs/lab/small.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := lab.Run(ctx, sc, lab.Config{EdgeURL: untrusting.pub.URL, AdminURL: untrusting.adm.URL, AdminToken: untrusting.token})
	var fe *lab.ForwardingError
	if !errors.As(err, &fe) {
		t.Fatalf("lab.Run against an edge ignoring X-Forwarded-For: report %v, error %v; want a *lab.ForwardingError", rep != nil, err)
	}
	t.Logf("the lab stopped with:\n%v", err)
	// catalog-per-ip of configs/limits.yaml: burst 100; the second probe
	// drew on the bucket the first one used.
	if fe.Rule != "catalog-per-ip" || fe.Quota != 100 || fe.Remaining[1] >= 99 {
		t.Errorf("probe: rule %q q=%d remaining %v", fe.Rule, fe.Quota, fe.Remaining)
	}
	if fe.From != "127.0.0.1" {
		t.Errorf("the lab's address as seen: %q", fe.From)
	}
	for _, fix := range []string{"make up LAB=1", "seckill dev --trusted-proxies 127.0.0.1/32", "seckill edge --trusted-proxies 127.0.0.1/32", "xff: false"} {
		if !strings.Contains(err.Error(), fix) {
			t.Errorf("the message does not name the fix %q", fix)
		}
	}
	// It stopped before creating the sale: no item exists.
	if a := untrusting.admin("GET", "/admin/items/1/stats", nil); a.status != 404 {
		t.Errorf("item 1 after the refused run: %d %v", a.status, a.body)
	}

	// The same check against an edge that trusts 127.0.0.1 passes.
	trusting := newEdgeEnv(t, shippedRules(t), edge.Config{Difficulty: 8})
	note, err := lab.CheckForwarding(ctx, nil, trusting.pub.URL)
	if err != nil || note != "" {
		t.Fatalf("check against a trusting edge: note %q, error %v", note, err)
	}
	// Without any RateLimit policy on the catalogue it cannot tell: a note,
	// no error.
	bare := newEdgeEnv(t, []limit.Rule{{Name: "status-per-user", Class: "status", Key: "user", Rate: 2, Burst: 10}}, edge.Config{Difficulty: 8})
	note, err = lab.CheckForwarding(ctx, nil, bare.pub.URL)
	if err != nil || !strings.Contains(note, "could not check") {
		t.Fatalf("check without a per-IP rule: note %q, error %v", note, err)
	}
}
