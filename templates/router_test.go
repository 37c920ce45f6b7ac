package templates

import (
	"slices"
	"strings"
	"testing"

	"github.com/vmware/go-ipfix/pkg/registry"
)

// TestRouterSet checks the router layouts field by field, written out here
// independently of the tables: IPFIX and v9, eight variants each.
func TestRouterSet(t *testing.T) {
	type f struct {
		id, length uint16
		name       string
	}
	ipfixV4 := []f{{14, 4, "egressInterface"}, {15, 4, "ipNextHopIPv4Address"},
		{9, 1, "sourceIPv4PrefixLength"}, {13, 1, "destinationIPv4PrefixLength"},
		{89, 1, "forwardingStatus"},
		{225, 4, "postNATSourceIPv4Address"}, {226, 4, "postNATDestinationIPv4Address"},
		{227, 2, "postNAPTSourceTransportPort"}, {228, 2, "postNAPTDestinationTransportPort"}}
	ipfixV6 := []f{{14, 4, "egressInterface"}, {62, 16, "ipNextHopIPv6Address"},
		{29, 1, "sourceIPv6PrefixLength"}, {30, 1, "destinationIPv6PrefixLength"},
		{89, 1, "forwardingStatus"},
		{281, 16, "postNATSourceIPv6Address"}, {282, 16, "postNATDestinationIPv6Address"},
		{227, 2, "postNAPTSourceTransportPort"}, {228, 2, "postNAPTDestinationTransportPort"}}
	v9V4 := []f{{14, 4, "OUTPUT_SNMP"}, {15, 4, "IPV4_NEXT_HOP"}, {9, 1, "SRC_MASK"}, {13, 1, "DST_MASK"},
		{89, 1, "FORWARDING_STATUS"}, {225, 4, "XLATE_SRC_ADDR_IPV4"}, {226, 4, "XLATE_DST_ADDR_IPV4"},
		{227, 2, "XLATE_SRC_PORT"}, {228, 2, "XLATE_DST_PORT"}}
	v9V6 := []f{{14, 4, "OUTPUT_SNMP"}, {62, 16, "IPV6_NEXT_HOP"}, {29, 1, "IPV6_SRC_MASK"}, {30, 1, "IPV6_DST_MASK"},
		{89, 1, "FORWARDING_STATUS"}, {281, 16, "XLATE_SRC_ADDR_IPV6"}, {282, 16, "XLATE_DST_ADDR_IPV6"},
		{227, 2, "XLATE_SRC_PORT"}, {228, 2, "XLATE_DST_PORT"}}
	for _, tc := range []struct {
		p            ExportProtocol
		base         *Set
		v4, v6       []f
		in           string
		recV4, recV6 int
		recI4, recI6 int // ICMP templates: no ports, no post-NAPT ports
	}{
		{IPFIX, DefaultSet(IPFIX), ipfixV4, ipfixV6, "ingressInterface", 79, 139, 73, 133},
		{NetFlowV9, DefaultSet(NetFlowV9), v9V4, v9V6, "INPUT_SNMP", 69, 129, 63, 123},
	} {
		s := RouterSet(tc.p)
		if s.Protocol != tc.p {
			t.Fatalf("%v: protocol %v", tc.p, s.Protocol)
		}
		for i, tmpl := range s.Templates() {
			base := tc.base.Templates()[i]
			if tmpl.ID != base.ID || tmpl.Name != base.Name {
				t.Errorf("%v %d: %d %s", tc.p, i, tmpl.ID, tmpl.Name)
			}
			extra, rec := tc.v4, tc.recV4
			if i&2 != 0 {
				extra, rec = tc.v6, tc.recV6
			}
			if i&4 != 0 {
				extra, rec = extra[:len(extra)-2], tc.recI4
				if i&2 != 0 {
					rec = tc.recI6
				}
			}
			if len(tmpl.Fields) != len(base.Fields)+len(extra) {
				t.Fatalf("%v %s: %d fields", tc.p, tmpl.Name, len(tmpl.Fields))
			}
			for j, b := range base.Fields {
				g := tmpl.Fields[j]
				// The interface of the default layout is ingressInterface
				// in every variant of a router layout.
				if b.ID == IEEgressInterface || b.ID == IEIngressInterface {
					if g.ID != IEIngressInterface || g.Name != tc.in || g.Value != InInterface {
						t.Errorf("%v %s field %d: %+v, want the router ingress interface", tc.p, tmpl.Name, j, g)
					}
					continue
				}
				if g != b {
					t.Errorf("%v %s field %d: %+v, want %+v", tc.p, tmpl.Name, j, g, b)
				}
			}
			for j, w := range extra {
				g := tmpl.Fields[len(base.Fields)+j]
				if g.ID != w.id || g.Length != w.length || g.Name != w.name || g.Value == NoValue {
					t.Errorf("%v %s router field %d: %+v, want %+v", tc.p, tmpl.Name, j, g, w)
				}
			}
			if tmpl.Fields[len(base.Fields)].Value != OutInterface {
				t.Errorf("%v %s: egressInterface value %d", tc.p, tmpl.Name, tmpl.Fields[len(base.Fields)].Value)
			}
			if n := tmpl.RecordLength(); n != rec {
				t.Errorf("%v %s: record length %d, want %d", tc.p, tmpl.Name, n, rec)
			}
		}
	}
	// The default sets are untouched by the router ones.
	if got := DefaultSet(IPFIX).Templates()[0].Fields; len(got) != 15 || got[12].Value != Interface {
		t.Errorf("default IPFIX set changed: %+v", got)
	}
}

// TestRouterElementsRegistry checks the router elements against the IANA
// registry: name and length, except forwardingStatus, which go-ipfix's
// registry copy still has as RFC 7270's unsigned32 (4 bytes) and which is
// sent in one byte (IANA's unsigned8, or reduced-size encoding).
func TestRouterElementsRegistry(t *testing.T) {
	registry.LoadRegistry()
	for _, e := range append(slices.Clone(routerElements), routerInterfaceElems[:]...) {
		ie, err := registry.GetInfoElementFromID(e.ipfix.ID, registry.IANAEnterpriseID)
		if err != nil {
			t.Errorf("%s: %v", e.ipfix.Name, err)
			continue
		}
		wantLen := ie.Len
		if e.ipfix.ID == IEForwardingStatus {
			wantLen = 1
		}
		if ie.Name != e.ipfix.Name || wantLen != e.ipfix.Length {
			t.Errorf("element %d is %s/%d in the registry, %s/%d here", e.ipfix.ID, ie.Name, ie.Len, e.ipfix.Name, e.ipfix.Length)
		}
		ipfixOnly := e.ipfix.ID == IEDroppedOctetDeltaCount || e.ipfix.ID == IEDroppedPacketDeltaCount
		if ipfixOnly != (e.v9.ID == 0) || (!ipfixOnly && (e.v9.Length != e.ipfix.Length || e.v9.Value != e.ipfix.Value)) {
			t.Errorf("%s: v9 field %+v", e.ipfix.Name, e.v9)
		}
		if e.twin != "" && byName[e.twin] == nil {
			t.Errorf("%s: no twin %s", e.ipfix.Name, e.twin)
		}
	}
}

func TestRouterFromNames(t *testing.T) {
	tests := []struct {
		name    string
		proto   ExportProtocol
		names   []string
		wantErr string
		// want is the field names and values of the IPv6-egress variant.
		want   []string
		values []Value
	}{
		{"router layout by name", IPFIX, RouterNames(IPFIX), "", nil, nil},
		{"both interfaces with a router element", IPFIX,
			[]string{"ingressInterface", "egressInterface", "forwardingStatus"}, "",
			[]string{"ingressInterface", "egressInterface", "forwardingStatus"},
			[]Value{InInterface, OutInterface, ForwardingStatus}},
		{"v9 NAT and masks", NetFlowV9,
			[]string{"postNATSourceIPv4Address", "postNAPTSourceTransportPort", "sourceIPv4PrefixLength", "ipNextHopIPv4Address"}, "",
			[]string{"XLATE_SRC_ADDR_IPV6", "XLATE_SRC_PORT", "IPV6_SRC_MASK", "IPV6_NEXT_HOP"},
			[]Value{PostNATSrcIPv6, PostNATSrcPort, SrcPrefixLen, NextHopIPv6}},
		{"router element, one interface: the twin rule holds", IPFIX,
			[]string{"ingressInterface", "ipNextHopIPv4Address"}, "",
			[]string{"egressInterface", "ipNextHopIPv6Address"}, []Value{Interface, NextHopIPv6}},
		{"both interfaces alone are still twins", IPFIX, []string{"ingressInterface", "egressInterface"}, "twice", nil, nil},
		{"next hop twice", IPFIX, []string{"ipNextHopIPv4Address", "ipNextHopIPv6Address"}, "twice", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := FromNames(tt.proto, tt.names)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == nil {
				for i, tmpl := range s.Templates() {
					if !slices.Equal(tmpl.Fields, RouterSet(tt.proto).Templates()[i].Fields) {
						t.Errorf("%s differs from RouterSet", tmpl.Name)
					}
				}
				return
			}
			var names []string
			var values []Value
			for _, f := range s.Select(false, true, false).Fields {
				names = append(names, f.Name)
				values = append(values, f.Value)
			}
			if !slices.Equal(names, tt.want) || !slices.Equal(values, tt.values) {
				t.Errorf("ipv6-egress %v %v, want %v %v", names, values, tt.want, tt.values)
			}
		})
	}
}
