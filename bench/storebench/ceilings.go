package storebench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"seckill"
	"seckill/bench"
	"seckill/queue"
)

// RunCeilings measures the raw ceilings, one server at a time.
func RunCeilings(ctx context.Context, cfg Config) (*bench.Ceilings, error) {
	cfg.defaults()
	out := &bench.Ceilings{}
	var err error
	cfg.progress("ceiling: redis check-and-DECR script, %d goroutines", cfg.RedisGoroutines)
	if out.Redis, err = redisCeiling(ctx, cfg); err != nil {
		return nil, fmt.Errorf("redis ceiling: %w", err)
	}
	cfg.progress("ceiling: rabbitmq quorum queue, %d confirms outstanding", cfg.AMQPWindow)
	if out.AMQPQuorum, err = amqpCeiling(ctx, cfg, "quorum"); err != nil {
		return nil, fmt.Errorf("rabbitmq quorum ceiling: %w", err)
	}
	cfg.progress("ceiling: rabbitmq classic queue, %d confirms outstanding", cfg.AMQPWindow)
	if out.AMQPClassic, err = amqpCeiling(ctx, cfg, "classic"); err != nil {
		return nil, fmt.Errorf("rabbitmq classic ceiling: %w", err)
	}
	for _, conns := range cfg.PGConns {
		cfg.progress("ceiling: postgres batched inserts of %d rows, %d connection(s)", cfg.PGBatch, conns)
		c, err := pgCeiling(ctx, cfg, conns)
		if err != nil {
			return nil, fmt.Errorf("postgres ceiling: %w", err)
		}
		out.PG = append(out.PG, c)
	}
	return out, nil
}

// budget hands out operations until the duration passes or the count is
// spent.
type budget struct {
	deadline time.Time
	left     atomic.Int64
	counted  bool
}

func newBudget(cfg Config) *budget {
	b := &budget{deadline: time.Now().Add(cfg.Duration)}
	if cfg.Count > 0 {
		b.counted = true
		b.left.Store(int64(cfg.Count))
	}
	return b
}

// take returns how many of want operations may still run (0: stop).
func (b *budget) take(want int) int {
	if !b.counted {
		if time.Now().After(b.deadline) {
			return 0
		}
		return want
	}
	for {
		left := b.left.Load()
		if left <= 0 {
			return 0
		}
		n := min(int64(want), left)
		if b.left.CompareAndSwap(left, left-n) {
			return int(n)
		}
	}
}

// checkDecr is the least a reservation has to do: check a counter and take
// one.
var checkDecr = redis.NewScript(`
local left = tonumber(redis.call('GET', KEYS[1]) or '0')
if left <= 0 then return -1 end
return redis.call('DECR', KEYS[1])
`)

func redisCeiling(ctx context.Context, cfg Config) (bench.Ceiling, error) {
	rdb, err := redisClient(cfg.RedisURL, cfg.RedisGoroutines+8)
	if err != nil {
		return bench.Ceiling{}, err
	}
	defer rdb.Close()
	prefix := uniqueName("ceiling") + ":"
	defer func() { _ = deleteKeys(rdb, prefix) }()
	key := prefix + "stock"
	if err := rdb.Set(ctx, key, 1<<50, 0).Err(); err != nil {
		return bench.Ceiling{}, err
	}
	if err := checkDecr.Load(ctx, rdb).Err(); err != nil {
		return bench.Ceiling{}, err
	}
	b := newBudget(cfg)
	var ops atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, cfg.RedisGoroutines)
	began := time.Now()
	for range cfg.RedisGoroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b.take(1) == 1 && ctx.Err() == nil {
				v, err := checkDecr.Run(ctx, rdb, []string{key}).Int64()
				if err != nil {
					errs <- err
					return
				}
				if v < 0 {
					errs <- errors.New("counter exhausted")
					return
				}
				ops.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(began)
	close(errs)
	if err := <-errs; err != nil {
		return bench.Ceiling{}, err
	}
	return bench.Ceiling{Name: "redis check-and-DECR script", Ops: ops.Load(), Elapsed: elapsed, Rate: bench.Rate(ops.Load(), elapsed), Unit: "ops/s"}, nil
}

// amqpCeiling publishes persistent messages, the size of an order message,
// to a fresh durable queue of the given type, keeping cfg.AMQPWindow
// confirms outstanding, and counts the confirmed ones.
func amqpCeiling(ctx context.Context, cfg Config, queueType string) (bench.Ceiling, error) {
	conn, err := amqp.DialConfig(cfg.AMQPURL, amqp.Config{Dial: amqp.DefaultDial(10 * time.Second), Heartbeat: 10 * time.Second})
	if err != nil {
		return bench.Ceiling{}, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return bench.Ceiling{}, err
	}
	q := uniqueName("ceiling_" + queueType)
	if _, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": queueType}); err != nil {
		return bench.Ceiling{}, fmt.Errorf("declaring %s: %w", q, err)
	}
	defer func() {
		if dch, err := conn.Channel(); err == nil {
			_, _ = dch.QueueDelete(q, false, false, false)
		}
	}()
	if err := ch.Confirm(false); err != nil {
		return bench.Ceiling{}, err
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, cfg.AMQPWindow+1))
	returns := ch.NotifyReturn(make(chan amqp.Return, 64))
	var returned atomic.Int64
	go func() {
		for range returns {
			returned.Add(1)
		}
	}()

	body := queue.EncodeOrder(seckill.OrderMessage{
		OrderRef: "oabcdefghijklmnopqrstuvwxyz234567", UserID: 123456, ItemID: 1, RequestID: "oabcdefghijklmnopqrstuvwxyz234567", ReservedAt: time.Now(),
	})
	b := newBudget(cfg)
	var sent, acked, nacked int64
	outstanding := 0
	wait := func() error {
		select {
		case c, ok := <-confirms:
			if !ok {
				return errors.New("channel closed while waiting for confirms")
			}
			outstanding--
			if c.Ack {
				acked++
			} else {
				nacked++
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	began := time.Now()
	for b.take(1) == 1 {
		for outstanding >= cfg.AMQPWindow {
			if err := wait(); err != nil {
				return bench.Ceiling{}, err
			}
		}
		err := ch.PublishWithContext(ctx, "", q, true, false, amqp.Publishing{
			DeliveryMode: amqp.Persistent,
			ContentType:  "application/json",
			MessageId:    strconv.FormatInt(sent, 10),
			Timestamp:    time.Now(),
			Body:         body,
		})
		if err != nil {
			return bench.Ceiling{}, fmt.Errorf("publishing: %w", err)
		}
		sent++
		outstanding++
	}
	for outstanding > 0 {
		if err := wait(); err != nil {
			return bench.Ceiling{}, err
		}
	}
	elapsed := time.Since(began)
	if nacked > 0 || returned.Load() > 0 {
		return bench.Ceiling{}, fmt.Errorf("%d nacked and %d returned of %d", nacked, returned.Load(), sent)
	}
	return bench.Ceiling{Name: "rabbitmq " + queueType + " queue, confirmed", Ops: acked, Elapsed: elapsed, Rate: bench.Rate(acked, elapsed), Unit: "msg/s"}, nil
}

const ceilingTable = `CREATE TABLE ceiling_orders (
	id          bigserial   PRIMARY KEY,
	order_ref   text        NOT NULL UNIQUE,
	user_id     bigint      NOT NULL,
	item_id     bigint      NOT NULL,
	reserved_at timestamptz NOT NULL,
	created_at  timestamptz NOT NULL DEFAULT now(),
	UNIQUE (user_id, item_id)
);
CREATE INDEX ON ceiling_orders (item_id);`

const ceilingInsert = `
	INSERT INTO ceiling_orders (order_ref, user_id, item_id, reserved_at)
	SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::timestamptz[])
	ON CONFLICT DO NOTHING`

// pgCeiling inserts batches of cfg.PGBatch rows, one transaction each, as
// the worker does, into a table shaped like orders (without its foreign
// keys), from conns connections.
func pgCeiling(ctx context.Context, cfg Config, conns int) (bench.Ceiling, error) {
	tdb, err := createDB(ctx, cfg.PGURL, uniqueName("ceiling"))
	if err != nil {
		return bench.Ceiling{}, err
	}
	defer func() { _ = tdb.drop() }()
	pcfg, err := pgxpool.ParseConfig(tdb.url)
	if err != nil {
		return bench.Ceiling{}, err
	}
	pcfg.MaxConns = int32(conns)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return bench.Ceiling{}, err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, ceilingTable); err != nil {
		return bench.Ceiling{}, err
	}
	b := newBudget(cfg)
	var nextUser, rows atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	began := time.Now()
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			refs := make([]string, cfg.PGBatch)
			users := make([]int64, cfg.PGBatch)
			items := make([]int64, cfg.PGBatch)
			at := make([]time.Time, cfg.PGBatch)
			for ctx.Err() == nil {
				n := b.take(cfg.PGBatch)
				if n == 0 {
					return
				}
				first := nextUser.Add(int64(n)) - int64(n)
				now := time.Now()
				for i := range n {
					u := first + int64(i) + 1
					refs[i], users[i], items[i], at[i] = "o"+strconv.FormatInt(u, 36)+"abcdefghijklmnopqrstuvwxyz", u, 1, now
				}
				var tag int64
				err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					t, err := tx.Exec(ctx, ceilingInsert, refs[:n], users[:n], items[:n], at[:n])
					tag = t.RowsAffected()
					return err
				})
				if err != nil {
					errs <- err
					return
				}
				rows.Add(tag)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(began)
	close(errs)
	if err := <-errs; err != nil {
		return bench.Ceiling{}, err
	}
	return bench.Ceiling{Name: bench.PGCeilingName(conns), Ops: rows.Load(), Elapsed: elapsed, Rate: bench.Rate(rows.Load(), elapsed), Unit: "rows/s"}, nil
}
