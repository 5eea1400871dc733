package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

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
