package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"seckill/internal/redisconf"
)

// The relay's reads go out on a client that never resends a command.
func TestNoRetryRedisClient(t *testing.T) {
	c, err := noRetryRedisClient("redis://127.0.0.1:1/0", 4)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// go-redis turns -1 into 0 (one attempt; 0 as given would mean 3).
	// The rest of the production policy (internal/redisconf) still applies.
	if o := c.Options(); o.MaxRetries != 0 || o.ReadTimeout != redisconf.ReadTimeout || !o.ContextTimeoutEnabled {
		t.Fatalf("options: retries %d, read timeout %v, context timeouts %v", o.MaxRetries, o.ReadTimeout, o.ContextTimeoutEnabled)
	}
}

// The flag names other tools depend on (the fault matrix) exist.
func TestRelayFlagNames(t *testing.T) {
	for cmd, flags := range map[string][]string{
		"relay":     {"--redis-url", "--redis-prefix", "--amqp-url", "--queue", "--relay-id", "--relay-steal-after", "--claim-idle", "--metrics-listen", "--addr-file"},
		"backend":   {"--relay-redis-url", "--relay-claim-idle", "--relay-id", "--relay-steal-after"},
		"reconcile": {"--stranded-after", "--repair", "--dry-run", "--json"},
	} {
		var out bytes.Buffer
		if err := run(context.Background(), []string{cmd, "--help"}, func(string) string { return "" }, &out, &out); err != nil {
			t.Fatal(err)
		}
		for _, f := range flags {
			if !strings.Contains(out.String(), f+" ") {
				t.Errorf("%s --help lacks %s", cmd, f)
			}
		}
	}
}
