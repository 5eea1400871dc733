package e2e

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"seckill/edge"
)

// TestTeachingSwitches: with the path-binding defence off, a path solved
// by one user buys for another (the path-sharing bot wins); with it on, the
// same move is refused. Switches are shown in the stats.
func TestTeachingSwitches(t *testing.T) {
	t.Parallel()
	env := newEdgeEnv(t, shippedRules(t), edge.Config{Difficulty: 4})
	item := env.createItem(10, "pow", -time.Second, time.Hour)
	tok := env.sessions("solver", "leech1", "leech2", "leech3")
	solver := shopper{e: env, token: tok["solver"]}
	leech := func(n int) shopper { return shopper{e: env, token: tok[fmt.Sprintf("leech%d", n)]} }

	// Defences on: a shared path is refused.
	p := solver.getPath(item)
	if a := leech(1).buy(item, p); a.status != 403 || a.code() != "bad_path" {
		t.Fatalf("binding on: %d %v", a.status, a.body)
	}

	off := env.admin("PUT", fmt.Sprintf("/admin/items/%d/defences", item), map[string]any{"path_binding": false, "single_use": false})
	if off.status != 200 || off.body["path_binding"] != false || off.body["challenge"] != true {
		t.Fatalf("switch off: %d %v", off.status, off.body)
	}
	st := env.admin("GET", fmt.Sprintf("/admin/items/%d/stats", item), nil)
	var got []string
	for _, v := range st.body["defences_off"].([]any) {
		got = append(got, v.(string))
	}
	if !slices.Equal(got, []string{"path_binding", "single_use"}) {
		t.Fatalf("defences_off %v", got)
	}
	shared := solver.getPath(item)
	for n := 1; n <= 3; n++ {
		if a := leech(n).buy(item, shared); a.status != 202 {
			t.Fatalf("binding off, leech%d: %d %v", n, a.status, a.body)
		}
	}

	env.admin("PUT", fmt.Sprintf("/admin/items/%d/defences", item), map[string]any{"path_binding": true, "single_use": true})
	p2 := solver.getPath(item)
	if a := leech(1).buy(item, p2); a.status != 403 {
		t.Fatalf("binding back on: %d %v", a.status, a.body)
	}
	if st := env.admin("GET", fmt.Sprintf("/admin/items/%d/stats", item), nil); len(st.body["defences_off"].([]any)) != 0 {
		t.Fatalf("defences_off after switching on: %v", st.body["defences_off"])
	}
	if a := solver.buy(item, p2); a.status != 202 {
		t.Fatalf("solver: %d %v", a.status, a.body)
	}
	env.s.waitOrders(item, 4, 30*time.Second)
}
