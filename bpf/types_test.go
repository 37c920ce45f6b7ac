package bpf

import (
	"encoding/json"
	"net/netip"
	"testing"
	"time"
)

func TestIPAddr(t *testing.T) {
	for _, tt := range []struct {
		in   string
		is4  bool
		int4 uint32
	}{
		{"198.18.0.1", true, 0xc6120001},
		{"0.0.0.0", true, 0},
		{"fd00::1", false, 1},
		{"::ffff:10.1.2.3", true, 0x0a010203},
	} {
		a := IPAddrFrom(netip.MustParseAddr(tt.in))
		if a.Is4() != tt.is4 || a.IntEncodeV4() != tt.int4 {
			t.Errorf("%s: Is4 %v IntEncodeV4 %#x", tt.in, a.Is4(), a.IntEncodeV4())
		}
		if got := a.Addr(); got != netip.MustParseAddr(tt.in).Unmap() {
			t.Errorf("%s: Addr() = %v", tt.in, got)
		}
		b, err := json.Marshal(&a)
		if err != nil || string(b) != `"`+netip.MustParseAddr(tt.in).Unmap().String()+`"` {
			t.Errorf("%s: MarshalJSON = %s, %v", tt.in, b, err)
		}
	}
}

func TestNetFlowIdString(t *testing.T) {
	id := NetFlowId{SrcIp: IPAddrFrom(netip.MustParseAddr("198.18.0.1")), DstIp: IPAddrFrom(netip.MustParseAddr("198.18.0.2")),
		EthProtocol: 0x0800, TransportProtocol: 17, SrcPort: 5000, DstPort: 53, IfIndex: 3, Direction: DirectionEgress}
	if got, want := id.String(), "udp 198.18.0.1:5000 -> 198.18.0.2:53 if=3 egress"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if !id.Valid() || !id.IsIPv4() || (NetFlowId{}).Valid() {
		t.Error("Valid/IsIPv4 wrong")
	}
	// Comparable: usable as a map key, equal values are one key.
	m := map[NetFlowId]int{id: 1}
	id2 := id
	m[id2]++
	if len(m) != 1 || m[id] != 2 {
		t.Errorf("map %v", m)
	}
}

func TestAccumulate(t *testing.T) {
	for _, tt := range []struct {
		name     string
		dst, src NetFlowMetrics
		want     NetFlowMetrics
	}{
		{"into empty", NetFlowMetrics{}, NetFlowMetrics{Packets: 2, Bytes: 100, StartMonoTimeTs: 10, EndMonoTimeTs: 20, Flags: 2, Sampling: 4},
			NetFlowMetrics{Packets: 2, Bytes: 100, StartMonoTimeTs: 10, EndMonoTimeTs: 20, Flags: 2, Sampling: 4}},
		{"empty source changes nothing", NetFlowMetrics{Packets: 1, Bytes: 60, StartMonoTimeTs: 5, EndMonoTimeTs: 6}, NetFlowMetrics{},
			NetFlowMetrics{Packets: 1, Bytes: 60, StartMonoTimeTs: 5, EndMonoTimeTs: 6}},
		{"widens and ORs", NetFlowMetrics{Packets: 1, Bytes: 60, StartMonoTimeTs: 5, EndMonoTimeTs: 6, Flags: 0x10},
			NetFlowMetrics{Packets: 3, Bytes: 40, StartMonoTimeTs: 2, EndMonoTimeTs: 9, Flags: 0x01},
			NetFlowMetrics{Packets: 4, Bytes: 100, StartMonoTimeTs: 2, EndMonoTimeTs: 9, Flags: 0x11}},
		{"later source keeps start", NetFlowMetrics{Packets: 1, Bytes: 1, StartMonoTimeTs: 5, EndMonoTimeTs: 6},
			NetFlowMetrics{Packets: 1, Bytes: 1, StartMonoTimeTs: 7, EndMonoTimeTs: 8},
			NetFlowMetrics{Packets: 2, Bytes: 2, StartMonoTimeTs: 5, EndMonoTimeTs: 8}},
		{"later egress interface wins", NetFlowMetrics{Packets: 1, Bytes: 1, StartMonoTimeTs: 5, EndMonoTimeTs: 6, OutIfIndex: 3},
			NetFlowMetrics{Packets: 1, Bytes: 1, StartMonoTimeTs: 7, EndMonoTimeTs: 8, OutIfIndex: 4},
			NetFlowMetrics{Packets: 2, Bytes: 2, StartMonoTimeTs: 5, EndMonoTimeTs: 8, OutIfIndex: 4}},
		{"older egress interface loses", NetFlowMetrics{Packets: 1, Bytes: 1, StartMonoTimeTs: 7, EndMonoTimeTs: 8, OutIfIndex: 4},
			NetFlowMetrics{Packets: 1, Bytes: 1, StartMonoTimeTs: 5, EndMonoTimeTs: 6, OutIfIndex: 3},
			NetFlowMetrics{Packets: 2, Bytes: 2, StartMonoTimeTs: 5, EndMonoTimeTs: 8, OutIfIndex: 4}},
		{"no egress interface keeps the known one", NetFlowMetrics{Packets: 1, Bytes: 1, StartMonoTimeTs: 5, EndMonoTimeTs: 6, OutIfIndex: 3},
			NetFlowMetrics{Packets: 1, Bytes: 1, StartMonoTimeTs: 7, EndMonoTimeTs: 8},
			NetFlowMetrics{Packets: 2, Bytes: 2, StartMonoTimeTs: 5, EndMonoTimeTs: 8, OutIfIndex: 3}},
	} {
		got := tt.dst
		got.Accumulate(&tt.src)
		if got != tt.want {
			t.Errorf("%s: got %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

func TestMonoToTime(t *testing.T) {
	wall := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	if got := MonoToTime(uint64(9*time.Second), wall, 10*time.Second); !got.Equal(wall.Add(-time.Second)) {
		t.Errorf("MonoToTime = %v", got)
	}
}

// TestSharedNames: configure and replacements use one set of names for
// both objects, which holds while both include c/account.h.
func TestSharedNames(t *testing.T) {
	for _, p := range [][2]string{
		{NetVarSampling, NetSkVarSampling}, {NetVarSamplingMode, NetSkVarSamplingMode},
		{NetVarPreciseClock, NetSkVarPreciseClock},
		{NetMapFlows0, NetSkMapFlows0}, {NetMapFlows1, NetSkMapFlows1},
		{NetMapFlows40, NetSkMapFlows40}, {NetMapFlows41, NetSkMapFlows41},
		{NetMapFlowStateMap, NetSkMapFlowStateMap}, {NetMapGracePeriod, NetSkMapGracePeriod},
		{NetMapDirectFlows, NetSkMapDirectFlows},
		{NetMapGlobalCounters, NetSkMapGlobalCounters}, {NetMapSamplingCount, NetSkMapSamplingCount},
	} {
		if p[0] != p[1] {
			t.Errorf("TC object names %q, socket object %q", p[0], p[1])
		}
	}
}
