package backend

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"seckill"
)

// TestMain doubles as the hashing process of these tests: with
// SECKILL_TEST_HASHER set, the test binary serves hashes on stdin and
// stdout ("slow": each takes 600 ms more) instead of running tests.
func TestMain(m *testing.M) {
	switch os.Getenv("SECKILL_TEST_HASHER") {
	case "":
		// The tests run in a goroutine; this one, locked to the main
		// thread (init), runs what they send on mainThread.
		done := make(chan int, 1)
		go func() { done <- m.Run() }()
		for {
			select {
			case code := <-done:
				os.Exit(code)
			case f := <-mainThread:
				f()
			}
		}
	case "slow":
		err := serveHasher(os.Stdin, os.Stdout, func(op hashOp) hashResult { time.Sleep(600 * time.Millisecond); return op.run() })
		if err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	default:
		if err := ServeHasher(os.Stdin, os.Stdout); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// mainThread runs functions on the test binary's main goroutine, locked to
// the process's main thread, for tests of code that must never lower that
// thread (TestHashThreadNeverMain).
var mainThread = make(chan func())

func init() { runtime.LockOSThread() } // main then runs on the main thread

// hashService runs a Service's hashing process (this test binary, mode
// "1" or "slow") until the test ends; it returns the process's pid.
func hashService(t *testing.T, mode string, slots, queue int) (*Service, func() error) {
	t.Setenv("SECKILL_TEST_HASHER", mode)
	s := &Service{log: slog.New(slog.DiscardHandler)}
	s.SetPasswordHashing(slots, queue)
	// At nice 19 on a loaded machine (and -race) a hash may take seconds.
	s.hash.runWait = time.Minute
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.RunHashing(ctx, []string{os.Args[0]}) }()
	var stopped bool
	var err error
	wait := func() error {
		if !stopped {
			stop()
			err, stopped = <-done, true
		}
		return err
	}
	t.Cleanup(func() { _ = wait() })
	for s.hash.proc.Load() == nil {
		time.Sleep(time.Millisecond)
	}
	return s, wait
}

// The hashing process hashes and compares like bcrypt in process, and the
// backend falls back to hashing itself once it is stopped.
func TestHashProcessHashes(t *testing.T) {
	s, stop := hashService(t, "1", 2, 4)
	ctx := context.Background()
	res, err := s.hash.do(ctx, hashOp{Gen: true, Password: []byte("correct horse")})
	if err != nil || res.Err != "" {
		t.Fatalf("hashing: %v %q", err, res.Err)
	}
	if bcrypt.CompareHashAndPassword(res.Hash, []byte("correct horse")) != nil {
		t.Fatalf("the process's hash %q does not verify", res.Hash)
	}
	for pw, want := range map[string]bool{"correct horse": true, "wrong horse": false} {
		r, err := s.hash.do(ctx, hashOp{Password: []byte(pw), Hash: res.Hash})
		if err != nil || r.OK != want {
			t.Fatalf("comparing %q: ok %v, %v; want %v", pw, r.OK, err, want)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if s.hash.proc.Load() != nil {
		t.Fatal("the process is still published after the stop")
	}
	if r, err := s.hash.do(ctx, hashOp{Password: []byte("correct horse"), Hash: res.Hash}); err != nil || !r.OK {
		t.Fatalf("after the stop: ok %v, %v", r.OK, err)
	}
}

// A hash in the process that does not finish within runWait (the process
// starved of CPU) answers 503 overloaded; it still finishes, and holds its
// slot until it has. A process that dies is started again, and its callers
// are answered 503 overloaded at once.
func TestHashProcessBoundsTheWaitAndRestarts(t *testing.T) {
	s, stop := hashService(t, "slow", 1, 1)
	s.hash.runWait = 200 * time.Millisecond
	ctx := context.Background()
	began := time.Now()
	_, err := s.hash.do(ctx, hashOp{Gen: true, Password: []byte("x")})
	if seckill.ErrorCode(err) != seckill.EOverloaded {
		t.Fatalf("starved hash: %v, want overloaded", err)
	}
	if d := time.Since(began); d < 200*time.Millisecond || d > 550*time.Millisecond {
		t.Fatalf("answered after %v, want about 200ms", d)
	}
	if len(s.hash.slots) != 1 {
		t.Fatalf("slots held: %d, want 1 (the hash still runs)", len(s.hash.slots))
	}
	// The next call queues until the first hash is done (600 ms in all),
	// then runs (and is too slow itself).
	began = time.Now()
	_, err = s.hash.do(ctx, hashOp{Gen: true, Password: []byte("y")})
	if d := time.Since(began); seckill.ErrorCode(err) != seckill.EOverloaded || d < 400*time.Millisecond {
		t.Fatalf("second call: %v after %v", err, d)
	}

	// Kill the process while a hash runs in it.
	p := s.hash.proc.Load()
	s.hash.runWait = time.Minute
	for len(s.hash.slots) != 0 {
		time.Sleep(10 * time.Millisecond)
	}
	errs := make(chan error, 1)
	go func() { _, err := s.hash.do(ctx, hashOp{Gen: true, Password: []byte("z")}); errs <- err }()
	// The kill must find the hash running (600 ms in the slow process):
	// wait until it was sent (a goroutine started late on a busy machine
	// would send it to the new process, which answers it).
	for {
		p.mu.Lock()
		sent := len(p.pending)
		p.mu.Unlock()
		if sent > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	began = time.Now()
	if err := <-errs; seckill.ErrorCode(err) != seckill.EOverloaded || time.Since(began) > time.Second {
		t.Fatalf("hash in a killed process: %v after %v", err, time.Since(began))
	}
	deadline := time.Now().Add(10 * time.Second)
	for q := s.hash.proc.Load(); q == nil || q == p; q = s.hash.proc.Load() {
		if time.Now().After(deadline) {
			t.Fatal("no new hashing process 10 s after the kill")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(s.hash.slots) != 0 {
		t.Fatalf("%d slots still held after the kill", len(s.hash.slots))
	}
	s.hash.runWait = time.Minute
	if r, err := s.hash.do(ctx, hashOp{Gen: true, Password: []byte("w")}); err != nil || len(r.Hash) == 0 {
		t.Fatalf("after the restart: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
