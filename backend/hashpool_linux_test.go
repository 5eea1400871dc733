package backend

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// threadNice reads the nice value of thread tid of this process from
// /proc (field 19 of stat).
func threadNice(t *testing.T, tid int) int {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/stat", tid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	n, err := strconv.Atoi(f[16])
	if err != nil {
		t.Fatalf("stat of %d: %q: %v", tid, s, err)
	}
	return n
}

// nicedThreads counts this process's threads at the hashing priority.
func nicedThreads(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		tid, _ := strconv.Atoi(e.Name())
		if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", tid)); err == nil && threadNice(t, tid) == hashNice {
			n++
		}
	}
	return n
}

// Issue 13 M5: while RunHashing runs, every hash runs on one of exactly
// `slots` OS threads at nice 19, its goroutine stays on that thread, no
// other thread of the process is lowered, and when RunHashing returns the
// threads are gone and hashing runs on the caller again.
func TestHashingRunsOnLowPriorityThreads(t *testing.T) {
	// Not parallel: it counts the process's niced threads.
	s := &Service{log: slog.New(slog.DiscardHandler)}
	s.SetPasswordHashing(2, 4)
	if n := nicedThreads(t); n != 0 {
		t.Fatalf("%d niced threads before the pool", n)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.RunHashing(ctx) }()
	for s.hash.pool.Load() == nil {
		time.Sleep(time.Millisecond)
	}

	// Two hashes at once, each waiting for the other: both threads in use.
	var mu sync.Mutex
	tids := map[int]bool{}
	var both sync.WaitGroup
	both.Add(2)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			err := s.hash.do(context.Background(), func() {
				tid := unix.Gettid()
				both.Done()
				both.Wait()
				for range 20 { // yields and sleeps: the goroutine stays on its thread
					runtime.Gosched()
					time.Sleep(time.Millisecond)
					if now := unix.Gettid(); now != tid {
						t.Errorf("hash moved from thread %d to %d", tid, now)
					}
				}
				if n := threadNice(t, tid); n != hashNice {
					t.Errorf("hashing thread %d at nice %d, want %d", tid, n, hashNice)
				}
				mu.Lock()
				tids[tid] = true
				mu.Unlock()
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if len(tids) != 2 {
		t.Fatalf("hashes ran on threads %v, want 2 distinct", tids)
	}
	// Many more hashes, while the runtime starts threads of its own: still
	// exactly two threads lowered, and only the pool's.
	var more sync.WaitGroup
	for range 50 {
		more.Go(func() {
			_ = s.hash.do(context.Background(), func() {
				mu.Lock()
				defer mu.Unlock()
				if tid := unix.Gettid(); !tids[tid] {
					t.Errorf("a hash ran on thread %d, not a pool thread", tid)
				}
			})
		})
		more.Go(func() { time.Sleep(time.Millisecond) })
	}
	more.Wait()
	if n := nicedThreads(t); n != 2 {
		t.Fatalf("%d niced threads while the pool runs, want 2", n)
	}
	runtime.LockOSThread()
	if n := threadNice(t, unix.Gettid()); n != 0 {
		t.Errorf("the test's own thread at nice %d", n)
	}
	runtime.UnlockOSThread()

	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s.hash.pool.Load() != nil {
		t.Fatal("pool still published after RunHashing returned")
	}
	// The locked goroutines ended, so did their threads (the runtime may
	// take a moment to reap them).
	waitNoNiced(t)
	var tid int
	if err := s.hash.do(context.Background(), func() { tid = unix.Gettid() }); err != nil {
		t.Fatal(err)
	}
	if tids[tid] {
		t.Fatalf("hash after the stop ran on pool thread %d", tid)
	}
	if err := s.RunHashing(canceled()); err != nil {
		t.Fatalf("running again after a stop: %v", err)
	}
	waitNoNiced(t)
}

// waitNoNiced waits until the threads of stopped pools are gone (the
// runtime ends a locked goroutine's thread as the goroutine ends; the
// kernel reaps it a moment later).
func waitNoNiced(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for nicedThreads(t) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d niced threads left after the pool stopped", nicedThreads(t))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
