package bpf

import "testing"

// TestParseGSO checks that a GSO skb is counted as gso_segs packets, each
// repeating the IP and transport headers. gso_segs comes from the test_run
// context; frames stay under test_run's limit of about 3.5 KiB.
func TestParseGSO(t *testing.T) {
	for _, tc := range []struct {
		name    string
		p       pkt
		segs    uint32
		hdrLen  uint64 // L3+L4 header bytes every segment repeats
		flags   uint16
		wantKey NetFlowId
	}{
		{
			name:   "ipv4 tcp with timestamps",
			p:      v4pkt(ipv4{src: v4a, dst: v4b, proto: protoTCP}, tcp(1, 2, tcpACK, bytesN(12), bytesN(2000))),
			segs:   4,
			hdrLen: 20 + 32,
			flags:  tcpACK,
		},
		{
			name:   "ipv6 with hop-by-hop, udp gso",
			p:      v6pkt(ipv6{src: v6a, dst: v6b, proto: protoUDP, exts: []ipv6Ext{{proto: protoHop, length: 8}}}, udp(1, 2, bytesN(2000))),
			segs:   3,
			hdrLen: 40 + 8 + 8,
		},
		{
			name:   "gso_segs 1 is one packet",
			p:      v4pkt(ipv4{src: v4a, dst: v4b, proto: protoUDP}, udp(1, 2, bytesN(100))),
			segs:   1,
			hdrLen: 28,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newTestFetcher(t, 8)
			runFrame(t, f.progs.EgressFlowParse, tc.p.frame(), ctxWithGSOSegs(tc.segs))
			flows := drain(t, f)
			if len(flows) != 1 {
				t.Fatalf("got %d flows, want 1: %v", len(flows), flows)
			}
			for id, m := range flows {
				wantBytes := uint64(len(tc.p.l3)) + uint64(tc.segs-1)*tc.hdrLen
				if m.Packets != uint64(tc.segs) || m.Bytes != wantBytes {
					t.Errorf("%v: packets %d bytes %d, want %d and %d", id, m.Packets, m.Bytes, tc.segs, wantBytes)
				}
				if m.Flags != tc.flags {
					t.Errorf("flags %#x, want %#x", m.Flags, tc.flags)
				}
			}
		})
	}
}
