//go:build !linux

package backend

import (
	"errors"
	"syscall"
)

// lowerThreadPriority is Linux only (nice values per thread): elsewhere
// the hashing threads run at normal priority, bounded by the gate alone.
func lowerThreadPriority(int) error {
	return errors.New("per-thread CPU priority is supported on Linux only")
}

// onMainThread is false where priorities are not lowered: any thread will do.
func onMainThread() bool { return false }

func hashProcAttr() *syscall.SysProcAttr { return nil }

func lowerGroupPriority() error { return nil }
