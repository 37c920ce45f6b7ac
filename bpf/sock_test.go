package bpf

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"
)

// newTestSockFetcher loads a socket fetcher that is closed when the test
// ends.
func newTestSockFetcher(t testing.TB, cacheMaxSize int, opts ...FetcherOption) *SockFlowFetcher {
	t.Helper()
	requirePrivileges(t)
	f, err := NewSockFlowFetcher(0, cacheMaxSize, opts...)
	if err != nil {
		t.Fatalf("NewSockFlowFetcher: %v", err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return f
}

// Destination MACs of the dummy header sockTestFrame puts in front of a
// frame: eth_type_trans derives skb->pkt_type from it, against the zero
// address of the loopback device test_run uses.
var (
	dummyHost      = [6]byte{}                                   // PACKET_HOST
	dummyBroadcast = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff} // PACKET_BROADCAST
	dummyMulticast = [6]byte{0x01, 0x00, 0x5e, 0x00, 0x00, 0x01} // PACKET_MULTICAST
	dummyOtherHost = [6]byte{0x02, 0x48, 0x46, 0x00, 0x00, 0x09} // PACKET_OTHERHOST
)

// etherTypeDummy is IEEE's local experimental ethertype: test_run checks
// nothing behind it.
const etherTypeDummy = 0x88b5

// sockTestFrame prepares frame for BPF_PROG_TEST_RUN of the socket filter.
// test_run pulls the first 14 bytes as the Ethernet header and, unlike for
// TC programs, does not push them back: a socket filter sees the packet
// from the network header on. A packet socket, however, hands it the frame
// from the MAC header on. A dummy Ethernet header in front of the real
// frame makes the two agree, and its destination sets skb->pkt_type.
func sockTestFrame(dst [6]byte, frame []byte) []byte {
	b := append([]byte(nil), dst[:]...)
	b = append(b, macSrc[:]...)
	b = append(b, etherTypeDummy>>8, etherTypeDummy&0xff)
	return append(b, frame...)
}

// runSock runs a socket filter over data and checks it returned 0: the
// socket must never be handed the packet.
func runSock(t testing.TB, prog *ebpf.Program, data []byte) {
	t.Helper()
	ret, err := prog.Run(&ebpf.RunOptions{Data: data, Repeat: 1})
	if err != nil {
		t.Fatalf("run %s on %d bytes: %v", prog, len(data), err)
	}
	if ret != 0 {
		t.Fatalf("run %s: returned %d, want 0: the socket must never receive a packet", prog, ret)
	}
}

// TestSockParse runs every parser case through the socket filter, with
// each packet type a receiving interface can produce: all are ingress.
// PACKET_OUTGOING cannot be made by test_run; TestSockAttach covers it.
func TestSockParse(t *testing.T) {
	requirePrivileges(t)
	for _, tc := range parseCases() {
		t.Run(tc.name, func(t *testing.T) {
			for _, pt := range []struct {
				name string
				dst  [6]byte
			}{{"host", dummyHost}, {"broadcast", dummyBroadcast}, {"multicast", dummyMulticast}, {"otherhost", dummyOtherHost}} {
				t.Run(pt.name, func(t *testing.T) {
					f := newTestSockFetcher(t, 64)
					repeat := max(tc.repeat, 1)
					var wantBytes uint64
					for _, p := range tc.pkts {
						for range repeat {
							runSock(t, f.progs.SockFlowParse, sockTestFrame(pt.dst, p.frame()))
							wantBytes += uint64(len(p.l3))
						}
					}
					checkCase(t, tc, counters(t, f), drain(t, f), uint64(len(tc.pkts)*repeat), wantBytes)
				})
			}
		})
	}
}

// TestSockParseL3 runs the untagged cases through the filter for devices
// without a link-layer header: test_run hands it the packet from the IP
// header on, with skb->protocol from the frame's ethertype, just as a
// packet socket on a tun device does.
func TestSockParseL3(t *testing.T) {
	requirePrivileges(t)
	for _, tc := range parseCases() {
		if len(tc.pkts[0].tags) != 0 || tc.pkts[0].etherType == tpid8021Q || testRunRejects(tc.pkts[0].frame()) {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			f := newTestSockFetcher(t, 64)
			repeat := max(tc.repeat, 1)
			var wantBytes uint64
			for _, p := range tc.pkts {
				for range repeat {
					runSock(t, f.progs.SockFlowParseL3, p.frame())
					wantBytes += uint64(len(p.l3))
				}
			}
			checkCase(t, tc, counters(t, f), drain(t, f), uint64(len(tc.pkts)*repeat), wantBytes)
		})
	}
}

// checkCase checks the counters and the one ingress flow of a parser case.
func checkCase(t *testing.T, tc parseCase, c KernelCounters, flows map[NetFlowId]NetFlowMetrics, wantPackets, wantBytes uint64) {
	t.Helper()
	if c.NotIP != tc.notIP || c.Malformed != tc.malformed || c.MapFull != 0 ||
		c.RingBufFull != 0 || c.NoMap != 0 || c.SampledOut != 0 {
		t.Errorf("counters %+v, want NotIP=%d Malformed=%d and no others", c, tc.notIP, tc.malformed)
	}
	if tc.notIP != 0 || tc.malformed != 0 {
		if len(flows) != 0 {
			t.Fatalf("got %d flows, want none: %v", len(flows), flows)
		}
		return
	}
	want := tc.want
	want.Direction = DirectionIngress
	want.IfIndex = 1 // test_run runs on the namespace's loopback
	m, ok := flows[want]
	if !ok || len(flows) != 1 {
		t.Fatalf("flows %v, want exactly %+v", flows, want)
	}
	if m.Packets != wantPackets || m.Bytes != wantBytes || m.Flags != tc.flags {
		t.Errorf("packets %d bytes %d flags %#x, want %d, %d, %#x", m.Packets, m.Bytes, m.Flags, wantPackets, wantBytes, tc.flags)
	}
}

// TestSockGSO checks that a GSO skb counts as gso_segs packets, as in TC.
func TestSockGSO(t *testing.T) {
	f := newTestSockFetcher(t, 8)
	p := v4pkt(ipv4{src: v4a, dst: v4b, proto: protoTCP}, tcp(1, 2, tcpACK, bytesN(12), bytesN(2000)))
	_, err := f.progs.SockFlowParse.Run(&ebpf.RunOptions{Data: sockTestFrame(dummyHost, p.frame()), Repeat: 1, Context: ctxWithGSOSegs(4)})
	if err != nil {
		t.Fatal(err)
	}
	flows := drain(t, f)
	if len(flows) != 1 {
		t.Fatalf("got %d flows, want 1: %v", len(flows), flows)
	}
	for id, m := range flows {
		if want := uint64(len(p.l3)) + 3*(20+32); m.Packets != 4 || m.Bytes != want {
			t.Errorf("%v: packets %d bytes %d, want 4 and %d", id, m.Packets, m.Bytes, want)
		}
	}
}

func TestSockFetcherArguments(t *testing.T) {
	if _, err := NewSockFlowFetcher(-1, 8); err == nil {
		t.Error("negative sampling accepted")
	}
	if _, err := NewSockFlowFetcher(0, 0); err == nil {
		t.Error("cache size 0 accepted")
	}
	f := newTestSockFetcher(t, 8)
	if err := f.Detach(12345); !errors.Is(err, ErrNotAttached) {
		t.Errorf("Detach of an unknown ifindex: %v, want ErrNotAttached", err)
	}
}

// TestSockMapFull checks the ring buffer path: with room for one flow, a
// second flow's packet arrives through ReadRingBuf and counts as MapFull.
func TestSockMapFull(t *testing.T) {
	f := newTestSockFetcher(t, 1)
	first := v4pkt(ipv4{src: v4a, dst: v4b, proto: protoUDP}, udp(1, 2, nil))
	second := v4pkt(ipv4{src: v4a, dst: v4b, proto: protoUDP}, udp(3, 4, bytesN(10)))
	runSock(t, f.progs.SockFlowParse, sockTestFrame(dummyHost, first.frame()))
	runSock(t, f.progs.SockFlowParse, sockTestFrame(dummyHost, second.frame()))
	if c := counters(t, f); c.MapFull != 1 || c.RingBufFull != 0 {
		t.Fatalf("counters %+v, want MapFull 1", c)
	}
	if err := f.FlushRingBuf(); err != nil {
		t.Fatalf("FlushRingBuf: %v", err)
	}
	raw, err := f.ReadRingBuf()
	if err != nil {
		t.Fatalf("ReadRingBuf: %v", err)
	}
	r, err := DecodeRecord(raw.RawSample)
	if err != nil {
		t.Fatal(err)
	}
	if r.Id.SrcPort != 3 || r.Id.DstPort != 4 || r.Id.Direction != DirectionIngress || r.Metrics.Packets != 1 || r.Metrics.Bytes != uint64(len(second.l3)) {
		t.Errorf("diverted record %v %+v, want the second flow, 1 packet of %d bytes", r.Id, r.Metrics, len(second.l3))
	}
	if flows := drain(t, f); len(flows) != 1 {
		t.Errorf("aggregated flows %v, want only the first", flows)
	}
}
