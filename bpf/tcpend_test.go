package bpf

import (
	"net/netip"
	"testing"
)

// TestTCPEndsCounter: COUNTER_TCP_END (TCPEnds) grows by one for each TCP
// packet with FIN or RST, and for nothing else, so that a poll may skip
// reading the flows until the idle timeout while it stays put.
func TestTCPEndsCounter(t *testing.T) {
	f := newTestFetcher(t, 64)
	frame := func(proto uint8, l4 []byte) []byte {
		return ether(etherTypeIPv4, nil, ipv4{src: netip.MustParseAddr("198.18.0.1"), dst: netip.MustParseAddr("198.18.0.2"), proto: proto}.build(l4))
	}
	for _, tc := range []struct {
		name  string
		frame []byte
		want  uint64
	}{
		{"udp", frame(protoUDP, udp(1, 2, nil)), 0},
		{"tcp syn", frame(protoTCP, tcp(3, 4, 0x02, nil, nil)), 0},
		{"tcp ack psh", frame(protoTCP, tcp(3, 4, 0x18, nil, []byte("x"))), 0},
		{"tcp fin ack", frame(protoTCP, tcp(3, 4, 0x11, nil, nil)), 1},
		{"tcp rst", frame(protoTCP, tcp(5, 6, 0x04, nil, nil)), 1},
		{"tcp syn ack", frame(protoTCP, tcp(5, 6, 0x12, nil, nil)), 0},
	} {
		before, err := f.TCPEnds()
		if err != nil {
			t.Fatal(err)
		}
		runFrame(t, f.progs.IngressFlowParse, tc.frame, nil)
		after, err := f.TCPEnds()
		if err != nil {
			t.Fatal(err)
		}
		if after-before != tc.want {
			t.Errorf("%s: TCPEnds grew by %d, want %d", tc.name, after-before, tc.want)
		}
	}
}
