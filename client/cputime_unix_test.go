//go:build unix

package client

import (
	"syscall"
	"time"
)

// processCPU is the CPU time (user and system) this process has used so
// far: benchmarks report it per operation, a figure the other work of a
// shared machine disturbs less than the elapsed time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
