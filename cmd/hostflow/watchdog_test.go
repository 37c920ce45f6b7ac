package main

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestWatchdogTimeout(t *testing.T) {
	for _, tc := range []struct {
		usec, pid string
		want      time.Duration
	}{
		{"", "", 0},
		{"30000000", "", 30 * time.Second},
		{"30000000", "4242", 30 * time.Second},
		{"30000000", "4243", 0}, // for another process
		{"0", "", 0},
		{"-5", "", 0},
		{"30s", "", 0},
	} {
		env := map[string]string{"WATCHDOG_USEC": tc.usec, "WATCHDOG_PID": tc.pid}
		if got := watchdogTimeout(func(k string) string { return env[k] }, 4242); got != tc.want {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: %v, want %v", tc.usec, tc.pid, got, tc.want)
		}
	}
}

// TestWatchdogPingsWhileLoopRuns runs the main loop under a fake systemd
// (a notify socket and WATCHDOG_USEC of 200ms): WATCHDOG=1 arrives while
// the loop handles its ticks, none while a drain is stuck, and the pings
// resume once it returns.
func TestWatchdogPingsWhileLoopRuns(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))

	var stuck atomic.Bool
	inDrain, release := make(chan struct{}, 1), make(chan struct{})
	f := newFakeFetcher(t)
	f.onDrain = func() {
		if stuck.Load() {
			inDrain <- struct{}{}
			<-release
		}
	}
	d := testDaemon(t, f, "--poll-interval", "20ms")
	if d.notify.watchdog != 200*time.Millisecond {
		t.Fatalf("watchdog %v, want the 200ms of WATCHDOG_USEC", d.notify.watchdog)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.loop(ctx, nil) }()
	defer func() {
		stuck.Store(false)
		select {
		case <-release:
		default:
			close(release)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("loop: %v", err)
		}
	}()

	// pings reads datagrams until limit and counts the WATCHDOG=1 ones.
	pings := func(limit time.Duration, want int) int {
		n := 0
		deadline := time.Now().Add(limit)
		buf := make([]byte, 1024)
		for n < want {
			_ = ln.SetReadDeadline(deadline)
			k, err := ln.Read(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(buf[:k]) == "WATCHDOG=1" {
				n++
			} else if !strings.Contains(string(buf[:k]), "READY=1") {
				t.Errorf("unexpected datagram %q", buf[:k])
			}
		}
		return n
	}

	if n := pings(10*time.Second, 3); n != 3 {
		t.Fatalf("%d watchdog pings while the loop runs, want 3", n)
	}
	stuck.Store(true)
	<-inDrain
	// What was sent before the drain got stuck is in the socket already:
	// the loop pings itself, and a datagram is queued when its send
	// returns. Read all that is there without waiting.
	drainSocket(t, ln)
	if n := pings(time.Second, 1); n != 0 {
		t.Errorf("%d watchdog pings while the loop is stuck in a drain, want none", n)
	}
	stuck.Store(false)
	close(release)
	if n := pings(10*time.Second, 1); n != 1 {
		t.Errorf("no watchdog ping after the drain returned")
	}
}

// drainSocket reads the datagrams queued on ln, without waiting for more.
func drainSocket(t *testing.T, ln *net.UnixConn) {
	t.Helper()
	rc, err := ln.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var rerr error
	buf := make([]byte, 1024)
	err = rc.Read(func(fd uintptr) bool {
		for {
			_, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
			if rerr != nil {
				return true
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(rerr, unix.EAGAIN) {
		t.Fatalf("drain the notify socket: %v", rerr)
	}
}
