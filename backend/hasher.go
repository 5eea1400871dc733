package backend

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Password hashing runs in a child process at the lowest CPU priority
// (issue 13 M5): the kernel gives the backend's purchases the CPU first and
// bcrypt what is left. A separate process, not low-priority threads of the
// backend: a Go thread holding a scheduler slot (a P) while the kernel
// keeps it waiting would hold up the backend's garbage collector and the
// goroutines queued on that P (a priority inversion measured at a 67 ms
// purchase median during a flood, against 13 ms without).

// hashNice is the nice value of the hashing process: the lowest CPU
// priority. Under contention the kernel's fair scheduler gives a nice-19
// thread about 1.5 % of a core beside a nice-0 one, and all the idle time.
const hashNice = 19

// hashOp is one bcrypt operation: with Gen, hash Password; otherwise
// compare Password with Hash.
type hashOp struct {
	ID       uint64 `json:"id"`
	Gen      bool   `json:"gen,omitempty"`
	Password []byte `json:"password"`
	Hash     []byte `json:"hash,omitempty"`
}

// hashResult is its answer: the new hash, or whether the password matched.
type hashResult struct {
	ID   uint64 `json:"id"`
	Hash []byte `json:"hash,omitempty"`
	OK   bool   `json:"ok,omitempty"`
	Err  string `json:"err,omitempty"`
}

func (op hashOp) run() hashResult {
	r := hashResult{ID: op.ID}
	if op.Gen {
		h, err := bcrypt.GenerateFromPassword(op.Password, bcrypt.DefaultCost)
		if err != nil {
			r.Err = err.Error()
		}
		r.Hash = h
		return r
	}
	r.OK = bcrypt.CompareHashAndPassword(op.Hash, op.Password) == nil
	return r
}

// ServeHasher is the password hashing process (`seckill hasher`, started
// by the backend): it reads operations, one JSON object a line, from r,
// runs each on its own goroutine (the backend bounds how many it sends),
// and writes each answer, one a line, to w, until r ends; then it waits for
// the ones running.
func ServeHasher(r io.Reader, w io.Writer) error {
	if err := lowerGroupPriority(); err != nil {
		fmt.Fprintf(os.Stderr, "seckill hasher: lowering its scheduling group's priority: %v\n", err)
	}
	return serveHasher(r, w, hashOp.run)
}

func serveHasher(r io.Reader, w io.Writer, exec func(hashOp) hashResult) error {
	var mu sync.Mutex
	enc := json.NewEncoder(w)
	var wg sync.WaitGroup
	defer wg.Wait()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		var op hashOp
		if err := json.Unmarshal(sc.Bytes(), &op); err != nil {
			return fmt.Errorf("reading a hashing request: %w", err)
		}
		wg.Go(func() {
			res := exec(op)
			mu.Lock()
			defer mu.Unlock()
			_ = enc.Encode(res) // a broken pipe: the backend is gone
		})
	}
	return sc.Err()
}

// hashProc is the backend's side of a running hashing process.
type hashProc struct {
	pid     int
	mu      sync.Mutex
	enc     *json.Encoder
	next    uint64
	pending map[uint64]*pendingHash
	stopped bool
}

type pendingHash struct {
	answer  chan hashResult // buffered; closed when the process ended first
	release func()          // frees the caller's slot
}

// run sends op to the process and waits at most wait for its answer
// (errHashBusy past it), or for ctx. release frees the caller's slot when
// the process has answered or ended, whether the caller still waits or
// not: the process never runs more than the slots. ok is false, release
// not called, when the process is gone: the caller hashes itself.
func (p *hashProc) run(ctx context.Context, op hashOp, wait time.Duration, release func()) (res hashResult, ok bool, err error) {
	ph := &pendingHash{answer: make(chan hashResult, 1), release: release}
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return hashResult{}, false, nil
	}
	p.next++
	op.ID = p.next
	if werr := p.enc.Encode(op); werr != nil {
		p.mu.Unlock()
		return hashResult{}, false, nil
	}
	p.pending[op.ID] = ph
	p.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case r, got := <-ph.answer:
		if !got {
			return hashResult{}, true, errHashBusy
		}
		return r, true, nil
	case <-ctx.Done():
		return hashResult{}, true, ctx.Err()
	case <-t.C:
		return hashResult{}, true, errHashBusy
	}
}

// read hands every answer to its caller until the process's output ends,
// then answers the rest "gone".
func (p *hashProc) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		var res hashResult
		if json.Unmarshal(sc.Bytes(), &res) != nil {
			continue
		}
		p.mu.Lock()
		ph := p.pending[res.ID]
		delete(p.pending, res.ID)
		p.mu.Unlock()
		if ph != nil {
			ph.release()
			ph.answer <- res
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped = true
	for id, ph := range p.pending {
		delete(p.pending, id)
		ph.release()
		close(ph.answer)
	}
}

// runHashProcess runs the hashing process (argv) at the lowest CPU
// priority and publishes it in slot until ctx ends, then withdraws it,
// closes its input (it finishes what it has) and waits for it. A process
// that died is started again after a second: a crash costs hashing, never
// the backend.
func runHashProcess(ctx context.Context, slot *atomic.Pointer[hashProc], argv []string, log *slog.Logger) error {
	for {
		err := runHashProcessOnce(ctx, slot, argv, log)
		if ctx.Err() != nil {
			return nil
		}
		log.Error("the password hashing process ended; starting it again", "err", err)
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func runHashProcessOnce(ctx context.Context, slot *atomic.Pointer[hashProc], argv []string, log *slog.Logger) error {
	inR, inW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("starting the password hashing process: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return fmt.Errorf("starting the password hashing process: %w", err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, os.Stderr
	cmd.SysProcAttr = hashProcAttr()
	// Started from a thread of its own whose priority was lowered first:
	// the process inherits it, every thread of it included. That thread
	// then waits for the process, and is never unlocked: the runtime ends
	// it with its goroutine.
	started := make(chan error, 1)
	exited := make(chan error, 1)
	go runOnHashThread(func() {
		if err := lowerThreadPriority(hashNice); err != nil {
			log.Warn("password hashing runs at normal CPU priority", "err", err)
		}
		if err := cmd.Start(); err != nil {
			started <- fmt.Errorf("starting the password hashing process %s: %w", argv[0], err)
			return
		}
		started <- nil
		exited <- cmd.Wait()
	})
	err = <-started
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return err
	}
	p := &hashProc{pid: cmd.Process.Pid, enc: json.NewEncoder(inW), pending: map[uint64]*pendingHash{}}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		p.read(outR)
	}()
	slot.Store(p)
	select {
	case <-ctx.Done():
	case <-readDone: // the process closed its output: it is ending
	}
	slot.CompareAndSwap(p, nil)
	p.mu.Lock()
	inW.Close() // the process finishes what it has, then exits
	p.mu.Unlock()
	<-readDone
	outR.Close()
	werr := <-exited
	if werr == nil {
		werr = errors.New("exited")
	}
	return werr
}

// runOnHashThread runs f locked to an OS thread other than the process's
// main thread, and never unlocks it: the runtime ends that thread with its
// goroutine. The runtime cannot end the main thread when a goroutine
// locked to it ends (it parks it for good instead), so a lowered priority
// on it would stay, for every goroutine it runs later, and show as the
// whole process's in ps and top. When the calling goroutine is on the main
// thread, it keeps that thread (locked to it, not lowered) while f runs in
// a goroutine of its own, which then cannot be on it; before, after 100
// tries it lowered the main thread anyway (TestHashThreadNeverMain).
func runOnHashThread(f func()) {
	runtime.LockOSThread()
	if !onMainThread() {
		f()
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runOnHashThread(f)
	}()
	<-done
	runtime.UnlockOSThread()
}
