// Package testutil holds helpers for tests that need the kernel: a privilege
// check that skips (or, under CI=true, fails) when BPF programs cannot be
// loaded, throwaway network namespaces with veth pairs, and
// RunInPrivateNetns, which runs a whole test binary in a network namespace
// of its own.
//
// Nothing here ever touches the host's own network namespace except to
// create and delete namespaces named hf-bpftest-*: links, addresses and
// qdiscs are only ever made inside them.
package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netns"
)

// InCI reports whether the tests run under CI (CI=true), where a missing
// privilege or tool is a failure and never a skip.
func InCI() bool {
	return os.Getenv("CI") == "true"
}

// SkipOrFail skips the test, or fails it under CI=true: CI runs as root with
// every tool installed, so there a missing prerequisite is a broken runner.
func SkipOrFail(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		tb.Fatalf("CI=true, but: %s", msg)
		return
	}
	tb.Skipf("%s (set CI=true to make this a failure)", msg)
}

var (
	probeOnce sync.Once
	probeErr  error
)

// probeBPF loads the smallest program hostflow's tests need: a SCHED_CLS
// program (CAP_BPF and CAP_NET_ADMIN) and an array map (CAP_BPF). A map
// alone is not enough: with unprivileged BPF enabled anyone may create one.
func probeBPF() error {
	_ = rlimit.RemoveMemlock() // only matters before Linux 5.11
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		return fmt.Errorf("create BPF map: %w", err)
	}
	defer m.Close()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.SchedCLS,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, -1), // TC_ACT_UNSPEC
			asm.Return(),
		},
	})
	if err != nil {
		return fmt.Errorf("load SCHED_CLS program: %w", err)
	}
	return p.Close()
}

// RequireBPF skips the test unless the process can load BPF maps and TC
// programs (root, or CAP_BPF with CAP_NET_ADMIN). Under CI=true it fails the
// test instead of skipping it.
func RequireBPF(tb testing.TB) {
	tb.Helper()
	probeOnce.Do(func() { probeErr = probeBPF() })
	if probeErr != nil {
		SkipOrFail(tb, "cannot load BPF programs (need root or CAP_BPF+CAP_NET_ADMIN): %v", probeErr)
	}
}

// RequireTool skips (or under CI fails) unless the command name is found.
func RequireTool(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		SkipOrFail(tb, "%s not found: %v", name, err)
	}
	return p
}

// NamespacePrefix starts the name of every namespace the tests create.
const NamespacePrefix = "hf-bpftest-"

// Netns is a named network namespace that a test created.
type Netns struct {
	Name string
}

// RandomSuffix returns n random hex digits.
func RandomSuffix(n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

// IP runs `ip args...` and fails the test on error.
func IP(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// NewNetns creates a network namespace hf-bpftest-<random> and deletes it
// when the test ends, pass or fail. It needs root and the ip command.
func NewNetns(tb testing.TB) *Netns {
	tb.Helper()
	return NewNetnsNamed(tb, NamespacePrefix)
}

// NewNetnsNamed is NewNetns with another name prefix, so that a leftover
// namespace tells which test made it.
func NewNetnsNamed(tb testing.TB, prefix string) *Netns {
	tb.Helper()
	RequireBPF(tb)
	RequireTool(tb, "ip")
	name := prefix + RandomSuffix(8)
	IP(tb, "netns", "add", name)
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			tb.Errorf("ip netns del %s: %v\n%s", name, err, out)
		}
	})
	ns := &Netns{Name: name}
	ns.IP(tb, "link", "set", "lo", "up")
	return ns
}

// IP runs `ip -n NAME args...`: the command acts inside the namespace only.
func (ns *Netns) IP(tb testing.TB, args ...string) string {
	tb.Helper()
	return IP(tb, append([]string{"-n", ns.Name}, args...)...)
}

// Handle opens the namespace; the caller closes it.
func (ns *Netns) Handle() (netns.NsHandle, error) {
	return netns.GetFromName(ns.Name)
}

// ErrDoExited is Do's error when fn ended its goroutine instead of
// returning (t.Fatal, t.Skip or runtime.Goexit inside fn): fn must report
// failures through its error.
var ErrDoExited = errors.New("netns: the function given to Do ended its goroutine (t.Fatal inside Do?) instead of returning")

// Do runs fn on an OS thread switched into the namespace, so that netlink
// calls, sockets and ifindex look-ups in fn act there. The thread is never
// handed back to the Go scheduler if it could not be switched back: it dies
// with its goroutine.
func (ns *Netns) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("current netns: %w", err)
			return // thread stays locked and is dropped
		}
		defer orig.Close()
		target, err := netns.GetFromName(ns.Name)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", ns.Name, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", ns.Name, err)
			return
		}
		// fn may end its goroutine (runtime.Goexit: a t.Fatal, which
		// belongs on the test's own goroutine): report it instead of
		// leaving the caller waiting forever. The thread, still in the
		// namespace, stays locked and is dropped.
		returned := false
		defer func() {
			if !returned {
				errc <- ErrDoExited
			}
		}()
		ferr := fn()
		returned = true
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave netns %s: %w", ns.Name, err))
			return // thread stays locked in the namespace and is dropped
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// DisableIPv6 turns IPv6 off in the namespace (for interfaces created
// afterwards too), so that no neighbour discovery or MLD chatter mixes with
// a test's traffic. /proc/sys/net belongs to the namespace of the thread
// that opens it, hence Do.
func (ns *Netns) DisableIPv6() error {
	return ns.Do(func() error {
		for _, p := range []string{"/proc/sys/net/ipv6/conf/all/disable_ipv6", "/proc/sys/net/ipv6/conf/default/disable_ipv6"} {
			if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
				return err
			}
		}
		return nil
	})
}

// VethPair is a veth pair whose ends live in two test namespaces.
type VethPair struct {
	A, B       *Netns
	NameA      string
	NameB      string
	AddrA      string // 198.18.x.y, no prefix length
	AddrB      string
	PrefixBits int
}

// NewVethPair creates two namespaces and a veth pair between them, with
// AddrA on A's end and AddrB on B's end (198.18.0.0/15, benchmark range),
// both up, IPv6 off. Everything goes away with the namespaces when the test ends.
func NewVethPair(tb testing.TB) *VethPair {
	tb.Helper()
	a, b := NewNetns(tb), NewNetns(tb)
	for _, ns := range []*Netns{a, b} {
		if err := ns.DisableIPv6(); err != nil {
			tb.Fatalf("disable IPv6 in %s: %v", ns.Name, err)
		}
	}
	p := &VethPair{A: a, B: b, NameA: "hfa0", NameB: "hfb0", AddrA: "198.18.0.1", AddrB: "198.18.0.2", PrefixBits: 30}
	// Created inside A, peer moved straight to B: the host namespace never
	// holds either end.
	a.IP(tb, "link", "add", p.NameA, "type", "veth", "peer", "name", p.NameB, "netns", b.Name)
	a.IP(tb, "addr", "add", fmt.Sprintf("%s/%d", p.AddrA, p.PrefixBits), "dev", p.NameA)
	b.IP(tb, "addr", "add", fmt.Sprintf("%s/%d", p.AddrB, p.PrefixBits), "dev", p.NameB)
	a.IP(tb, "link", "set", p.NameA, "up")
	b.IP(tb, "link", "set", p.NameB, "up")
	// Static neighbours and a carrier on both ends before anything is sent:
	// the first packet of a test neither waits for ARP (a loaded machine
	// may take longer than a test's read deadline to answer) nor meets a
	// link that is not up yet.
	macA, macB := linkMAC(tb, a, p.NameA), linkMAC(tb, b, p.NameB)
	a.IP(tb, "neigh", "replace", p.AddrB, "lladdr", macB, "dev", p.NameA, "nud", "permanent")
	b.IP(tb, "neigh", "replace", p.AddrA, "lladdr", macA, "dev", p.NameB, "nud", "permanent")
	waitCarrier(tb, a, p.NameA)
	waitCarrier(tb, b, p.NameB)
	return p
}

// linkMAC returns the hardware address of link name in ns.
func linkMAC(tb testing.TB, ns *Netns, name string) string {
	tb.Helper()
	f := strings.Fields(ns.IP(tb, "-br", "link", "show", "dev", name))
	if len(f) < 3 {
		tb.Fatalf("link %s in %s: no hardware address in %q", name, ns.Name, f)
	}
	return f[2]
}

// waitCarrier waits (at most 5 s) until link name in ns is operationally up.
func waitCarrier(tb testing.TB, ns *Netns, name string) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		f := strings.Fields(ns.IP(tb, "-br", "link", "show", "dev", name))
		if len(f) >= 2 && f[1] == "UP" {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("link %s in %s not up after 5 s: %q", name, ns.Name, f)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
