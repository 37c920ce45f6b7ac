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

// Monotonic returns CLOCK_MONOTONIC. It reads the clock through Go's
// own monotonic reading (the vDSO, no system call: the cache reads it
// for every flow a full cache pushes out), offset by one clock_gettime
// at start: Go's monotonic clock on Linux is CLOCK_MONOTONIC, so the two
// differ by the offset's error only, well under a microsecond.
func (SystemClock) Monotonic() time.Duration {
	return monoAtStart + time.Since(wallAtStart)
}

// wallAtStart and monoAtStart are one instant on Go's clock and on
// CLOCK_MONOTONIC: the midpoint of the quickest of a few clock_gettime
// calls (a call preempted halfway would offset every reading).
var wallAtStart, monoAtStart = readMonotonic()

func readMonotonic() (time.Time, time.Duration) {
	var wall time.Time
	var mono, gap time.Duration
	for i := range 8 {
		var ts unix.Timespec
		before := time.Now()
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			// CLOCK_MONOTONIC cannot fail on Linux; keep the type simple.
			panic("clock_gettime(CLOCK_MONOTONIC): " + err.Error())
		}
		d := time.Since(before)
		if i == 0 || d < gap {
			wall, mono, gap = before.Add(d/2), time.Duration(ts.Nano()), d
		}
	}
	return wall, mono
}
