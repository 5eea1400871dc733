package storebench

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"seckill/internal/testenv"
)

// TestPipeline2000: a 2,000-unit sale through Reserve, relay, RabbitMQ and
// worker on the real servers: exactly 2,000 accepted and stored, stock 0, no
// doubles, and nothing of the run left behind (database, keys, queues).
func TestPipeline2000(t *testing.T) {
	redisURL, amqpURL := testenv.RedisURL(t), testenv.AMQPURL(t)
	// testenv.Postgres gives a database of this test; its URL is the admin
	// URL the pipeline creates its own database next to.
	pgURL := testenv.Postgres(t)
	rdb, _ := testenv.Redis(t)

	var progress bytes.Buffer
	cfg := Config{
		RedisURL: redisURL, AMQPURL: amqpURL, PGURL: pgURL,
		Units: 2000, Concurrency: 32, Relays: 1, Workers: 1, Timeout: time.Minute,
		Progress: &progress,
	}
	var prof bytes.Buffer
	res, err := Pipeline(context.Background(), cfg, &prof)
	if err != nil {
		t.Fatalf("pipeline: %v\n%s", err, progress.String())
	}
	var out bytes.Buffer
	PrintPipeline(&out, res)
	t.Logf("\n%s", out.String())
	if !res.OK() {
		t.Fatalf("pipeline failed: %v", res.Failures)
	}
	if res.Accepted != 2000 || res.Stored != 2000 || res.StockLeft != 0 || res.Duplicates != 0 ||
		res.RefMismatches != 0 || res.OutboxPending != 0 || len(res.Refused) != 0 {
		t.Fatalf("counts: %+v", res)
	}
	if res.Relay.Confirmed != 2000 || res.Consumer.Stored != 2000 {
		t.Fatalf("relay confirmed %d, consumer stored %d, want 2000 each", res.Relay.Confirmed, res.Consumer.Stored)
	}
	if res.AcceptRate <= 0 || res.EndToEndRate <= 0 || res.Drain < 0 || res.ReserveP50 <= 0 || res.ReserveP99 < res.ReserveP50 {
		t.Fatalf("figures: %+v", res)
	}
	if prof.Len() == 0 {
		t.Fatal("no CPU profile written")
	}

	// Nothing of the run is left: its database, Redis keys and queues.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var dbs int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", res.Name).Scan(&dbs); err != nil {
		t.Fatal(err)
	}
	if dbs != 0 {
		t.Fatalf("database %s left", res.Name)
	}
	if keys, err := rdb.Keys(ctx, res.Name+":*").Result(); err != nil || len(keys) != 0 {
		t.Fatalf("redis keys left: %v %v", keys, err)
	}
	aconn, err := amqp.Dial(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	defer aconn.Close()
	for _, q := range []string{res.Name, res.Name + ".dead"} {
		ch, err := aconn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ch.QueueDeclarePassive(q, true, false, false, false, nil); err == nil {
			t.Fatalf("queue %s left", q)
		}
	}
}
