package integration

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hostflow/hostflow/internal/testutil"
)

// requireRoot skips a test that needs root and tools, or fails it under
// CI=true, where every privileged test must run.
func requireRoot(t *testing.T, tools ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		testutil.SkipOrFail(t, "needs %s", strings.Join(missing, ", "))
	}
}

// sh runs a command and fails the test on error.
func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// namespace is a network namespace the test created and deletes.
type namespace struct {
	*testutil.Netns
	name string
}

func newNamespace(t *testing.T, prefix string) *namespace {
	t.Helper()
	n := testutil.NewNetnsNamed(t, prefix+"-")
	return &namespace{Netns: n, name: n.Name}
}

// run runs a command inside the namespace.
func (ns *namespace) run(t *testing.T, name string, args ...string) string {
	t.Helper()
	return sh(t, "ip", append([]string{"netns", "exec", ns.name, name}, args...)...)
}

// command returns an unstarted command that runs inside the namespace.
func (ns *namespace) command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.name, name}, args...)...)
}

// do runs fn on an OS thread switched into the namespace (testutil's
// Netns.Do). Sockets created in fn stay in the namespace after it returns.
func (ns *namespace) do(t *testing.T, fn func() error) {
	t.Helper()
	if err := ns.Do(fn); err != nil {
		t.Fatalf("in netns %s: %v", ns.name, err)
	}
}

// linkStats are an interface's counters.
type linkStats struct {
	RxPackets, RxBytes, TxPackets, TxBytes uint64
}

func (ns *namespace) stats(t *testing.T, dev string) linkStats {
	t.Helper()
	out := ns.run(t, "ip", "-s", "-j", "link", "show", "dev", dev)
	var v []struct {
		Stats64 struct {
			Rx struct{ Bytes, Packets uint64 } `json:"rx"`
			Tx struct{ Bytes, Packets uint64 } `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || len(v) != 1 {
		t.Fatalf("parse ip -s -j link: %v: %s", err, out)
	}
	s := v[0].Stats64
	return linkStats{RxPackets: s.Rx.Packets, RxBytes: s.Rx.Bytes, TxPackets: s.Tx.Packets, TxBytes: s.Tx.Bytes}
}

// waitQuiet waits until dev's counters stay unchanged for quiet, so that
// link-up chatter (IPv6 MLD, DAD) is over before a measurement starts.
func (ns *namespace) waitQuiet(t *testing.T, dev string, quiet, limit time.Duration) linkStats {
	t.Helper()
	deadline := time.Now().Add(limit)
	last := ns.stats(t, dev)
	since := time.Now()
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		cur := ns.stats(t, dev)
		if cur != last {
			last, since = cur, time.Now()
			continue
		}
		if time.Since(since) >= quiet {
			return cur
		}
	}
	t.Fatalf("%s in %s never went quiet within %v", dev, ns.name, limit)
	return last
}

// vethPair joins a and b with a veth pair, names devA/devB, turns offloads
// off (each frame is one packet), sets addresses and permanent neighbour
// entries so that no ARP or neighbour discovery crosses the link.
type vethPair struct {
	a, b       *namespace
	devA, devB string
	v4A, v4B   string
	v6A, v6B   string
}

func newVethPair(t *testing.T, a, b *namespace, devA, devB string) *vethPair {
	t.Helper()
	p := &vethPair{a: a, b: b, devA: devA, devB: devB,
		v4A: "198.18.0.1", v4B: "198.18.0.2", v6A: "fd00::1", v6B: "fd00::2"}
	sh(t, "ip", "link", "add", devA, "netns", a.name, "type", "veth", "peer", "name", devB, "netns", b.name)
	for _, side := range []struct {
		ns     *namespace
		dev    string
		v4, v6 string
	}{
		{ns: a, dev: devA, v4: p.v4A, v6: p.v6A},
		{ns: b, dev: devB, v4: p.v4B, v6: p.v6B},
	} {
		ns, dev := side.ns, side.dev
		ns.run(t, "sysctl", "-qw", "net.ipv6.conf."+dev+".accept_dad=0", "net.ipv6.conf."+dev+".router_solicitations=0")
		ns.run(t, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off")
		ns.run(t, "ip", "addr", "add", side.v4+"/24", "dev", dev)
		ns.run(t, "ip", "addr", "add", side.v6+"/64", "dev", dev, "nodad")
		ns.run(t, "ip", "link", "set", dev, "up")
	}
	macA := mac(t, a, devA)
	macB := mac(t, b, devB)
	a.run(t, "ip", "neigh", "replace", p.v4B, "lladdr", macB, "dev", devA, "nud", "permanent")
	a.run(t, "ip", "neigh", "replace", p.v6B, "lladdr", macB, "dev", devA, "nud", "permanent")
	b.run(t, "ip", "neigh", "replace", p.v4A, "lladdr", macA, "dev", devB, "nud", "permanent")
	b.run(t, "ip", "neigh", "replace", p.v6A, "lladdr", macA, "dev", devB, "nud", "permanent")
	return p
}

func mac(t *testing.T, ns *namespace, dev string) string {
	t.Helper()
	out := ns.run(t, "ip", "-j", "link", "show", "dev", dev)
	var v []struct {
		Address string `json:"address"`
		Ifindex int    `json:"ifindex"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || len(v) != 1 {
		t.Fatalf("parse ip -j link: %v: %s", err, out)
	}
	return v[0].Address
}

func ifindex(t *testing.T, ns *namespace, dev string) int {
	t.Helper()
	out := ns.run(t, "ip", "-j", "link", "show", "dev", dev)
	var v []struct {
		Ifindex int `json:"ifindex"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || len(v) != 1 {
		t.Fatalf("parse ip -j link: %v: %s", err, out)
	}
	return v[0].Ifindex
}

// lockedBuffer is a bytes.Buffer safe for a process's output and the test.
type lockedBuffer struct {
	ch  chan struct{}
	buf bytes.Buffer
}

func newLockedBuffer() *lockedBuffer {
	b := &lockedBuffer{ch: make(chan struct{}, 1)}
	b.ch <- struct{}{}
	return b
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	<-b.ch
	defer func() { b.ch <- struct{}{} }()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	<-b.ch
	defer func() { b.ch <- struct{}{} }()
	return b.buf.String()
}

// waitUDPQueueEmpty waits (bounded) until the UDP socket bound to port in
// ns has nothing left to read: a collector stopped before that would lose
// datagrams that reached it (nfcapd stops reading on SIGTERM).
func (ns *namespace) waitUDPQueueEmpty(t *testing.T, port int, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		q, err := parseUDPRxQueue(ns.run(t, "cat", "/proc/net/udp"), port)
		if err != nil {
			t.Fatal(err)
		}
		if q == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the collector on port %d still has %d bytes to read after %v", port, q, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
