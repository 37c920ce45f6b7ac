package exporter

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func monotonicNow(t *testing.T) time.Duration {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ts.Nano())
}

// SystemClock.Monotonic is CLOCK_MONOTONIC, read without a system call:
// between two clock_gettime calls, to within the start's offset error.
func TestSystemClockMonotonic(t *testing.T) {
	const slack = time.Millisecond
	var c SystemClock
	last := c.Monotonic()
	for range 1000 {
		before := monotonicNow(t)
		m := c.Monotonic()
		after := monotonicNow(t)
		if m < before-slack || m > after+slack {
			t.Fatalf("Monotonic %v, want within %v of [%v, %v]", m, slack, before, after)
		}
		if m < last {
			t.Fatalf("Monotonic went back: %v after %v", m, last)
		}
		last = m
	}
}
