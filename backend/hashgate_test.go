package backend

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"seckill"
	"seckill/httpapi"
)

// hooked is a gate whose operations run the function registered under
// their password instead of bcrypt.
func hooked(slots, queue int) (*hashGate, func(name string, f func())) {
	var mu sync.Mutex
	fs := map[string]func(){}
	g := &hashGate{}
	g.init(slots, queue)
	g.exec = func(op hashOp) hashResult {
		mu.Lock()
		f := fs[string(op.Password)]
		mu.Unlock()
		f()
		return hashResult{OK: true}
	}
	return g, func(name string, f func()) {
		mu.Lock()
		fs[name] = f
		mu.Unlock()
	}
}

func op(name string) hashOp { return hashOp{Password: []byte(name)} }

// Issue 13 M5: password hashing is bounded: slots at once, a short queue,
// then 503 overloaded with Retry-After at once (today every login hashes
// at once, however many there are).
func TestHashGateBoundsAndSheds(t *testing.T) {
	t.Parallel()
	g, on := hooked(1, 1)
	ctx := context.Background()
	release := make(chan struct{})
	running := make(chan struct{})
	ran := make(chan struct{}, 1)
	on("first", func() { close(running); <-release })
	on("queued", func() { ran <- struct{}{} })
	on("third", func() { t.Error("ran past a full queue") })
	first := make(chan error, 1)
	go func() { _, err := g.do(ctx, op("first")); first <- err }()
	<-running
	queued := make(chan error, 1)
	go func() { _, err := g.do(ctx, op("queued")); queued <- err }()
	for len(g.queue) == 0 {
		time.Sleep(time.Millisecond)
	}
	began := time.Now()
	_, err := g.do(ctx, op("third"))
	if seckill.ErrorCode(err) != seckill.EOverloaded || httpapi.Status(seckill.ErrorCode(err)) != 503 {
		t.Fatalf("third call: %v, want overloaded", err)
	}
	// Not waiting means well under hashWait (1 s), the wait of a queued
	// call; 100 ms was within reach of a busy machine's scheduling.
	if d := time.Since(began); d > hashWait/2 {
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
	on("block", func() { close(started); <-block })
	on("late", func() {})
	go func() { _, _ = g.do(ctx, op("block")) }()
	<-started
	began = time.Now()
	if _, err := g.do(ctx, op("late")); seckill.ErrorCode(err) != seckill.EOverloaded || time.Since(began) < hashWait {
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
