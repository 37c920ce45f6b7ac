package integration

// Helpers of TestCompare: the machine's and a process's CPU time, memory
// and load from procfs, and the packets nfcapd stored.

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// machineBusy is the busy time of every CPU together from /proc/stat:
// user, nice, system, irq, softirq and steal (guest time is inside user).
func machineBusy(t *testing.T) time.Duration {
	t.Helper()
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	d, err := parseProcStatBusy(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// procCPU is utime+stime of a process from /proc/PID/stat.
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	d, err := parsePIDStatCPU(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// watchHWM samples the VmHWM of pid every 50 ms until it exits or the
// returned function is called for the last time after it exited; the
// function returns the highest value seen so far.
func watchHWM(pid int) func() uint64 {
	read := func() (uint64, bool) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return 0, false
		}
		kb, ok := parseVmHWM(string(b))
		return kb, ok
	}
	peak := make(chan uint64, 1)
	peak <- 0
	set := func(v uint64) {
		p := <-peak
		peak <- max(p, v)
	}
	go func() {
		for {
			v, ok := read()
			if !ok {
				return
			}
			set(v)
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return func() uint64 {
		if v, ok := read(); ok {
			set(v)
		}
		p := <-peak
		peak <- p
		return p
	}
}

func loadAvg1(t *testing.T) float64 {
	t.Helper()
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		t.Fatalf("parse /proc/loadavg %q: %v", b, err)
	}
	return v
}

func kernelRelease() string {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return "?"
	}
	var b []byte
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}

func cpuCount() int {
	var s unix.CPUSet
	if err := unix.SchedGetaffinity(0, &s); err != nil {
		return 0
	}
	return s.Count()
}

// nfcapdPackets sums the packets of every flow in the finished nfcapd
// files under dir (nfdump -I reads each file's statistics record).
func nfcapdPackets(t *testing.T, dir string) uint64 {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "nfcapd.[0-9]*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no finished nfcapd file in %s (%v)", dir, err)
	}
	var sum uint64
	for _, f := range files {
		n, err := parseNfdumpInfoPackets(sh(t, "nfdump", "-I", "-r", f))
		if err != nil {
			t.Fatalf("nfdump -I -r %s: %v", f, err)
		}
		sum += n
	}
	return sum
}
