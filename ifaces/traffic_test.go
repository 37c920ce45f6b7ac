package ifaces

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/internal/testutil"
	"github.com/vishvananda/netlink"
)

// TestManagerDirectionChangeCountsEveryPacket changes a link's rule back and
// forth between both hooks and ingress only while packets arrive on it, with
// the real fetcher: the ingress hook stays attached throughout, so every
// packet that reached the link is counted.
func TestManagerDirectionChangeCountsEveryPacket(t *testing.T) {
	for _, mode := range []bpf.AttachMode{bpf.AttachTCX, bpf.AttachClsact} {
		t.Run(mode.String(), func(t *testing.T) { testDirectionChange(t, mode) })
	}
}

func testDirectionChange(t *testing.T, mode bpf.AttachMode) {
	p := testutil.NewVethPair(t)
	f, err := bpf.NewFetcher(bpf.FetcherOptions{KernelMapSize: 1024, Ingress: true, Egress: true, Attach: mode, StateDir: t.TempDir()})
	if err != nil {
		t.Fatalf("NewFetcher: %v", err)
	}
	t.Cleanup(func() {
		if err := p.A.Do(f.Close); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	both, _ := ParseRules([]string{p.NameA}, nil)
	ingress, _ := ParseRules([]string{p.NameA + ":ingress"}, nil)
	m := NewManager(f, both, slog.New(slog.DiscardHandler))
	if err := p.A.Do(m.Start); err != nil {
		t.Fatalf("Start: %v", err)
	}
	idxA := indexOf(t, m, p.NameA)
	// A static neighbour: no packet waits for ARP, none is dropped by it.
	var macA net.HardwareAddr
	if err := p.A.Do(func() error {
		l, err := netlink.LinkByName(p.NameA)
		if err == nil {
			macA = l.Attrs().HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	p.B.IP(t, "neigh", "replace", p.AddrA, "lladdr", macA.String(), "dev", p.NameB, "nud", "permanent")

	const packets, port = 20000, 7099
	dropsBefore := txDropped(t, p.B, p.NameB)
	var sent int
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var reloadErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 400; i++ {
			select {
			case <-stop:
				return
			default:
			}
			r := ingress
			if i%2 == 1 {
				r = both
			}
			if err := p.A.Do(func() error { return m.SetRules(r) }); err != nil {
				reloadErr = err
				return
			}
		}
	}()
	err = p.B.Do(func() error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(p.AddrB)})
		if err != nil {
			return err
		}
		defer c.Close()
		to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(p.AddrA), port))
		payload := make([]byte, 64)
		for range packets {
			if _, err := c.WriteToUDP(payload, to); err != nil {
				return fmt.Errorf("send: %w", err)
			}
			sent++
		}
		return nil
	})
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if reloadErr != nil {
		t.Fatalf("SetRules: %v", reloadErr)
	}
	dropped := txDropped(t, p.B, p.NameB) - dropsBefore

	var counted uint64
	if err := f.Drain(func(id bpf.NetFlowId, perCPU []bpf.NetFlowMetrics) {
		if id.IfIndex != uint32(idxA) || id.Direction != bpf.DirectionIngress || id.DstPort != port {
			return
		}
		for _, c := range perCPU {
			counted += c.Packets
		}
	}); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if want := uint64(sent) - dropped; counted != want {
		t.Errorf("counted %d packets at %s ingress, want %d (%d sent, %d dropped by the veth)", counted, p.NameA, want, sent, dropped)
	}
	if st := m.States(); !st[idxA].Attached {
		t.Errorf("after the reloads: %+v", st)
	}
}

// txDropped reads the tx_dropped counter of a link.
func txDropped(t *testing.T, ns *testutil.Netns, name string) uint64 {
	t.Helper()
	var n uint64
	if err := ns.Do(func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		n = l.Attrs().Statistics.TxDropped
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}
