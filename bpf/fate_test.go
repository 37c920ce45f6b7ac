package bpf

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/hostflow/hostflow/internal/testutil"
)

// TestFateReasonValue pins the mapping of the kernel's drop reason names
// to IANA forwardingStatus codes.
func TestFateReasonValue(t *testing.T) {
	for _, tc := range []struct {
		name string
		want uint32
	}{
		{"NETFILTER_DROP", FateDropACLDrop},
		{"XFRM_POLICY", FateDropACLDeny},
		{"IP_INNOROUTES", FateDropUnroutable},
		{"IP_INADDRERRORS", FateDropUnroutable},
		{"IP_OUTNOROUTES", FateDropUnroutable},
		{"IPV6_NOROUTE", FateDropUnroutable},
		{"IP_RPFILTER", FateDropRPF},
		{"IP_INVALID_SOURCE", FateDropRPF},
		{"IP_CSUM", FateDropBadChecksum},
		{"TCP_CSUM", FateDropBadChecksum},
		{"UDP_CSUM", FateDropBadChecksum},
		{"PKT_TOO_SMALL", FateDropBadLength},
		{"IP_INHDR", FateDropBadHeaderLen | fateTTLCheck},
		{"HDR_TRUNC", FateDropBadHeaderLen},
		{"PKT_TOO_BIG", FateDropFragDF},
		{"TC_EGRESS", FateDropPolicer},
		{"NO_SOCKET", FateDropForUs},
		{"SOCKET_RCVBUFF", FateDropForUs},
		{"TCP_INVALID_SEQUENCE", FateDropForUs},
		{"IP_NOPROTO", FateDropForUs},
		// A frame not addressed to the router (another host's MAC): an
		// arrival dropped, but not one "for us".
		{"OTHERHOST", FateDropUnknown},
		{"NEIGH_FAILED", FateDropAdjacency},
		{"NEIGH_QUEUEFULL", FateDropAdjacency},
		{"NOT_SPECIFIED", FateDropUnknown | fateOnlyOnArrival},
		{"NOMEM", FateDropUnknown | fateOnlyOnArrival},
		{"VXLAN_INVALID_HDR", FateDropUnknown},
		{"SOME_FUTURE_REASON", FateDropUnknown},
		// Not fates of a counted arrival.
		{"CONSUMED", 0},
		{"NOT_DROPPED_YET", 0},
		{"XDP", 0},
		{"CPU_BACKLOG", 0},
		{"TC_INGRESS", 0},
		{"QDISC_DROP", 0},
		{"QDISC_OVERLIMIT", 0},
		{"FQ_FLOW_LIMIT", 0},
		{"CAKE_FLOOD", 0},
		{"FULL_RING", 0},
		{"DEV_READY", 0},
	} {
		if got := fateReasonValue(tc.name); got != tc.want {
			t.Errorf("fateReasonValue(%s) = %#x, want %#x", tc.name, got, tc.want)
		}
	}
}

// TestFateReasonTable checks the table built from a BTF enum: indexed by
// each reason's value in that kernel (not a fixed number), unknown and
// out-of-range values 128.
func TestFateReasonTable(t *testing.T) {
	e := &btf.Enum{Name: "skb_drop_reason", Size: 4, Values: []btf.EnumValue{
		{Name: "SKB_NOT_DROPPED_YET", Value: 0},
		{Name: "SKB_CONSUMED", Value: 1},
		{Name: "SKB_DROP_REASON_NOT_SPECIFIED", Value: 2},
		{Name: "SKB_DROP_REASON_NETFILTER_DROP", Value: 40},
		{Name: "SKB_DROP_REASON_IP_RPFILTER", Value: 7},
		{Name: "SKB_DROP_REASON_QDISC_DROP", Value: 9},
		{Name: "SKB_DROP_REASON_IP_INHDR", Value: 3},
		{Name: "SKB_DROP_REASON_NETFILTER_FAR", Value: 600},
		{Name: "SKB_DROP_REASON_SUBSYS_MASK", Value: 0xffff0000},
	}}
	table, err := fateReasonTable(specOf(t, e))
	if err != nil {
		t.Fatal(err)
	}
	if len(table) != fateReasons {
		t.Fatalf("table has %d entries, want %d", len(table), fateReasons)
	}
	want := map[int]uint32{0: 0, 1: 0, 2: FateDropUnknown | fateOnlyOnArrival, 3: FateDropBadHeaderLen | fateTTLCheck,
		7: FateDropRPF, 9: 0, 40: FateDropACLDrop}
	for i, v := range table {
		w, ok := want[i]
		if !ok {
			w = FateDropUnknown
		}
		if v != w {
			t.Errorf("table[%d] = %#x, want %#x", i, v, w)
		}
	}
	if _, err := fateReasonTable(specOf(t)); err == nil {
		t.Error("a BTF without enum skb_drop_reason: no error")
	}
}

// TestFateProbeFallback: a kernel without fate support makes NewFetcher
// fail with ErrFateNotSupported, before loading anything, so that the
// daemon can retry without Fate.
func TestFateProbeFallback(t *testing.T) {
	_, err := NewFlowFetcher(0, 64, true, false, WithFate(true), withFateProbe(func() error {
		return errors.Join(ErrFateNotSupported, errors.New("no kfunc"))
	}))
	if !errors.Is(err, ErrFateNotSupported) {
		t.Fatalf("NewFlowFetcher: %v, want ErrFateNotSupported", err)
	}
}

// TestProbeFate: this machine's kernel (6.18) has what fate counting
// needs.
func TestProbeFate(t *testing.T) {
	testutil.RequireBPF(t)
	if err := ProbeFate(); err != nil {
		t.Fatalf("ProbeFate: %v", err)
	}
}

// Offsets in struct __sk_buff of the fields BPF_PROG_TEST_RUN takes.
const (
	skbIngressIfindexOff = 36
	skbIfindexOff        = 40
)

func ctxWithIfindexes(ingress, out uint32) *skbCtx {
	var c skbCtx
	binary.NativeEndian.PutUint32(c[skbIngressIfindexOff:], ingress)
	binary.NativeEndian.PutUint32(c[skbIfindexOff:], out)
	return &c
}

// fateFetcher loads a fetcher with Fate inside a fresh namespace (whose
// loopback is ifindex 1), closed when the test ends.
func fateFetcher(t *testing.T, ingress, egress bool) (*FlowFetcher, *testutil.Netns) {
	t.Helper()
	ns := testutil.NewNetns(t)
	var f *FlowFetcher
	if err := ns.Do(func() (err error) {
		f, err = NewFlowFetcher(0, 256, ingress, egress, WithFate(true))
		return err
	}); err != nil {
		t.Fatalf("NewFlowFetcher with fate: %v", err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if !f.Fate() {
		t.Fatal("Fate() = false with WithFate(true)")
	}
	return f, ns
}

// TestFateEgressKeying runs the egress programs over crafted packets with
// the ingress and egress interfaces BPF_PROG_TEST_RUN lets a test set: a
// packet that arrived on an interface is counted forwarded under its
// arrival key with its egress interface; one the host sent (ingress 0) is
// an egress packet where egress counting was asked for, and nothing on a
// hook that counts forwarded packets only.
func TestFateEgressKeying(t *testing.T) {
	f, ns := fateFetcher(t, true, true)
	watch(t, f, 7)
	src, dst := netip.MustParseAddr("198.18.1.2"), netip.MustParseAddr("198.18.2.2")
	frame := ether(0x0800, nil, ipv4{src: src, dst: dst, proto: protoUDP, tos: 0x10}.build(udp(4000, 53, bytesN(20))))
	run := func(p string, ingress, out uint32) {
		t.Helper()
		prog := map[string]*ebpf.Program{"flow": f.progs.EgressRouterParse, "fate": f.progs.EgressFateParse}[p]
		if err := ns.Do(func() error { runFrame(t, prog, frame, ctxWithIfindexes(ingress, out)); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	run("flow", 7, 1) // forwarded, egress asked for
	run("fate", 7, 1) // forwarded, ingress only
	run("fate", 0, 1) // sent by the host, ingress only: not counted
	run("flow", 0, 1) // sent by the host, egress asked for

	flows := drain(t, f)
	base := NetFlowId{EthProtocol: 0x0800, SrcIp: ipKey("198.18.1.2"), DstIp: ipKey("198.18.2.2"),
		SrcPort: 4000, DstPort: 53, TransportProtocol: protoUDP, Tos: 0x10}
	fwd := base
	fwd.IfIndex, fwd.Direction, fwd.Fate = 7, DirectionIngress, FateForwarded
	local := base
	local.IfIndex, local.Direction = 1, DirectionEgress
	if len(flows) != 2 {
		t.Fatalf("got %d flows, want 2 (forwarded, local): %v", len(flows), flows)
	}
	m, ok := flows[fwd]
	if !ok || m.Packets != 2 || m.Bytes != 2*48 || m.OutIfIndex != 1 {
		t.Errorf("forwarded flow %v: %+v (found %v), want 2 packets, 96 bytes, out if 1", fwd, m, ok)
	}
	m, ok = flows[local]
	if !ok || m.Packets != 1 || m.OutIfIndex != 0 {
		t.Errorf("local egress flow %v: %+v (found %v), want 1 packet, no out if", local, m, ok)
	}
}

// TestFateEgressMalformed: a forwarded packet whose headers cannot be read
// moves COUNTER_FATE_MALFORMED, not the arrival's COUNTER_MALFORMED.
func TestFateEgressMalformed(t *testing.T) {
	f, ns := fateFetcher(t, true, false)
	watch(t, f, 7)
	// A TCP header cut short.
	l3 := ipv4{src: netip.MustParseAddr("198.18.1.2"), dst: netip.MustParseAddr("198.18.2.2"), proto: protoTCP}.build(bytesN(8))
	frame := ether(0x0800, nil, l3)
	before := counters(t, f)
	if err := ns.Do(func() error {
		runFrame(t, f.progs.EgressFateParse, frame, ctxWithIfindexes(7, 1))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	after := counters(t, f)
	if after.FateMalformed != before.FateMalformed+1 || after.Malformed != before.Malformed {
		t.Errorf("counters %+v -> %+v: want FateMalformed +1, Malformed unchanged", before, after)
	}
	if flows := drain(t, f); len(flows) != 0 {
		t.Errorf("malformed forwarded packet counted: %v", flows)
	}
}

// TestHostModeEgressUnchanged: without Fate, a packet with an ingress
// interface is an egress packet like any other (no fate, no out if).
func TestHostModeEgressUnchanged(t *testing.T) {
	f := newTestFetcher(t, 256)
	frame := ether(0x0800, nil, ipv4{src: netip.MustParseAddr("198.18.1.2"), dst: netip.MustParseAddr("198.18.2.2"), proto: protoUDP}.build(udp(1, 2, nil)))
	runFrame(t, f.progs.EgressFlowParse, frame, ctxWithIfindexes(7, 1))
	flows := drain(t, f)
	for id, m := range flows {
		if id.Fate != 0 || id.Direction != DirectionEgress || id.IfIndex != 1 || m.OutIfIndex != 0 {
			t.Errorf("host mode flow %v %+v: want fate 0, egress on if 1, no out if", id, m)
		}
	}
	if len(flows) != 1 {
		t.Errorf("%d flows, want 1", len(flows))
	}
}

// TestHostModeEgressHasNoFateCode: the host-mode egress programs compile
// to the same instructions as the ingress ones (only the direction
// differs): no router-mode code, pruned or not, changes their cost.
// Router mode's egress programs are others.
func TestHostModeEgressHasNoFateCode(t *testing.T) {
	f := newTestFetcher(t, 256)
	opcodes := func(p *ebpf.Program) []string {
		t.Helper()
		info, err := p.Info()
		if err != nil {
			t.Fatal(err)
		}
		insns, err := info.Instructions()
		if err != nil {
			t.Fatalf("xlated instructions of %v: %v", p, err)
		}
		out := make([]string, len(insns))
		for i, ins := range insns {
			out[i] = ins.OpCode.String()
		}
		return out
	}
	for _, pair := range [][2]*ebpf.Program{
		{f.progs.IngressFlowParse, f.progs.EgressFlowParse},
		{f.progs.IngressFlowParseL3, f.progs.EgressFlowParseL3},
	} {
		in, eg := opcodes(pair[0]), opcodes(pair[1])
		if !slices.Equal(in, eg) {
			t.Errorf("%v: %d instructions, %v: %d, not the same opcodes", pair[0], len(in), pair[1], len(eg))
		}
	}
}

// TestFateEgressUnwatchedArrival: a packet that arrived on an interface
// without hostflow's ingress hook (not in fate_ifaces: unwatched, or a
// VLAN or VRF device whose lower link is the one watched) has no arrival
// record, so it is not counted forwarded; where egress counting was asked
// for it is an egress packet like one the host sends.
func TestFateEgressUnwatchedArrival(t *testing.T) {
	f, ns := fateFetcher(t, true, true)
	watch(t, f, 7)
	frame := ether(0x0800, nil, ipv4{src: netip.MustParseAddr("198.18.1.2"), dst: netip.MustParseAddr("198.18.2.2"), proto: protoUDP}.build(udp(4000, 53, bytesN(20))))
	if err := ns.Do(func() error {
		runFrame(t, f.progs.EgressFateParse, frame, ctxWithIfindexes(9, 1))
		runFrame(t, f.progs.EgressRouterParse, frame, ctxWithIfindexes(9, 1))
		runFrame(t, f.progs.EgressFateParse, frame, ctxWithIfindexes(7, 1))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	base := NetFlowId{EthProtocol: 0x0800, SrcIp: ipKey("198.18.1.2"), DstIp: ipKey("198.18.2.2"),
		SrcPort: 4000, DstPort: 53, TransportProtocol: protoUDP}
	fwd := base
	fwd.IfIndex, fwd.Direction, fwd.Fate = 7, DirectionIngress, FateForwarded
	egress := base
	egress.IfIndex, egress.Direction = 1, DirectionEgress
	want := map[NetFlowId]uint64{fwd: 1, egress: 1}
	flows := drain(t, f)
	for id, m := range flows {
		if m.Packets != want[id] {
			t.Errorf("flow %+v: %d packets, want %d", id, m.Packets, want[id])
		}
	}
	for id, n := range want {
		if _, ok := flows[id]; !ok {
			t.Errorf("flow %+v missing, want %d packets", id, n)
		}
	}
}

// watch puts ifindex in fate_ifaces, as an interface with an ingress hook.
func watch(t *testing.T, f *FlowFetcher, ifindex uint32) {
	t.Helper()
	if err := f.watchArrivals(int(ifindex), true); err != nil {
		t.Fatal(err)
	}
}

// skbCbOff is where struct __sk_buff's cb[5] starts: BPF_PROG_TEST_RUN
// copies it into the data part of the kernel skb's cb (after struct
// qdisc_skb_cb's first 8 bytes), where IPCB(skb)->flags lies: cb[3]'s
// low 16 bits.
const skbCbOff = 48

// ctxRouterFragment is the context of a packet forwarded from ingress
// that the router cut into fragments: IPSKB_FRAG_COMPLETE in its IPCB.
func ctxRouterFragment(ingress, out uint32) *skbCtx {
	c := ctxWithIfindexes(ingress, out)
	binary.NativeEndian.PutUint32(c[skbCbOff+3*4:], 8)
	return c
}

// TestFateEgressRouterFragments: a packet the router fragments on output
// (IPSKB_FRAG_COMPLETE) is one forwarded packet under its arrival key, its
// first fragment's; the later fragments (ports 0, a key no arrival has) are
// not counted. Fragments that arrived as such and leave as they came are
// each forwarded, as each arrived.
func TestFateEgressRouterFragments(t *testing.T) {
	f, ns := fateFetcher(t, true, false)
	watch(t, f, 7)
	src, dst := netip.MustParseAddr("198.18.1.2"), netip.MustParseAddr("198.18.2.2")
	first := ether(0x0800, nil, ipv4{src: src, dst: dst, proto: protoUDP, mf: true}.build(udp(4000, 53, bytesN(32))))
	later := ether(0x0800, nil, ipv4{src: src, dst: dst, proto: protoUDP, fragOff: 5, mf: true}.build(bytesN(40)))
	last := ether(0x0800, nil, ipv4{src: src, dst: dst, proto: protoUDP, fragOff: 10}.build(bytesN(16)))
	if err := ns.Do(func() error {
		for _, fr := range [][]byte{first, later, last} {
			runFrame(t, f.progs.EgressFateParse, fr, ctxRouterFragment(7, 1))
		}
		for _, fr := range [][]byte{first, later, last} {
			runFrame(t, f.progs.EgressFateParse, fr, ctxWithIfindexes(7, 1))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ported := NetFlowId{EthProtocol: 0x0800, SrcIp: ipKey("198.18.1.2"), DstIp: ipKey("198.18.2.2"),
		SrcPort: 4000, DstPort: 53, TransportProtocol: protoUDP, IfIndex: 7, Fate: FateForwarded}
	unported := ported
	unported.SrcPort, unported.DstPort = 0, 0
	// The router's: 1 under the ported key; as they came: 1 there, 2
	// under ports 0.
	want := map[NetFlowId]uint64{ported: 2, unported: 2}
	flows := drain(t, f)
	for id, m := range flows {
		if m.Packets != want[id] {
			t.Errorf("flow %+v: %d packets, want %d", id, m.Packets, want[id])
		}
	}
	if len(flows) != len(want) {
		t.Errorf("%d flows, want %d: %v", len(flows), len(want), flows)
	}
}

// TestFateWatchedLargeIfindex: the egress programs find the watched
// interfaces in the bitmap below FATE_IFACE_BITS and in the hash above
// it, and forget them in both.
func TestFateWatchedLargeIfindex(t *testing.T) {
	f, ns := fateFetcher(t, true, false)
	frame := ether(0x0800, nil, ipv4{src: netip.MustParseAddr("198.18.1.2"), dst: netip.MustParseAddr("198.18.2.2"), proto: protoUDP}.build(udp(4000, 53, bytesN(20))))
	for _, ifindex := range []uint32{7, 63, 64, fateIfaceBits - 1, fateIfaceBits, 1 << 30} {
		run := func() uint64 {
			t.Helper()
			if err := ns.Do(func() error { runFrame(t, f.progs.EgressFateParse, frame, ctxWithIfindexes(ifindex, 1)); return nil }); err != nil {
				t.Fatal(err)
			}
			var n uint64
			for id, m := range drain(t, f) {
				if id.IfIndex == ifindex && id.Fate == FateForwarded {
					n += m.Packets
				}
			}
			return n
		}
		if n := run(); n != 0 {
			t.Errorf("ifindex %d not watched: %d forwarded", ifindex, n)
		}
		watch(t, f, ifindex)
		if n := run(); n != 1 {
			t.Errorf("ifindex %d watched: %d forwarded, want 1", ifindex, n)
		}
		if err := f.watchArrivals(int(ifindex), false); err != nil {
			t.Fatal(err)
		}
		if n := run(); n != 0 {
			t.Errorf("ifindex %d forgotten: %d forwarded", ifindex, n)
		}
	}
}
