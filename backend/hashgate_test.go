package backend

import (
	"context"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"seckill"
	"seckill/httpapi"
)

// Issue 13 M5: password hashing is bounded: slots at once, a short queue,
// then 503 overloaded with Retry-After at once (today every login hashes
// at once, however many there are).
func TestHashGateBoundsAndSheds(t *testing.T) {
	t.Parallel()
	var g hashGate
	g.init(1, 1)
	ctx := context.Background()
	release := make(chan struct{})
	running := make(chan struct{})
	first := make(chan error, 1)
	go func() { first <- g.do(ctx, func() { close(running); <-release }) }()
	<-running
	queued := make(chan error, 1)
	ran := make(chan struct{}, 1)
	go func() { queued <- g.do(ctx, func() { ran <- struct{}{} }) }()
	for len(g.queue) == 0 {
		time.Sleep(time.Millisecond)
	}
	began := time.Now()
	err := g.do(ctx, func() { t.Error("ran past a full queue") })
	if seckill.ErrorCode(err) != seckill.EOverloaded || httpapi.Status(seckill.ErrorCode(err)) != 503 {
		t.Fatalf("third call: %v, want overloaded", err)
	}
	if d := time.Since(began); d > 100*time.Millisecond {
		t.Fatalf("refusal took %v: it must not wait", d)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-queued; err != nil {
		t.Fatalf("queued call: %v", err)
	}
	if len(ran) != 1 {
		t.Fatal("the queued call did not run")
	}
	// A queued call waits at most hashWait, then is shed.
	block := make(chan struct{})
	started := make(chan struct{})
	go func() { _ = g.do(ctx, func() { close(started); <-block }) }()
	<-started
	began = time.Now()
	if err := g.do(ctx, func() {}); seckill.ErrorCode(err) != seckill.EOverloaded || time.Since(began) < hashWait {
		t.Fatalf("queued past the wait: %v after %v", err, time.Since(began))
	}
	close(block)
}

func TestHashGateDefault(t *testing.T) {
	t.Parallel()
	var g hashGate
	g.init(0, -1)
	if want := max(1, runtime.NumCPU()/2); cap(g.slots) != want || cap(g.queue) != 2*want {
		t.Fatalf("slots %d queue %d, want %d and %d", cap(g.slots), cap(g.queue), want, 2*want)
	}
}

// A hash on the pool that does not finish within runWait (its thread
// starved of CPU) answers 503 overloaded at once; the hash still
// finishes, and holds its slot until it has.
func TestHashPoolBoundsTheWait(t *testing.T) {
	t.Parallel()
	s := &Service{log: slog.New(slog.DiscardHandler)}
	s.SetPasswordHashing(1, 1)
	s.hash.runWait = 200 * time.Millisecond
	ctx, stop := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- s.RunHashing(ctx) }()
	for s.hash.pool.Load() == nil {
		time.Sleep(time.Millisecond)
	}
	release := make(chan struct{})
	finished := make(chan struct{})
	began := time.Now()
	err := s.hash.do(context.Background(), func() { <-release; close(finished) })
	if seckill.ErrorCode(err) != seckill.EOverloaded || httpapi.Status(seckill.ErrorCode(err)) != 503 {
		t.Fatalf("starved hash: %v, want overloaded", err)
	}
	if d := time.Since(began); d < 200*time.Millisecond || d > 2*time.Second {
		t.Fatalf("answered after %v, want about 200ms", d)
	}
	// The slot is still held: the next call queues, and runs once the
	// first hash is done.
	next := make(chan error, 1)
	ran := false
	go func() { next <- s.hash.do(context.Background(), func() { ran = true }) }()
	for len(s.hash.queue) == 0 {
		time.Sleep(time.Millisecond)
	}
	if len(s.hash.slots) != 1 {
		t.Fatalf("slots held: %d, want 1", len(s.hash.slots))
	}
	close(release)
	<-finished
	if err := <-next; err != nil || !ran {
		t.Fatalf("queued call: %v, ran %v", err, ran)
	}
	// A caller that leaves is answered at once too.
	cctx, cancel := context.WithCancel(context.Background())
	block := make(chan struct{})
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	if err := s.hash.do(cctx, func() { <-block }); err != context.Canceled {
		t.Fatalf("canceled caller: %v", err)
	}
	close(block)
	stop()
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if len(s.hash.slots) != 0 || len(s.hash.queue) != 0 {
		t.Fatalf("after the stop: %d slots, %d queued, want none", len(s.hash.slots), len(s.hash.queue))
	}
}
