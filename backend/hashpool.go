package backend

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// hashNice is the nice value of the hashing threads: the lowest CPU
// priority. Under contention the kernel's fair scheduler gives a nice-19
// thread about 1.5 % of a core beside a nice-0 one, and all the idle time.
const hashNice = 19

// hashPool runs password hashes on a fixed set of goroutines, each locked
// to its own OS thread whose CPU priority was lowered (nice values are per
// thread on Linux). The goroutines never unlock their threads: when they
// end, the runtime ends the threads too, so a lowered priority never
// reaches other goroutines, and threads the runtime starts later never
// inherit it (the runtime clones new threads from a clean template thread
// when the current one is locked).
type hashPool struct {
	jobs    chan hashJob
	stopped chan struct{}
}

type hashJob struct {
	f       func()
	release func() // frees the caller's slot, once f has run
	done    chan struct{}
}

// run runs f on a pool thread, then release, and waits at most wait for
// it: past that, or when ctx ends, it returns errHashBusy or ctx's error
// at once, and f and release still run (f must not touch what the caller
// reads after an error). When the pool has stopped, f runs on the caller.
func (p *hashPool) run(ctx context.Context, f func(), wait time.Duration, release func()) error {
	j := hashJob{f: f, release: release, done: make(chan struct{})}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case p.jobs <- j:
	case <-p.stopped:
		defer release()
		f()
		return nil
	case <-ctx.Done():
		release()
		return ctx.Err()
	case <-t.C:
		release()
		return errHashBusy
	}
	select {
	case <-j.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return errHashBusy
	}
}

func (p *hashPool) work(first bool, log *slog.Logger) {
	lockHashThread()
	if err := lowerThreadPriority(hashNice); err != nil && first {
		log.Warn("password hashing runs at normal CPU priority", "err", err)
	}
	for {
		select {
		case j := <-p.jobs:
			j.f()
			j.release()
			close(j.done)
		case <-p.stopped:
			return
		}
	}
}

// lockHashThread locks the calling goroutine to an OS thread other than
// the process's main thread, and never unlocks it (see hashPool). The
// runtime cannot end the main thread when a goroutine locked to it ends (it
// parks it for good instead), and a lowered priority on it would show as
// the whole process's in ps and top. Moving off it is left to the
// scheduler: a few sleeps almost always suffice; should they not, the
// thread is lowered anyway.
func lockHashThread() {
	for range 100 {
		runtime.LockOSThread()
		if !onMainThread() {
			return
		}
		runtime.UnlockOSThread() // not lowered yet: safe to hand back
		time.Sleep(time.Millisecond)
	}
	runtime.LockOSThread()
}

// runHashPool publishes a pool of n threads in slot until ctx ends, then
// withdraws it and waits for its goroutines. Hashes that were waiting for
// a thread then run on their callers' goroutines.
func runHashPool(ctx context.Context, slot *atomic.Pointer[hashPool], n int, log *slog.Logger) error {
	p := &hashPool{jobs: make(chan hashJob), stopped: make(chan struct{})}
	if !slot.CompareAndSwap(nil, p) {
		return errors.New("running password hashing: already running")
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { p.work(i == 0, log) })
	}
	<-ctx.Done()
	slot.CompareAndSwap(p, nil)
	close(p.stopped)
	wg.Wait()
	return nil
}
