package exporter

import (
	"time"

	"golang.org/x/sys/unix"
)

// Clock gives the wall time and the kernel's CLOCK_MONOTONIC, the clock of
// bpf_ktime_get_ns. Injected so the cache is tested without a kernel.
type Clock interface {
	Now() time.Time
	Monotonic() time.Duration
}

// SystemClock reads the real clocks.
type SystemClock struct{}

// Now returns the wall time.
func (SystemClock) Now() time.Time { return time.Now() }

// Monotonic returns CLOCK_MONOTONIC.
func (SystemClock) Monotonic() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		// CLOCK_MONOTONIC cannot fail on Linux; keep the type simple.
		panic("clock_gettime(CLOCK_MONOTONIC): " + err.Error())
	}
	return time.Duration(ts.Nano())
}
