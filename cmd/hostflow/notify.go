package main

import (
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// notifier speaks systemd's sd_notify protocol: one datagram per state
// change to the unix socket in $NOTIFY_SOCKET (a leading @ is the abstract
// namespace, which package net handles). Outside systemd it does nothing.
type notifier struct {
	addr string
}

func newNotifier() notifier {
	return notifier{addr: os.Getenv("NOTIFY_SOCKET")}
}

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
