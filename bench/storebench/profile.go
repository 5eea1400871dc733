package storebench

import (
	"io"
	"runtime/pprof"
)

func startCPUProfile(w io.Writer) error { return pprof.StartCPUProfile(w) }

func stopCPUProfile() { pprof.StopCPUProfile() }
