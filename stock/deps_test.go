package stock_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The Redis adapter links neither the broker's nor the database's client:
// the outbox contract it implements lives in the root package.
func TestLinksNoBrokerNorDatabase(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "seckill/stock").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "github.com/rabbitmq/") || strings.HasPrefix(dep, "github.com/jackc/") || dep == "seckill/queue" {
			t.Errorf("seckill/stock links %s", dep)
		}
	}
}
