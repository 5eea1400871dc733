package app

import (
	"testing"

	"seckill/internal/redisconf"
)

// The relay's reads go out on a client that never resends a command.
func TestNoRetryRedisClient(t *testing.T) {
	c, err := NoRetryRedisClient("redis://127.0.0.1:1/0", 4)
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
