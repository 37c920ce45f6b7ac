package main

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNotify(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		name := filepath.Join(t.TempDir(), "notify")
		if abstract {
			name = "@hostflow-test-" + strings.ReplaceAll(t.Name(), "/", "-") + time.Now().Format("150405.000000000")
		}
		ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		t.Setenv("NOTIFY_SOCKET", name)
		n := newNotifier()
		for _, step := range []struct {
			send func() error
			want []string
		}{
			{func() error { return n.ready("capturing") }, []string{"READY=1", "STATUS=capturing"}},
			{n.reloading, []string{"RELOADING=1", "MONOTONIC_USEC="}},
			{n.stopping, []string{"STOPPING=1"}},
		} {
			if err := step.send(); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 1024)
			_ = ln.SetReadDeadline(time.Now().Add(20 * time.Second))
			k, err := ln.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range step.want {
				if !strings.Contains(string(buf[:k]), w) {
					t.Errorf("abstract %v: datagram %q lacks %q", abstract, buf[:k], w)
				}
			}
		}
	}
}

func TestNotifyOutsideSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := newNotifier().ready("x"); err != nil {
		t.Errorf("without NOTIFY_SOCKET: %v", err)
	}
}
