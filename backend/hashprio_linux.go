package backend

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// lowerThreadPriority sets the nice value of the calling OS thread (the
// caller has locked its goroutine to it). Raising a priority needs
// privileges; lowering one never does.
func lowerThreadPriority(nice int) error {
	if err := unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), nice); err != nil {
		return fmt.Errorf("lowering the hashing thread's priority: %w", err)
	}
	return nil
}

// onMainThread reports whether the calling thread is the process's main
// thread (its thread id is the process id).
func onMainThread() bool { return unix.Gettid() == unix.Getpid() }

// hashProcAttr kills the hashing process when the thread that started it
// ends (it ends only when the process has: a backend that dies takes it
// along).
//
// It runs in a session of its own: with autogroup scheduling (Linux's
// default on desktops and many servers, sched_autogroup_enabled), each
// session is a group the kernel shares the CPU between first, so the
// hasher's CPU time must not count against the backend's session.
func hashProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setsid: true}
}

// lowerGroupPriority gives the calling process's autogroup (its session,
// see hashProcAttr) the lowest priority. Without autogroup scheduling
// there is no such group and nothing to do.
func lowerGroupPriority() error {
	err := os.WriteFile("/proc/self/autogroup", []byte("19"), 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
