package testutil

import (
	"errors"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
)

// recordingTB records Skipf and Fatalf instead of stopping the goroutine.
type recordingTB struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (r *recordingTB) Helper() {}
func (r *recordingTB) Skipf(format string, args ...any) {
	r.skipped = true
	r.msg = format
}
func (r *recordingTB) Fatalf(format string, args ...any) {
	r.failed = true
	r.msg = format
}

func TestSkipOrFail(t *testing.T) {
	for _, tc := range []struct {
		ci                string
		wantSkip, wantErr bool
	}{
		{"", true, false},
		{"false", true, false},
		{"1", true, false}, // only the exact value CI=true counts
		{"true", false, true},
	} {
		t.Run("CI="+tc.ci, func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			r := &recordingTB{TB: t}
			SkipOrFail(r, "no %s", "privilege")
			if r.skipped != tc.wantSkip || r.failed != tc.wantErr {
				t.Fatalf("skipped=%v failed=%v, want skipped=%v failed=%v", r.skipped, r.failed, tc.wantSkip, tc.wantErr)
			}
		})
	}
}

func TestRequireBPF(t *testing.T) {
	// Under CI this must pass (CI runs as root); elsewhere it may skip.
	RequireBPF(t)
}

func TestNetnsDo(t *testing.T) {
	ns := NewNetns(t)
	if !strings.HasPrefix(ns.Name, NamespacePrefix) {
		t.Fatalf("namespace %q lacks prefix %q", ns.Name, NamespacePrefix)
	}
	out := ns.IP(t, "-o", "link", "show")
	if !strings.Contains(out, "lo:") || strings.Count(out, "\n") != 1 {
		t.Fatalf("new namespace should hold only lo, has:\n%s", out)
	}
}

// A function given to Do that ends its goroutine (t.Fatal inside Do) makes
// Do return ErrDoExited instead of hanging.
func TestNetnsDoGoexit(t *testing.T) {
	ns := NewNetns(t)
	done := make(chan error, 1)
	go func() { done <- ns.Do(func() error { runtime.Goexit(); return nil }) }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrDoExited) {
			t.Fatalf("Do: %v, want ErrDoExited", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Do still waiting 10 s after its function ended its goroutine")
	}
	if err := ns.Do(func() error { return nil }); err != nil {
		t.Fatalf("Do after: %v", err)
	}
}

func TestVethPair(t *testing.T) {
	p := NewVethPair(t)
	for _, side := range []struct {
		ns   *Netns
		name string
		addr string
	}{{p.A, p.NameA, p.AddrA}, {p.B, p.NameB, p.AddrB}} {
		out := side.ns.IP(t, "-o", "addr", "show", "dev", side.name)
		if !strings.Contains(out, " inet "+side.addr+"/") || strings.Contains(out, "inet6") {
			t.Errorf("%s in %s: want only %s, got\n%s", side.name, side.ns.Name, side.addr, out)
		}
	}
	// The host namespace holds neither end.
	if out, err := exec.Command("ip", "-o", "link", "show").CombinedOutput(); err != nil || strings.Contains(string(out), p.NameA+"@") || strings.Contains(string(out), p.NameB+"@") {
		t.Errorf("host namespace: %v\n%s", err, out)
	}
}
