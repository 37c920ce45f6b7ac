package exporter

import (
	"net/netip"
	"testing"

	"github.com/hostflow/hostflow/bpf"
)

func TestKeyOf(t *testing.T) {
	v4 := bpf.NetFlowId{EthProtocol: 0x0800, TransportProtocol: 17, SrcPort: 5000, DstPort: 53,
		SrcIp: netip.MustParseAddr("::ffff:198.18.0.1").As16(), DstIp: netip.MustParseAddr("::ffff:198.18.0.2").As16(),
		IfIndex: 3, Direction: bpf.DirectionEgress, VlanId: 7, Tos: 0xb8}
	v6 := bpf.NetFlowId{EthProtocol: 0x86dd, TransportProtocol: 58, IcmpType: 128, IcmpCode: 1,
		SrcIp: netip.MustParseAddr("fd00::1").As16(), DstIp: netip.MustParseAddr("::ffff:198.18.0.2").As16()}
	dropped := v4
	dropped.Fate = 131
	for _, tt := range []struct {
		name      string
		id        bpf.NetFlowId
		valid, v4 bool
		ether     uint16
		str       string
		variant   int
	}{
		{"ipv4", v4, true, true, 0x0800, "udp 198.18.0.1:5000 -> 198.18.0.2:53 if=3 egress", 1},
		// An IPv6 packet to an IPv4-mapped address stays IPv6.
		{"ipv6", v6, true, false, 0x86dd, "icmpv6 [fd00::1]:0 -> [::ffff:198.18.0.2]:0 if=0 ingress", 6},
		{"zero", bpf.NetFlowId{}, false, false, 0, "invalid flow key", 2},
		{"dropped", dropped, true, true, 0x0800, "udp 198.18.0.1:5000 -> 198.18.0.2:53 if=3 egress fate=131", 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			k := KeyOf(tt.id)
			if k.Valid() != tt.valid || k.IsIPv4() != tt.v4 || k.EtherType() != tt.ether || k.variant() != tt.variant {
				t.Errorf("valid %v ipv4 %v ether %#x variant %d, want %v %v %#x %d", k.Valid(), k.IsIPv4(), k.EtherType(), k.variant(),
					tt.valid, tt.v4, tt.ether, tt.variant)
			}
			if s := k.String(); s != tt.str {
				t.Errorf("String() = %q, want %q", s, tt.str)
			}
			if k.Fate != tt.id.Fate {
				t.Errorf("fate %d, want %d", k.Fate, tt.id.Fate)
			}
			if tt.valid && (k.Src != tt.id.SrcAddr() && k.Src != netip.AddrFrom16(tt.id.SrcIp)) {
				t.Errorf("src %v", k.Src)
			}
		})
	}
	if (FlowKey{}).Valid() {
		t.Error("zero FlowKey is valid")
	}
	// A map key: the keys of one id are equal.
	m := map[FlowKey]int{KeyOf(v4): 1}
	if m[KeyOf(v4)] != 1 || m[KeyOf(v6)] != 0 || m[KeyOf(dropped)] != 0 {
		t.Error("keys of one id differ, or of two ids (or two fates) match")
	}
}
