package bpf

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// testRunMaxFrame is a frame size BPF_PROG_TEST_RUN accepts on any page
// size of 4 KiB or more (it wants the frame, the headroom and the
// skb_shared_info in one page).
const testRunMaxFrame = 3000

// testRunRejects reports whether BPF_PROG_TEST_RUN of a TC program refuses
// frame with EINVAL: shorter than an Ethernet header, or, when the
// untagged ethertype is IPv4 or IPv6, too short for that fixed header (the
// kernel reads the addresses into the test socket). It says nothing about
// the header's contents: a bad version or IHL runs.
func testRunRejects(frame []byte) bool {
	if len(frame) < 14 {
		return true
	}
	switch binary.BigEndian.Uint16(frame[12:14]) {
	case etherTypeIPv4:
		return len(frame)-14 < 20
	case etherTypeIPv6:
		return len(frame)-14 < 40
	}
	return false
}

// checkAgainstRef compares the flows and the counter deltas of one run with the
// reference's answer.
func checkAgainstRef(t *testing.T, what string, want refResult, flows map[NetFlowId]NetFlowMetrics, before, after KernelCounters) {
	t.Helper()
	notIP, malformed := after.NotIP-before.NotIP, after.Malformed-before.Malformed
	other := (after.MapFull - before.MapFull) + (after.RingBufFull - before.RingBufFull) +
		(after.NoMap - before.NoMap) + (after.SampledOut - before.SampledOut)
	if other != 0 {
		t.Fatalf("%s: unexpected counters %+v", what, after)
	}
	switch want.verdict {
	case refNotIP, refMalformed:
		wantNotIP, wantMalformed := uint64(0), uint64(0)
		if want.verdict == refNotIP {
			wantNotIP = 1
		} else {
			wantMalformed = 1
		}
		if len(flows) != 0 || notIP != wantNotIP || malformed != wantMalformed {
			t.Fatalf("%s: reference says %v; program made flows %v, NotIP +%d, Malformed +%d", what, want.verdict, flows, notIP, malformed)
		}
		return
	}
	if notIP != 0 || malformed != 0 || len(flows) != 1 {
		t.Fatalf("%s: reference says flow %v (%d bytes); program made flows %v, NotIP +%d, Malformed +%d",
			what, want.key, want.bytes, flows, notIP, malformed)
	}
	for got, m := range flows {
		k := got
		k.IfIndex, k.Direction = 0, 0
		if k != want.key {
			t.Fatalf("%s: key\n got %+v\nwant %+v", what, NetFlowIdT(k), NetFlowIdT(want.key))
		}
		if m.Packets != 1 || m.Bytes != want.bytes || m.Flags != want.flags {
			t.Fatalf("%s: %v: packets %d bytes %d flags %#x, want 1, %d, %#x", what, got, m.Packets, m.Bytes, m.Flags, want.bytes, want.flags)
		}
	}
}

// FuzzParseDifferential runs each frame through the ingress TC program and
// through the socket filter, and checks that both record what refParse,
// written independently from the RFCs, says: the same key, packet and
// byte counts and TCP flags, or the same counter incremented.
//
// The TC program is run only where BPF_PROG_TEST_RUN accepts the frame
// (testRunRejects is checked to match the kernel exactly). The socket
// filter gets every frame of at least 14 bytes: test_run hands a socket
// filter the packet behind the first 14 bytes (it pulls the Ethernet
// header and, unlike for TC, does not push it back), so the frame is run
// behind a dummy Ethernet header of an ethertype nobody checks.
func FuzzParseDifferential(f *testing.F) {
	for _, tc := range parseCases() {
		for _, p := range tc.pkts {
			f.Add(p.frame())
		}
	}
	for _, fr := range fuzzSeeds() {
		f.Add(fr)
	}
	// Flows stay in the kernel's map from one input to the next, and
	// each drain must report the flags of its own input only: with the
	// coarse clock, a CPU's last packet in the same tick as the previous
	// drain's start counts as new (see flowMaps.delta). The precise
	// clock orders them exactly.
	tcf := newTestFetcher(f, 64, WithPreciseTimestamps(true))
	skf := newTestSockFetcher(f, 64, WithPreciseTimestamps(true))

	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) > testRunMaxFrame {
			t.Skip("larger than test_run takes")
		}
		rejects := testRunRejects(frame)
		var want refResult
		if len(frame) >= 14 {
			want = refParse(frame)
		}

		before := counters(t, tcf)
		_, err := tcf.progs.IngressFlowParse.Run(&ebpf.RunOptions{Data: frame, Repeat: 1})
		switch {
		case rejects && !errors.Is(err, unix.EINVAL):
			t.Fatalf("test_run of %d-byte frame: %v, want EINVAL", len(frame), err)
		case !rejects && err != nil:
			t.Fatalf("test_run of %d-byte frame: %v", len(frame), err)
		case !rejects:
			checkAgainstRef(t, "tc", want, drain(t, tcf), before, counters(t, tcf))
		}

		if len(frame) < 14 {
			return
		}
		before = counters(t, skf)
		ret, err := skf.progs.SockFlowParse.Run(&ebpf.RunOptions{Data: sockTestFrame(dummyHost, frame), Repeat: 1})
		if err != nil || ret != 0 {
			t.Fatalf("test_run of socket filter: %d, %v", ret, err)
		}
		checkAgainstRef(t, "socket", want, drain(t, skf), before, counters(t, skf))
	})
}

// fuzzSeeds are frames the parser cases lack: protocols and length fields
// at their edges, and the shapes of the bugs the differential test found in
// c/parse.h (regressions, besides the corpus in testdata/fuzz).
func fuzzSeeds() [][]byte {
	udp4 := ipv4{src: v4a, dst: v4b, proto: protoUDP}
	setLen := func(b []byte, at int, v uint16) []byte {
		binary.BigEndian.PutUint16(b[at:], v)
		return b
	}
	dstOpts := make([]ipv6Ext, 9)
	for i := range dstOpts {
		dstOpts[i] = ipv6Ext{proto: protoDstOpt, length: 8}
	}
	return [][]byte{
		ether(etherTypeIPv4, nil, ipv4{src: v4a, dst: v4b, proto: 136}.build(udp(1, 2, bytesN(4)))),
		ether(etherTypeIPv6, nil, ipv6{src: v6a, dst: v6b, proto: protoSCTP}.build(sctp(1, 2, bytesN(4)))),
		// Total length 0 (TSO, BIG TCP) and IPv6 payload length 0.
		ether(etherTypeIPv4, nil, setLen(udp4.build(udp(1, 2, bytesN(30))), 2, 0)),
		ether(etherTypeIPv6, nil, setLen(ipv6{src: v6a, dst: v6b, proto: protoTCP}.build(tcp(1, 2, tcpSYN, nil, nil)), 4, 0)),
		// More extension headers than the parser walks.
		ether(etherTypeIPv6, nil, ipv6{src: v6a, dst: v6b, proto: protoUDP, exts: dstOpts}.build(udp(1, 2, nil))),
		ether(etherTypeIPv6, nil, ipv6{src: v6a, dst: v6b, proto: protoTCP, exts: []ipv6Ext{
			{proto: protoAH, length: 16}, {proto: protoFrag, fragOff: 3}}}.build(bytesN(40))),
		// Bug: ports were read from the Ethernet padding behind an IP
		// packet that ends before its UDP header.
		append(ether(etherTypeIPv4, nil, setLen(udp4.build(nil), 2, 20)), bytesN(26)...),
		// Bug: a TCP header cut after the flags byte counted as a flow.
		ether(etherTypeIPv4, nil, ipv4{src: v4a, dst: v4b, proto: protoTCP}.build(tcp(1, 2, tcpSYN, nil, nil)[:14])),
		// Bug: an IPv6 extension header running past the packet's end.
		ether(etherTypeIPv6, nil, func() []byte {
			b := ipv6{src: v6a, dst: v6b, proto: 59, exts: []ipv6Ext{{proto: protoHop, length: 8}}}.build(nil)
			b[41] = 200
			return b
		}()),
		// ToS and Traffic Class with every bit set, the flow label's
		// too.
		ether(etherTypeIPv4, nil, ipv4{src: v4a, dst: v4b, proto: protoUDP, tos: 0xff}.build(udp(1, 2, nil))),
		ether(etherTypeIPv6, nil, ipv6{src: v6a, dst: v6b, proto: protoUDP, tclass: 0xff, flow: 0xfffff}.build(udp(1, 2, nil))),
		// Bug: IPv4 total length shorter than the header.
		ether(etherTypeIPv4, nil, setLen(ipv4{src: v4a, dst: v4b, proto: 47}.build(bytesN(8)), 2, 12)),
	}
}
