package bpf

// Attach tests run in network namespaces the tests create (hf-bpftest-*),
// on a veth pair whose ends never appear in the host's namespace, with
// addresses in 198.18.0.0/15. FlowFetcher uses package-level netlink
// functions, which act in the calling thread's namespace, so every Attach,
// Detach and Close runs through testutil.Netns.Do (a locked OS thread
// switched into the namespace). Inspection goes through netlink handles
// opened in the namespaces.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/hostflow/hostflow/bpf/internal/noop"
	"github.com/hostflow/hostflow/internal/testutil"
)

// vethEnv is a veth pair between two test namespaces with a netlink handle
// in each.
type vethEnv struct {
	*testutil.VethPair
	hA, hB     *netlink.Handle
	linkA      netlink.Link
	linkB      netlink.Link
	ifA, ifB   int
	macA, macB net.HardwareAddr
}

func newVethEnv(t *testing.T) *vethEnv {
	t.Helper()
	requirePrivileges(t)
	e := &vethEnv{VethPair: testutil.NewVethPair(t)}
	for _, side := range []struct {
		ns   *testutil.Netns
		name string
		h    **netlink.Handle
		l    *netlink.Link
	}{{e.A, e.NameA, &e.hA, &e.linkA}, {e.B, e.NameB, &e.hB, &e.linkB}} {
		nsh, err := side.ns.Handle()
		if err != nil {
			t.Fatalf("open %s: %v", side.ns.Name, err)
		}
		h, err := netlink.NewHandleAt(nsh)
		nsh.Close()
		if err != nil {
			t.Fatalf("netlink handle in %s: %v", side.ns.Name, err)
		}
		t.Cleanup(h.Close)
		*side.h = h
		l, err := h.LinkByName(side.name)
		if err != nil {
			t.Fatalf("%s in %s: %v", side.name, side.ns.Name, err)
		}
		*side.l = l
	}
	e.ifA, e.ifB = e.linkA.Attrs().Index, e.linkB.Attrs().Index
	e.macA, e.macB = e.linkA.Attrs().HardwareAddr, e.linkB.Attrs().HardwareAddr
	return e
}

// nsFetcher loads a fetcher whose Close runs inside ns when the test ends
// (clsact filters and qdiscs are deleted through the calling thread's
// namespace). The returned close function is idempotent.
func nsFetcher(t *testing.T, ns *testutil.Netns, ingress, egress bool, opts ...FetcherOption) (*FlowFetcher, func() error) {
	t.Helper()
	f, err := NewFlowFetcher(0, 256, ingress, egress, opts...)
	if err != nil {
		t.Fatalf("NewFlowFetcher: %v", err)
	}
	closeFn := sync.OnceValue(func() error { return ns.Do(f.Close) })
	t.Cleanup(func() {
		if err := closeFn(); err != nil {
			t.Errorf("Close in %s: %v", ns.Name, err)
		}
	})
	return f, closeFn
}

func attachIn(t *testing.T, ns *testutil.Netns, f *FlowFetcher, ifindex int, name string) {
	t.Helper()
	if err := ns.Do(func() error { return f.Attach(ifindex, name) }); err != nil {
		t.Fatalf("Attach %s in %s: %v", name, ns.Name, err)
	}
}

// pingFrom sends count ICMP echo requests with payload bytes of data from
// ns to dst and waits for every reply, like ping -c count -s payload. It
// uses a raw socket opened inside ns, so no ping binary is needed.
func pingFrom(t *testing.T, ns *testutil.Netns, dst netip.Addr, count, payload int) {
	t.Helper()
	err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		if err != nil {
			return fmt.Errorf("raw ICMP socket: %w", err)
		}
		defer unix.Close(fd)
		tv := unix.NsecToTimeval((20 * time.Second).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		id := uint16(time.Now().UnixNano())
		to := &unix.SockaddrInet4{Addr: dst.As4()}
		buf := make([]byte, 2048)
		for seq := 1; seq <= count; seq++ {
			if err := unix.Sendto(fd, icmpEcho(8, 0, id, uint16(seq), bytesN(payload)), 0, to); err != nil {
				return fmt.Errorf("send echo %d: %w", seq, err)
			}
			deadline := time.Now().Add(20 * time.Second)
			for {
				if time.Now().After(deadline) {
					return fmt.Errorf("no reply to echo %d from %v", seq, dst)
				}
				n, _, err := unix.Recvfrom(fd, buf, 0)
				if errors.Is(err, unix.EINTR) {
					continue
				}
				if err != nil {
					return fmt.Errorf("wait for reply %d: %w", seq, err)
				}
				ihl := int(buf[0]&0x0f) * 4
				if n < ihl+8 {
					continue
				}
				icmp := buf[ihl:n]
				if icmp[0] == 0 && binary.BigEndian.Uint16(icmp[4:]) == id && binary.BigEndian.Uint16(icmp[6:]) == uint16(seq) {
					break
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("ping %v from %s: %v", dst, ns.Name, err)
	}
}

const (
	pingCount   = 3
	pingPayload = 56 // ping's default: 84 IP bytes
)

// checkPingFlows checks that flows hold exactly the echo requests leaving
// and the echo replies entering ifA (when the fetcher has that hook).
func checkPingFlows(t *testing.T, e *vethEnv, flows map[NetFlowId]NetFlowMetrics, ingress, egress bool) {
	t.Helper()
	a, b := ipKey(e.AddrA), ipKey(e.AddrB)
	req := NetFlowId{SrcIp: a, DstIp: b, IfIndex: uint32(e.ifA), EthProtocol: etherTypeIPv4,
		TransportProtocol: protoICMP, Direction: DirectionEgress, IcmpType: 8}
	rep := NetFlowId{SrcIp: b, DstIp: a, IfIndex: uint32(e.ifA), EthProtocol: etherTypeIPv4,
		TransportProtocol: protoICMP, Direction: DirectionIngress, IcmpType: 0}
	for _, c := range []struct {
		on  bool
		key NetFlowId
	}{{egress, req}, {ingress, rep}} {
		m, ok := flows[c.key]
		if !c.on {
			if ok {
				t.Errorf("flow %v counted though its hook is off", c.key)
			}
			continue
		}
		if !ok {
			t.Errorf("no flow %v among %v", c.key, flows)
			continue
		}
		if m.Packets != pingCount || m.Bytes != pingCount*(20+8+pingPayload) {
			t.Errorf("%v: packets %d bytes %d, want %d and %d", c.key, m.Packets, m.Bytes, pingCount, pingCount*(20+8+pingPayload))
		}
	}
	// Nothing but the pings, ARP and the kernel's own IPv6 chatter
	// (neighbour discovery, MLD) crosses the pair.
	for id := range flows {
		if id != req && id != rep && id.EthProtocol != etherTypeIPv6 {
			t.Errorf("unexpected flow %v", id)
		}
		if id.IfIndex != uint32(e.ifA) {
			t.Errorf("flow %v on ifindex %d, want %d", id, id.IfIndex, e.ifA)
		}
	}
}

func progID(t *testing.T, p *ebpf.Program) ebpf.ProgramID {
	t.Helper()
	info, err := p.Info()
	if err != nil {
		t.Fatalf("program info: %v", err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatalf("program %v has no ID", p)
	}
	return id
}

// tcxPrograms lists the programs on a tcx hook of ifindex in ns, in order.
func tcxPrograms(t *testing.T, ns *testutil.Netns, ifindex int, hook ebpf.AttachType) []ebpf.ProgramID {
	t.Helper()
	var ids []ebpf.ProgramID
	err := ns.Do(func() error {
		res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: hook})
		if err != nil {
			return err
		}
		for _, p := range res.Programs {
			ids = append(ids, p.ID)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("query %v on ifindex %d: %v", hook, ifindex, err)
	}
	return ids
}

func loadNoop(t *testing.T) *ebpf.Program {
	t.Helper()
	var objs noop.NoopObjects
	if err := noop.LoadNoopObjects(&objs, nil); err != nil {
		t.Fatalf("load noop: %v", err)
	}
	t.Cleanup(func() { objs.Close() })
	return objs.Noop
}

// TestAttachTCX attaches in the default mode (tcx on this kernel) next to a
// foreign tcx program, counts pings, and detaches without touching the
// foreign program.
func TestAttachTCX(t *testing.T) {
	e := newVethEnv(t)
	foreign := loadNoop(t)
	var foreignLink link.Link
	if err := e.A.Do(func() error {
		var err error
		foreignLink, err = link.AttachTCX(link.TCXOptions{Interface: e.ifA, Program: foreign,
			Attach: ebpf.AttachTCXIngress, Anchor: link.Head()})
		return err
	}); err != nil {
		t.Fatalf("attach foreign tcx program: %v", err)
	}
	t.Cleanup(func() { foreignLink.Close() })
	foreignID := progID(t, foreign)

	f, closeFn := nsFetcher(t, e.A, true, true)
	if f.Mode() != AttachAuto {
		t.Errorf("mode before attach %v, want auto", f.Mode())
	}
	attachIn(t, e.A, f, e.ifA, e.NameA)
	if f.Mode() != AttachTCX {
		t.Fatalf("mode %v, want tcx on a tcx kernel", f.Mode())
	}
	if got := f.Attached(); len(got) != 1 || got[e.ifA] != e.NameA {
		t.Errorf("Attached() = %v", got)
	}
	err := e.A.Do(func() error { return f.Attach(e.ifA, e.NameA) })
	if !errors.Is(err, ErrAlreadyAttached) {
		t.Errorf("second Attach: %v, want ErrAlreadyAttached", err)
	}
	inID, egID := progID(t, f.progs.IngressFlowParse), progID(t, f.progs.EgressFlowParse)
	if got := tcxPrograms(t, e.A, e.ifA, ebpf.AttachTCXIngress); !slices.Equal(got, []ebpf.ProgramID{foreignID, inID}) {
		t.Errorf("tcx ingress programs %v, want foreign %d then hostflow %d", got, foreignID, inID)
	}
	if got := tcxPrograms(t, e.A, e.ifA, ebpf.AttachTCXEgress); !slices.Equal(got, []ebpf.ProgramID{egID}) {
		t.Errorf("tcx egress programs %v, want hostflow %d", got, egID)
	}

	drain(t, f) // whatever the links carried before the pings
	pingFrom(t, e.A, netip.MustParseAddr(e.AddrB), pingCount, pingPayload)
	checkPingFlows(t, e, drain(t, f), true, true)
	if c := counters(t, f); c.Malformed != 0 || c.MapFull != 0 || c.NoMap != 0 {
		t.Errorf("counters %+v", c)
	}

	if err := e.A.Do(func() error { return f.Detach(e.ifA) }); err != nil {
		t.Fatalf("Detach: %v", err)
	}
	if got := tcxPrograms(t, e.A, e.ifA, ebpf.AttachTCXIngress); !slices.Equal(got, []ebpf.ProgramID{foreignID}) {
		t.Errorf("after Detach tcx ingress programs %v, want only foreign %d", got, foreignID)
	}
	if got := tcxPrograms(t, e.A, e.ifA, ebpf.AttachTCXEgress); len(got) != 0 {
		t.Errorf("after Detach tcx egress programs %v, want none", got)
	}
	if err := e.A.Do(func() error { return f.Detach(e.ifA) }); !errors.Is(err, ErrNotAttached) {
		t.Errorf("second Detach: %v, want ErrNotAttached", err)
	}
	drain(t, f) // anything counted between the last drain and Detach
	pingFrom(t, e.A, netip.MustParseAddr(e.AddrB), 1, pingPayload)
	if got := drain(t, f); len(got) != 0 {
		t.Errorf("flows after Detach: %v", got)
	}

	// Close detaches what is still attached.
	attachIn(t, e.A, f, e.ifA, e.NameA)
	if err := closeFn(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := tcxPrograms(t, e.A, e.ifA, ebpf.AttachTCXIngress); !slices.Equal(got, []ebpf.ProgramID{foreignID}) {
		t.Errorf("after Close tcx ingress programs %v, want only foreign %d", got, foreignID)
	}
	if got := tcxPrograms(t, e.A, e.ifA, ebpf.AttachTCXEgress); len(got) != 0 {
		t.Errorf("after Close tcx egress programs %v, want none", got)
	}
}

// TestAttachEgressOnly checks that a fetcher with only the egress hook
// counts the requests and not the replies.
func TestAttachEgressOnly(t *testing.T) {
	e := newVethEnv(t)
	f, _ := nsFetcher(t, e.A, false, true)
	attachIn(t, e.A, f, e.ifA, e.NameA)
	if got := tcxPrograms(t, e.A, e.ifA, ebpf.AttachTCXIngress); len(got) != 0 {
		t.Errorf("ingress programs %v, want none", got)
	}
	drain(t, f)
	pingFrom(t, e.A, netip.MustParseAddr(e.AddrB), pingCount, pingPayload)
	checkPingFlows(t, e, drain(t, f), false, true)
}

// TestAttachLinkGone checks that Detach and Close succeed after the
// interface disappeared with its hooks.
func TestAttachLinkGone(t *testing.T) {
	for _, mode := range []AttachMode{AttachTCX, AttachClsact} {
		t.Run(mode.String(), func(t *testing.T) {
			e := newVethEnv(t)
			f, closeFn := nsFetcher(t, e.A, true, true, WithAttachMode(mode))
			attachIn(t, e.A, f, e.ifA, e.NameA)
			e.A.IP(t, "link", "del", e.NameA)
			if err := e.A.Do(func() error { return f.Detach(e.ifA) }); err != nil {
				t.Errorf("Detach after the link went: %v", err)
			}
			attachIn2 := e.B.Do(func() error { return f.Attach(e.ifB, e.NameB) })
			if attachIn2 == nil {
				t.Errorf("Attach to %s (deleted with its peer) succeeded", e.NameB)
			}
			if err := closeFn(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
}

// TestAttachHooks: per-interface hooks override the fetcher's default,
// and an interface with neither is refused.
func TestAttachHooks(t *testing.T) {
	e := newVethEnv(t)
	f, _ := nsFetcher(t, e.A, true, true)
	if err := e.A.Do(func() error { return f.AttachHooks(e.ifA, e.NameA, true, false) }); err != nil {
		t.Fatalf("AttachHooks: %v", err)
	}
	if got := tcxPrograms(t, e.A, e.ifA, ebpf.AttachTCXIngress); len(got) != 1 {
		t.Errorf("ingress programs %v, want hostflow's", got)
	}
	if got := tcxPrograms(t, e.A, e.ifA, ebpf.AttachTCXEgress); len(got) != 0 {
		t.Errorf("egress programs %v, want none", got)
	}
	if err := f.AttachHooks(e.ifB, e.NameB, false, false); err == nil {
		t.Error("AttachHooks with no hook: no error")
	}
}

// TestSetHooks: changing an attached interface's hooks attaches the added
// hook and detaches the removed one, and leaves a kept hook's program in
// place (the same tcx link, so no packet passes unseen).
func TestSetHooks(t *testing.T) {
	e := newVethEnv(t)
	f, _ := nsFetcher(t, e.A, true, true)
	if err := e.A.Do(func() error { return f.AttachHooks(e.ifA, e.NameA, true, false) }); err != nil {
		t.Fatalf("AttachHooks: %v", err)
	}
	in := tcxPrograms(t, e.A, e.ifA, ebpf.AttachTCXIngress)
	for _, step := range []struct {
		ingress, egress bool
		wantIn, wantEg  int
	}{
		{true, true, 1, 1},
		{true, false, 1, 0},
		{false, true, 0, 1},
		{true, true, 1, 1},
	} {
		if err := e.A.Do(func() error { return f.SetHooks(e.ifA, step.ingress, step.egress) }); err != nil {
			t.Fatalf("SetHooks(%v, %v): %v", step.ingress, step.egress, err)
		}
		gotIn := tcxPrograms(t, e.A, e.ifA, ebpf.AttachTCXIngress)
		gotEg := tcxPrograms(t, e.A, e.ifA, ebpf.AttachTCXEgress)
		if len(gotIn) != step.wantIn || len(gotEg) != step.wantEg {
			t.Fatalf("SetHooks(%v, %v): ingress %v egress %v", step.ingress, step.egress, gotIn, gotEg)
		}
		if step.ingress && in != nil && !slices.Equal(gotIn, in) {
			t.Errorf("SetHooks(%v, %v): ingress program %v replaced, was %v", step.ingress, step.egress, gotIn, in)
		}
		if !step.ingress {
			in = nil
		}
	}
	if err := f.SetHooks(e.ifA, false, false); err == nil {
		t.Error("SetHooks with no hook: no error")
	}
	if err := f.SetHooks(e.ifA+1000, true, true); !errors.Is(err, ErrNotAttached) {
		t.Errorf("SetHooks on a link not attached: %v, want ErrNotAttached", err)
	}
}
