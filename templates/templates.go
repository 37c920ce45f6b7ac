package templates

import (
	"fmt"
	"sync"

	"github.com/vmware/go-ipfix/pkg/registry"
)

// Field is one field specifier of a template record (RFC 7011 section 3.2,
// RFC 3954 section 5.2): an information element or v9 field type (the
// enterprise bit is never set), the number of bytes its value takes in a
// data record, and the value that fills it.
type Field struct {
	ID     uint16
	Length uint16
	Name   string
	// Value says what the encoder writes: the encoder picks its code for
	// a field once per template from (Value, Length), not per record.
	Value Value
}

// VariableLength is the length of a variable-length field (RFC 7011
// section 7). The default templates do not use it (see InterfaceNameLen);
// the encoder supports it in IPFIX options.
const VariableLength uint16 = 65535

// Value names the datum that fills a field. Flow values come from an
// exporter.Flow; Opt values from the exporter's options providers.
type Value uint8

// Values a field can carry.
const (
	NoValue Value = iota
	SrcIPv4
	DstIPv4
	SrcIPv6
	DstIPv6
	SrcPort
	DstPort
	Protocol
	TCPFlags
	Octets
	Packets
	StartMillis // flow start, ms since the Unix epoch
	EndMillis
	StartUptime // flow start, ms since the exporter's sysUptime 0
	EndUptime
	Direction
	Interface
	EndReason
	ICMPv4TypeCode // type<<8|code for ICMP flows, else 0
	ICMPv6TypeCode // type<<8|code for ICMPv6 flows, else 0
	VLAN
	IPVersion
	TOS // the key's ToS byte (IPv4 ToS, IPv6 Traffic Class)

	OptInterfaceIndex
	OptInterfaceName
	OptInterfaceDescription
	OptDomain              // observation domain (IPFIX) or source id (v9)
	OptSelectorAlgorithm   // IANA selectorAlgorithm of the sampling
	OptSamplingProbability // float64 1/N
	OptSamplingInterval    // N
	OptSamplingAlgorithm   // v9 FLOW_SAMPLER_MODE (as SAMPLING_ALGORITHM): 1 deterministic, 2 random
	OptExportedMessages
	OptExportedRecords
	OptIgnoredPackets
	OptNotSentFlows
	OptSystemInitMillis

	// Router mode (exporter.Flow's router fields; see router.go).
	NextHopIPv4      // ipNextHopIPv4Address, 0.0.0.0 if unknown
	NextHopIPv6      // ipNextHopIPv6Address, :: if unknown
	SrcPrefixLen     // source*PrefixLength
	DstPrefixLen     // destination*PrefixLength
	ForwardingStatus // forwardingStatus
	PostNATSrcIPv4   // postNATSourceIPv4Address
	PostNATDstIPv4   // postNATDestinationIPv4Address
	PostNATSrcIPv6   // postNATSourceIPv6Address
	PostNATDstIPv6   // postNATDestinationIPv6Address
	PostNATSrcPort   // postNAPTSourceTransportPort
	PostNATDstPort   // postNAPTDestinationTransportPort
	// InInterface and OutInterface fill ingressInterface and
	// egressInterface in a layout that has both (a router layout):
	// InInterface is the flow's interface for an ingress flow, else 0;
	// OutInterface is the FIB's egress interface for an ingress flow,
	// the flow's interface for an egress one.
	InInterface
	OutInterface
	// IfName is the name of the flow's interface (interfaceName, 82;
	// v9 IF_NAME), fixed-length and NUL-padded like the options table's:
	// see InterfaceNameLen.
	IfName
	// DroppedOctets and DroppedPackets are the record's counts if its
	// forwardingStatus says dropped (128 to 191), else 0
	// (droppedOctetDeltaCount, droppedPacketDeltaCount; IPFIX only).
	DroppedOctets
	DroppedPackets
)

// ExportProtocol is the export protocol a template is laid out for.
type ExportProtocol uint8

const (
	IPFIX     ExportProtocol = iota // RFC 7011
	NetFlowV9                       // RFC 3954
)

func (p ExportProtocol) String() string {
	if p == NetFlowV9 {
		return "netflow-v9"
	}
	return "ipfix"
}

// Template is a template record: its ID (256 and above, RFC 7011 section
// 3.4.1) names the data sets that use it.
type Template struct {
	ID     uint16
	Name   string
	Fields []Field
}

// RecordLength returns the length in bytes of one data record of t. Every
// data field has a fixed length, so all records of a template have this
// length.
func (t *Template) RecordLength() int {
	return fieldsLength(t.Fields)
}

func fieldsLength(fs []Field) int {
	n := 0
	for _, f := range fs {
		n += int(f.Length)
	}
	return n
}

// SpecLength returns the length in bytes of t's template record on the
// wire: a 4-byte header (template ID, field count) and 4 bytes per field
// specifier. It is the same in IPFIX and v9.
func (t *Template) SpecLength() int {
	return 4 + 4*len(t.Fields)
}

// OptionsTemplate is an options template record: Scope fields say what the
// record describes (an interface, the exporter), Fields describe it.
type OptionsTemplate struct {
	ID     uint16
	Name   string
	Scope  []Field
	Fields []Field
}

// SpecLength returns the length of the options template record on the
// wire: 6 header bytes (ID, field count or scope length, scope count or
// option length) and 4 per field specifier, in IPFIX and in v9.
func (o *OptionsTemplate) SpecLength() int {
	return 6 + 4*(len(o.Scope)+len(o.Fields))
}

// Options returns the options templates of protocol p for sampling
// algorithm s: interface table, sampling and exporter reliability. Shared;
// do not modify.
func Options(p ExportProtocol, s Sampling) []OptionsTemplate {
	return optionsSets[p][s]
}

// IDs of the templates, the same in every Set: the variant of a set is
// its ID less 256, whose bit 0 is egress, bit 1 IPv6 and bit 2 ICMP.
const (
	IPv4Ingress   uint16 = 256
	IPv4Egress    uint16 = 257
	IPv6Ingress   uint16 = 258
	IPv6Egress    uint16 = 259
	ICMPv4Ingress uint16 = 260
	ICMPv4Egress  uint16 = 261
	ICMPv6Ingress uint16 = 262
	ICMPv6Egress  uint16 = 263
)

// NumTemplates is the number of templates of a Set.
const NumTemplates = 8

// Set is one record layout as the templates a flow can need: IPv4 or IPv6
// addresses and ingress or egress interface are distinct elements, so each
// combination is its own template; and ICMP flows (ICMP over IPv4, ICMPv6
// over IPv6) have their own, with the ICMP type and code and without
// ports, while the others have ports and no ICMP type, as routers export
// them: records are smaller, and a collector never has to guess which of
// the two a port field holds (nfdump, given both, showed an SCTP flow's
// destination port as 0).
type Set struct {
	Protocol  ExportProtocol
	templates [NumTemplates]Template
	maxRecord int
}

// Variant returns the index of the template for a flow of the given
// address family, direction and kind (ICMP or not) in Templates(): its ID
// less 256.
func Variant(ipv4, egress, icmp bool) int {
	i := 0
	if egress {
		i |= 1
	}
	if !ipv4 {
		i |= 2
	}
	if icmp {
		i |= 4
	}
	return i
}

// Select returns the template for a flow of the given address family,
// direction and kind. It does not allocate. (The exporter compiles every
// template of a Set once and indexes them by Variant.)
func (s *Set) Select(ipv4, egress, icmp bool) *Template {
	return &s.templates[Variant(ipv4, egress, icmp)]
}

// Templates returns the templates, ordered by ID. Shared; do not modify.
func (s *Set) Templates() []Template { return s.templates[:] }

// MaxRecordLength returns the length of the longest data record of the
// set: the least room a message must have for data.
func (s *Set) MaxRecordLength() int { return s.maxRecord }

var variantNames = [NumTemplates]string{
	"ipv4-ingress", "ipv4-egress", "ipv6-ingress", "ipv6-egress",
	"icmp4-ingress", "icmp4-egress", "icmp6-ingress", "icmp6-egress",
}

func isPort(e *element) bool {
	switch e.ipfix.Value {
	case SrcPort, DstPort, PostNATSrcPort, PostNATDstPort:
		return true
	}
	return false
}

func isICMP(e *element) bool {
	return e.ipfix.Value == ICMPv4TypeCode || e.ipfix.Value == ICMPv6TypeCode
}

// build makes a Set of elems, given as any one variant: each variant swaps
// in the twin of an element that belongs to another family or direction.
// The transport variants leave out the ICMP type and code; the ICMP ones
// leave out the ports and carry the ICMP type and code of their family,
// where the layout has it or else in place of its first port.
func build(p ExportProtocol, elems []*element) (*Set, error) {
	elems = routerInterfaces(elems)
	s := &Set{Protocol: p}
	hasICMP := false
	for _, e := range elems {
		hasICMP = hasICMP || isICMP(e)
	}
	for v := range s.templates {
		family, dir, icmp := uint8(4), byte('i'), v&4 != 0
		if v&2 != 0 {
			family = 6
		}
		if v&1 != 0 {
			dir = 'e'
		}
		t := Template{ID: 256 + uint16(v), Name: variantNames[v], Fields: make([]Field, 0, len(elems)+1)}
		seen := map[uint16]bool{}
		placed := hasICMP
		for _, e := range elems {
			switch {
			case icmp && isPort(e) && placed:
				continue
			case icmp && isPort(e):
				// No ICMP element in the layout: the first port
				// makes way for it.
				placed = true
				e = byName["icmpTypeCodeIPv4"]
			case !icmp && isICMP(e):
				continue
			}
			if (e.family != 0 && e.family != family) || (e.dir != 0 && e.dir != dir) {
				e = byName[e.twin]
			}
			f := e.ipfix
			if p == NetFlowV9 {
				f = e.v9
				if f.ID == 0 {
					return nil, fmt.Errorf("template %s: %s has no NetFlow v9 field type", t.Name, e.ipfix.Name)
				}
			}
			if seen[f.ID] {
				return nil, fmt.Errorf("template %s: %s twice", t.Name, f.Name)
			}
			seen[f.ID] = true
			t.Fields = append(t.Fields, f)
		}
		if len(t.Fields) == 0 {
			return nil, fmt.Errorf("template %s: no elements left", t.Name)
		}
		s.templates[v] = t
		s.maxRecord = max(s.maxRecord, t.RecordLength())
	}
	return s, nil
}

var (
	byName = map[string]*element{}
	byID   = map[uint16]*element{}
)

func mustBuild(p ExportProtocol, names []string) *Set {
	elems := make([]*element, len(names))
	for i, n := range names {
		elems[i] = byName[n]
	}
	s, err := build(p, elems)
	if err != nil {
		panic(err)
	}
	return s
}

var defaultSets [2]*Set

func init() {
	for i := range elements {
		e := &elements[i]
		byName[e.ipfix.Name] = e
		byID[e.ipfix.ID] = e
	}
	defaultSets[IPFIX] = mustBuild(IPFIX, defaultIPFIXNames)
	defaultSets[NetFlowV9] = mustBuild(NetFlowV9, defaultV9Names)
}

// DefaultSet returns the default layout of protocol p: 15 fields in IPFIX
// (14 for ICMP flows: the ICMP type and code instead of the two ports),
// the same less flowEndReason in v9. Shared; do not modify.
func DefaultSet(p ExportProtocol) *Set {
	return defaultSets[p]
}

var loadRegistry sync.Once

// FromNames builds a layout for protocol p from IANA element names, in
// record order, resolved through go-ipfix's copy of the IANA registry.
// Names are written for one variant; the others get the twin element of
// their family or direction (sourceIPv4Address becomes sourceIPv6Address
// in the IPv6 templates, ingressInterface becomes egressInterface in the
// egress ones). It fails on a name the registry does not know, on one the
// encoder cannot fill from a flow, and, for v9, on one v9 cannot carry.
func FromNames(p ExportProtocol, names []string) (*Set, error) {
	if len(names) == 0 {
		return nil, fmt.Errorf("template from names: no elements")
	}
	loadRegistry.Do(registry.LoadRegistry)
	elems := make([]*element, len(names))
	for i, n := range names {
		ie, err := registry.GetInfoElement(n, registry.IANAEnterpriseID)
		if err != nil {
			return nil, fmt.Errorf("template from names: unknown element %q: %w", n, err)
		}
		e, ok := byID[ie.ElementId]
		if !ok {
			return nil, fmt.Errorf("template from names: element %s (%d) cannot be filled from a flow", n, ie.ElementId)
		}
		if p == NetFlowV9 && e.v9.ID == 0 {
			return nil, fmt.Errorf("template from names: element %s (%d) has no NetFlow v9 field type", n, ie.ElementId)
		}
		elems[i] = e
	}
	s, err := build(p, elems)
	if err != nil {
		return nil, fmt.Errorf("template from names: %w", err)
	}
	return s, nil
}

// Select returns the default IPFIX template for a flow of the given address
// family, direction and kind: DefaultSet(IPFIX).Select. The result is
// shared and must not be modified. It does not allocate.
func Select(ipv4, egress, icmp bool) *Template {
	return defaultSets[IPFIX].Select(ipv4, egress, icmp)
}

// Defaults returns the default IPFIX templates, ordered by ID. The slice
// and the templates are shared and must not be modified.
func Defaults() []Template {
	return defaultSets[IPFIX].Templates()
}

// MaxRecordLength returns the length of the longest data record of the
// default IPFIX templates.
func MaxRecordLength() int {
	return defaultSets[IPFIX].MaxRecordLength()
}
