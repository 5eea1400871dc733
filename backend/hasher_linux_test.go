package backend

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// threadNice reads the nice value of thread tid of process pid from /proc
// (field 19 of stat); ok is false when the thread is gone.
func threadNice(t *testing.T, pid, tid int) (int, bool) {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
	if err != nil {
		return 0, false
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	n, err := strconv.Atoi(f[16])
	if err != nil {
		t.Fatalf("stat of %d/%d: %q: %v", pid, tid, s, err)
	}
	return n, true
}

// threadNices returns the nice value of every thread of process pid.
func threadNices(t *testing.T, pid int) []int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		tid, _ := strconv.Atoi(e.Name())
		if n, ok := threadNice(t, pid, tid); ok {
			out = append(out, n)
		}
	}
	return out
}

func count(ns []int, v int) int {
	c := 0
	for _, n := range ns {
		if n == v {
			c++
		}
	}
	return c
}

// Issue 13 M5: the hashing process runs every thread at nice 19, in a
// session (autogroup) of its own at nice 19 too; in the
// backend exactly one thread is lowered (the one that started the process
// and waits for it, its goroutine locked to it), never the test's own; and
// after the stop the process and that thread are gone.
func TestHashProcessRunsAtLowPriority(t *testing.T) {
	before := count(threadNices(t, os.Getpid()), hashNice)
	s, stop := hashService(t, "1", 2, 4)
	// Some hashes, so the process has started its threads.
	for range 4 {
		if _, err := s.hash.do(context.Background(), hashOp{Gen: true, Password: []byte("p")}); err != nil {
			t.Fatal(err)
		}
	}
	pid := s.hash.proc.Load().pid
	ns := threadNices(t, pid)
	if len(ns) < 2 || count(ns, hashNice) != len(ns) {
		t.Fatalf("hashing process threads at nice %v, want all %d", ns, hashNice)
	}
	// Its own session, and so its own autogroup, at the lowest priority.
	if sid, _ := unix.Getsid(pid); sid != pid {
		t.Fatalf("hashing process %d in session %d, want its own", pid, sid)
	}
	if ag, err := os.ReadFile(fmt.Sprintf("/proc/%d/autogroup", pid)); err == nil && !strings.HasSuffix(strings.TrimSpace(string(ag)), "nice 19") {
		t.Fatalf("hashing process's autogroup: %q, want nice 19", ag)
	}
	if n := count(threadNices(t, os.Getpid()), hashNice); n != before+1 {
		t.Fatalf("%d lowered threads in the backend, want %d", n, before+1)
	}
	runtime.LockOSThread()
	n, _ := threadNice(t, os.Getpid(), unix.Gettid())
	runtime.UnlockOSThread()
	if n != 0 {
		t.Fatalf("the test's own thread at nice %d", n)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for count(threadNices(t, os.Getpid()), hashNice) != before || threadNices(t, pid) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("after the stop: %d lowered threads in the backend (want %d), process threads %v",
				count(threadNices(t, os.Getpid()), hashNice), before, threadNices(t, pid))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestHashThreadNeverMain: started from a goroutine on the process's main
// thread (as any goroutine may be), the hashing thread is another one: the
// main thread is never lowered, since the runtime never ends it (before,
// after 100 tries it was lowered anyway, and stayed at nice 19 after the
// hashing process stopped: TestHashProcessRunsAtLowPriority failed on a
// loaded machine with "1 lowered threads in the backend").
func TestHashThreadNeverMain(t *testing.T) {
	ran := make(chan [2]bool, 1)
	mainThread <- func() {
		onMain := onMainThread()
		runOnHashThread(func() {
			if err := lowerThreadPriority(hashNice); err != nil {
				t.Error(err)
			}
			ran <- [2]bool{onMain, onMainThread()}
		})
	}
	r := <-ran
	if !r[0] {
		t.Fatal("the test binary's main goroutine is not on the main thread")
	}
	if r[1] {
		t.Fatal("the hashing thread is the main thread")
	}
	if n, _ := threadNice(t, os.Getpid(), os.Getpid()); n != 0 {
		t.Fatalf("the main thread at nice %d", n)
	}
}
