// Package bench measures the edge from outside, as a client over HTTP (the
// edge's throughput with wrk, the latency of the buy chain), and holds the
// figures every benchmark reports (ceilings, rates). It links no store
// client: the measures that need Redis, RabbitMQ or PostgreSQL (the
// pipeline, the servers' ceilings) are package bench/storebench.
package bench

import (
	"fmt"
	"io"
	"time"
)

// Ceiling is one raw figure of one server.
type Ceiling struct {
	Name    string        `json:"name"`
	Ops     int64         `json:"ops"`
	Elapsed time.Duration `json:"elapsed_ns"`
	Rate    float64       `json:"rate"` // ops per second
	Unit    string        `json:"unit"` // what an op is: "ops/s", "msg/s", "rows/s"
}

// Ceilings holds the raw figures of the servers.
type Ceilings struct {
	Redis       Ceiling   `json:"redis"`        // check-and-DECR Lua script
	AMQPQuorum  Ceiling   `json:"amqp_quorum"`  // persistent, confirmed publishes to a durable quorum queue
	AMQPClassic Ceiling   `json:"amqp_classic"` // the same to a durable classic queue
	PG          []Ceiling `json:"pg"`           // batched unnest inserts, by number of connections
}

// PGFor returns the PostgreSQL ceiling measured with conns connections, or
// the first one.
func (c *Ceilings) PGFor(conns int) Ceiling {
	for _, p := range c.PG {
		if p.Name == PGCeilingName(conns) {
			return p
		}
	}
	if len(c.PG) > 0 {
		return c.PG[0]
	}
	return Ceiling{}
}

// PGCeilingName names the PostgreSQL ceiling measured with conns connections.
func PGCeilingName(conns int) string { return fmt.Sprintf("postgres insert x%d conn", conns) }

// PrintCeilings writes the ceilings as a list.
func PrintCeilings(w io.Writer, c *Ceilings) {
	fmt.Fprintln(w, "ceilings:")
	all := append([]Ceiling{c.Redis, c.AMQPQuorum, c.AMQPClassic}, c.PG...)
	for _, x := range all {
		fmt.Fprintf(w, "  %-36s %12s %s (%d in %v)\n", x.Name, Human(x.Rate), x.Unit, x.Ops, x.Elapsed.Round(time.Millisecond))
	}
}
