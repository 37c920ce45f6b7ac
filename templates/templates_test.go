package templates

import (
	"testing"

	"github.com/vmware/go-ipfix/pkg/registry"
)

// field is a field specifier without its Value, which the spec leaves to
// the tables.
type field struct {
	ID     uint16
	Length uint16
	Name   string
}

// spec is the layout the brief asks for, written out independently of the
// tables in elements.go: the tables must match it field for field.
// Transport templates have the ports and no ICMP type; ICMP templates the
// ICMP type and no ports.
type spec struct {
	id        uint16
	name      string
	addr      [2]field
	iface     field
	icmp      field // zero in a transport template
	recordLen int
}

func (s spec) fields() []field {
	out := []field{s.addr[0], s.addr[1]}
	if s.icmp == (field{}) {
		out = append(out, field{7, 2, "sourceTransportPort"}, field{11, 2, "destinationTransportPort"})
	}
	out = append(out,
		field{4, 1, "protocolIdentifier"}, field{5, 1, "ipClassOfService"}, field{6, 2, "tcpControlBits"},
		field{1, 8, "octetDeltaCount"}, field{2, 8, "packetDeltaCount"},
		field{152, 8, "flowStartMilliseconds"}, field{153, 8, "flowEndMilliseconds"},
		field{61, 1, "flowDirection"}, s.iface, field{136, 1, "flowEndReason"})
	if s.icmp != (field{}) {
		out = append(out, s.icmp)
	}
	return append(out, field{58, 2, "vlanId"})
}

var (
	v4     = [2]field{{8, 4, "sourceIPv4Address"}, {12, 4, "destinationIPv4Address"}}
	v6     = [2]field{{27, 16, "sourceIPv6Address"}, {28, 16, "destinationIPv6Address"}}
	in     = field{10, 4, "ingressInterface"}
	out    = field{14, 4, "egressInterface"}
	icmp4  = field{32, 2, "icmpTypeCodeIPv4"}
	icmp6  = field{139, 2, "icmpTypeCodeIPv6"}
	wanted = []spec{
		{256, "ipv4-ingress", v4, in, field{}, 56},
		{257, "ipv4-egress", v4, out, field{}, 56},
		{258, "ipv6-ingress", v6, in, field{}, 80},
		{259, "ipv6-egress", v6, out, field{}, 80},
		{260, "icmp4-ingress", v4, in, icmp4, 54},
		{261, "icmp4-egress", v4, out, icmp4, 54},
		{262, "icmp6-ingress", v6, in, icmp6, 78},
		{263, "icmp6-egress", v6, out, icmp6, 78},
	}
)

func TestDefaults(t *testing.T) {
	d := Defaults()
	if len(d) != len(wanted) {
		t.Fatalf("got %d templates, want %d", len(d), len(wanted))
	}
	for i, w := range wanted {
		got := d[i]
		if got.ID != w.id || got.Name != w.name {
			t.Errorf("template %d: got %d %q, want %d %q", i, got.ID, got.Name, w.id, w.name)
		}
		wf := w.fields()
		if len(got.Fields) != len(wf) {
			t.Fatalf("%s: got %d fields, want %d", w.name, len(got.Fields), len(wf))
		}
		for j := range wf {
			g := got.Fields[j]
			if g.ID != wf[j].ID || g.Length != wf[j].Length || g.Name != wf[j].Name {
				t.Errorf("%s field %d: got %+v, want %+v", w.name, j, got.Fields[j], wf[j])
			}
		}
		if n := got.RecordLength(); n != w.recordLen {
			t.Errorf("%s: RecordLength %d, want %d", w.name, n, w.recordLen)
		}
		if n := got.SpecLength(); n != 4+4*len(wf) {
			t.Errorf("%s: SpecLength %d, want %d", w.name, n, 4+4*len(wf))
		}
	}
	if n := MaxRecordLength(); n != 80 {
		t.Errorf("MaxRecordLength %d, want 80", n)
	}
}

func TestSelect(t *testing.T) {
	tests := []struct {
		ipv4, egress, icmp bool
		want               uint16
	}{
		{true, false, false, IPv4Ingress},
		{true, true, false, IPv4Egress},
		{false, false, false, IPv6Ingress},
		{false, true, false, IPv6Egress},
		{true, false, true, ICMPv4Ingress},
		{true, true, true, ICMPv4Egress},
		{false, false, true, ICMPv6Ingress},
		{false, true, true, ICMPv6Egress},
	}
	for _, tt := range tests {
		if got := Select(tt.ipv4, tt.egress, tt.icmp); got.ID != tt.want {
			t.Errorf("Select(ipv4=%v, egress=%v, icmp=%v) = %d, want %d", tt.ipv4, tt.egress, tt.icmp, got.ID, tt.want)
		}
	}
	if a := testing.AllocsPerRun(100, func() { _ = Select(false, true, true) }); a != 0 {
		t.Errorf("Select allocates %v times", a)
	}
}

func TestRecordLength(t *testing.T) {
	tests := []struct {
		name string
		t    Template
		want int
	}{
		{"empty", Template{}, 0},
		{"one", Template{Fields: []Field{{ID: 1, Length: 8}}}, 8},
		{"mixed", Template{Fields: []Field{{ID: 8, Length: 4}, {ID: 4, Length: 1}, {ID: 27, Length: 16}}}, 21},
	}
	for _, tt := range tests {
		if got := tt.t.RecordLength(); got != tt.want {
			t.Errorf("%s: RecordLength %d, want %d", tt.name, got, tt.want)
		}
	}
}

// TestIANARegistry checks every field against go-ipfix's copy of the IANA
// registry: a typo in an ID, a name or a length shows up here.
func TestIANARegistry(t *testing.T) {
	registry.LoadRegistry()
	for _, tmpl := range Defaults() {
		ids := map[uint16]bool{}
		for _, f := range tmpl.Fields {
			if ids[f.ID] {
				t.Errorf("%s: element %d twice", tmpl.Name, f.ID)
			}
			ids[f.ID] = true
			ie, err := registry.GetInfoElementFromID(f.ID, registry.IANAEnterpriseID)
			if err != nil {
				t.Errorf("%s: %v", tmpl.Name, err)
				continue
			}
			if ie.Name != f.Name || ie.Len != f.Length {
				t.Errorf("%s: element %d is %s/%d in the registry, %s/%d here", tmpl.Name, f.ID, ie.Name, ie.Len, f.Name, f.Length)
			}
		}
	}
}
