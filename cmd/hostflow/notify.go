package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// notifier speaks systemd's sd_notify protocol: one datagram per state
// change to the unix socket in $NOTIFY_SOCKET (a leading @ is the abstract
// namespace, which package net handles). Outside systemd it does nothing.
type notifier struct {
	addr string
	// watchdog is systemd's watchdog timeout for this process
	// (WatchdogSec=), 0 if it has none.
	watchdog time.Duration
}

func newNotifier() notifier {
	n := notifier{addr: os.Getenv("NOTIFY_SOCKET")}
	if n.addr != "" {
		n.watchdog = watchdogTimeout(os.Getenv, os.Getpid())
	}
	return n
}

// watchdogTimeout reads WATCHDOG_USEC, which systemd sets with
// WatchdogSec=. WATCHDOG_PID, when set, names the process it is for: a
// child that inherited the variables does not ping. 0 means no watchdog.
func watchdogTimeout(getenv func(string) string, pid int) time.Duration {
	usec, err := strconv.ParseUint(getenv("WATCHDOG_USEC"), 10, 63)
	if err != nil || usec == 0 {
		return 0
	}
	if p := getenv("WATCHDOG_PID"); p != "" && p != strconv.Itoa(pid) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond
}

// watchdogTicker ticks at half the watchdog timeout, when the main loop is
// to ping; its channel is nil (never ready) without a watchdog.
func (n notifier) watchdogTicker() (<-chan time.Time, func()) {
	if n.watchdog <= 0 {
		return nil, func() {}
	}
	t := time.NewTicker(max(n.watchdog/2, time.Millisecond))
	return t.C, t.Stop
}

// ping tells systemd's watchdog the main loop is making progress.
func (n notifier) ping() error { return n.send("WATCHDOG=1") }

func (n notifier) send(state ...string) error {
	if n.addr == "" {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(strings.Join(state, "\n"))); err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	return nil
}

func (n notifier) ready(status string) error {
	return n.send("READY=1", "STATUS="+status)
}

func (n notifier) stopping() error { return n.send("STOPPING=1", "STATUS=stopping: flushing flows") }

// reloading carries MONOTONIC_USEC, which systemd wants with RELOADING=1.
func (n notifier) reloading() error {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	return n.send("RELOADING=1", fmt.Sprintf("MONOTONIC_USEC=%d", ts.Nano()/1000), "STATUS=reloading")
}
