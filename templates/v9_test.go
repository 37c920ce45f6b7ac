package templates

import (
	"strings"
	"testing"

	"github.com/vmware/go-ipfix/pkg/entities"
	"github.com/vmware/go-ipfix/pkg/registry"
)

// TestV9Defaults checks the v9 layout against RFC 3954 section 8, written
// out here by hand: field type, length, name.
func TestV9Defaults(t *testing.T) {
	type f struct {
		id, length uint16
		name       string
	}
	// Transport templates: ports, no ICMP_TYPE; ICMP ones the reverse.
	common := func(addr [2]f, iface, icmp f) []f {
		out := []f{addr[0], addr[1]}
		if icmp == (f{}) {
			out = append(out, f{7, 2, "L4_SRC_PORT"}, f{11, 2, "L4_DST_PORT"})
		}
		out = append(out, f{4, 1, "PROTOCOL"}, f{5, 1, "SRC_TOS"}, f{6, 1, "TCP_FLAGS"},
			f{1, 8, "IN_BYTES"}, f{2, 8, "IN_PKTS"},
			f{22, 4, "FIRST_SWITCHED"}, f{21, 4, "LAST_SWITCHED"},
			f{61, 1, "DIRECTION"}, iface)
		if icmp != (f{}) {
			out = append(out, icmp)
		}
		return append(out, f{58, 2, "SRC_VLAN"})
	}
	v4 := [2]f{{8, 4, "IPV4_SRC_ADDR"}, {12, 4, "IPV4_DST_ADDR"}}
	v6 := [2]f{{27, 16, "IPV6_SRC_ADDR"}, {28, 16, "IPV6_DST_ADDR"}}
	in, out := f{10, 4, "INPUT_SNMP"}, f{14, 4, "OUTPUT_SNMP"}
	icmp := f{32, 2, "ICMP_TYPE"}
	want := [][]f{common(v4, in, f{}), common(v4, out, f{}), common(v6, in, f{}), common(v6, out, f{}),
		common(v4, in, icmp), common(v4, out, icmp), common(v6, in, icmp), common(v6, out, icmp)}
	s := DefaultSet(NetFlowV9)
	if s.Protocol != NetFlowV9 {
		t.Errorf("protocol %v", s.Protocol)
	}
	for i, tmpl := range s.Templates() {
		if tmpl.ID != 256+uint16(i) || tmpl.Name != variantNames[i] {
			t.Errorf("template %d: %d %s", i, tmpl.ID, tmpl.Name)
		}
		if len(tmpl.Fields) != len(want[i]) {
			t.Fatalf("%s: %d fields, want %d", tmpl.Name, len(tmpl.Fields), len(want[i]))
		}
		for j, w := range want[i] {
			g := tmpl.Fields[j]
			if g.ID != w.id || g.Length != w.length || g.Name != w.name {
				t.Errorf("%s field %d: got %d/%d/%s, want %+v", tmpl.Name, j, g.ID, g.Length, g.Name, w)
			}
			if g.Value == NoValue {
				t.Errorf("%s field %d: no value", tmpl.Name, j)
			}
		}
	}
	if n := s.MaxRecordLength(); n != 16+16+2+2+1+1+1+8+8+4+4+1+4+2 {
		t.Errorf("MaxRecordLength %d", n)
	}
	if s.Select(true, false, false).ID != IPv4Ingress || s.Select(false, true, false).ID != IPv6Egress {
		t.Error("Select picks the wrong variant")
	}
}

func TestFromNames(t *testing.T) {
	tests := []struct {
		name    string
		proto   ExportProtocol
		names   []string
		wantErr string
		// want is the field names of the IPv6-egress variant, then
		// after a "|" those of the ICMPv6-egress one.
		want []string
	}{
		{"ipfix defaults by name", IPFIX, defaultIPFIXNames, "", []string{
			"sourceIPv6Address", "destinationIPv6Address", "sourceTransportPort", "destinationTransportPort",
			"protocolIdentifier", "ipClassOfService", "tcpControlBits", "octetDeltaCount", "packetDeltaCount",
			"flowStartMilliseconds", "flowEndMilliseconds", "flowDirection", "egressInterface",
			"flowEndReason", "vlanId", "|",
			"sourceIPv6Address", "destinationIPv6Address",
			"protocolIdentifier", "ipClassOfService", "tcpControlBits", "octetDeltaCount", "packetDeltaCount",
			"flowStartMilliseconds", "flowEndMilliseconds", "flowDirection", "egressInterface",
			"flowEndReason", "icmpTypeCodeIPv6", "vlanId"}},
		{"ports without icmp", IPFIX, []string{"octetDeltaCount", "sourceTransportPort", "destinationTransportPort", "protocolIdentifier"}, "",
			[]string{"octetDeltaCount", "sourceTransportPort", "destinationTransportPort", "protocolIdentifier", "|",
				"octetDeltaCount", "icmpTypeCodeIPv6", "protocolIdentifier"}},
		{"icmp alone", IPFIX, []string{"icmpTypeCodeIPv4"}, "template ipv4-ingress: no elements left", nil},
		{"written as the ipv6 egress variant", IPFIX, []string{"destinationIPv6Address", "egressInterface", "octetDeltaCount"}, "",
			[]string{"destinationIPv6Address", "egressInterface", "octetDeltaCount", "|", "destinationIPv6Address", "egressInterface", "octetDeltaCount"}},
		{"family free", IPFIX, []string{"packetDeltaCount", "ipVersion"}, "", []string{"packetDeltaCount", "ipVersion", "|", "packetDeltaCount", "ipVersion"}},
		{"v9", NetFlowV9, []string{"sourceIPv4Address", "flowStartMilliseconds", "tcpControlBits", "icmpTypeCodeIPv4"}, "",
			[]string{"IPV6_SRC_ADDR", "FIRST_SWITCHED", "TCP_FLAGS", "|", "IPV6_SRC_ADDR", "FIRST_SWITCHED", "TCP_FLAGS", "ICMP_TYPE"}},
		{"unknown name", IPFIX, []string{"octetDeltaCount", "noSuchElement"}, `unknown element "noSuchElement"`, nil},
		{"not fillable", IPFIX, []string{"mplsTopLabelTTL"}, "cannot be filled from a flow", nil},
		{"not in v9", NetFlowV9, []string{"octetDeltaCount", "flowEndReason"}, "no NetFlow v9 field type", nil},
		{"dropped counts", IPFIX, []string{"forwardingStatus", "droppedPacketDeltaCount", "droppedOctetDeltaCount"}, "",
			[]string{"forwardingStatus", "droppedPacketDeltaCount", "droppedOctetDeltaCount", "|",
				"forwardingStatus", "droppedPacketDeltaCount", "droppedOctetDeltaCount"}},
		{"dropped packets not in v9", NetFlowV9, []string{"packetDeltaCount", "droppedPacketDeltaCount"},
			"element droppedPacketDeltaCount (133) has no NetFlow v9 field type", nil},
		{"dropped octets not in v9", NetFlowV9, []string{"droppedOctetDeltaCount"},
			"element droppedOctetDeltaCount (132) has no NetFlow v9 field type", nil},
		{"twice", IPFIX, []string{"octetDeltaCount", "octetDeltaCount"}, "twice", nil},
		{"twins twice", IPFIX, []string{"ingressInterface", "egressInterface"}, "twice", nil},
		{"empty", IPFIX, nil, "no elements", nil},
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
			var names []string
			for _, f := range s.Select(false, true, false).Fields {
				names = append(names, f.Name)
			}
			names = append(names, "|")
			for _, f := range s.Select(false, true, true).Fields {
				names = append(names, f.Name)
			}
			if strings.Join(names, ",") != strings.Join(tt.want, ",") {
				t.Errorf("ipv6-egress fields %v, want %v", names, tt.want)
			}
		})
	}
}

// TestElementsRegistry checks every row of the element table and the IPFIX
// options templates against the IANA registry.
func TestElementsRegistry(t *testing.T) {
	registry.LoadRegistry()
	check := func(where string, f Field) {
		ie, err := registry.GetInfoElementFromID(f.ID, registry.IANAEnterpriseID)
		if err != nil {
			t.Errorf("%s: %v", where, err)
			return
		}
		// A string may be sent at a fixed length (RFC 7011 section 7
		// makes variable length an option, not a rule).
		fixedString := ie.DataType == entities.String && ie.Len == VariableLength
		if ie.Name != f.Name || (ie.Len != f.Length && !fixedString) {
			t.Errorf("%s: element %d is %s/%d in the registry, %s/%d here", where, f.ID, ie.Name, ie.Len, f.Name, f.Length)
		}
	}
	for _, e := range elements {
		check("elements", e.ipfix)
		// v9 carries the same value, except times relative to sysUptime.
		sameValue := e.v9.Value == e.ipfix.Value ||
			(e.ipfix.Value == StartMillis && e.v9.Value == StartUptime) ||
			(e.ipfix.Value == EndMillis && e.v9.Value == EndUptime)
		if e.v9.ID != 0 && (e.v9.ID >= 128 || !sameValue) {
			t.Errorf("%s: v9 field %+v", e.ipfix.Name, e.v9)
		}
		if e.twin != "" && byName[e.twin] == nil {
			t.Errorf("%s: no twin %s", e.ipfix.Name, e.twin)
		}
	}
	for _, o := range append(Options(IPFIX, SamplingRandom), Options(IPFIX, SamplingCount)...) {
		for _, f := range append(append([]Field(nil), o.Scope...), o.Fields...) {
			check("options "+o.Name, f)
		}
	}
	for _, o := range append(Options(NetFlowV9, SamplingRandom), Options(NetFlowV9, SamplingCount)...) {
		if o.ID == OptionsInterfaces && (len(o.Fields) == 0 || o.Fields[0].ID != IEIngressInterface) {
			t.Errorf("v9 interface table: INPUT_SNMP must be its first option field (nfdump keys names by it)")
		}
		for _, f := range o.Fields {
			if f.ID >= 128 {
				t.Errorf("v9 options %s: field %d outside v9", o.Name, f.ID)
			}
		}
	}
}
