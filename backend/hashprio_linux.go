package backend

import (
	"fmt"
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
func hashProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
