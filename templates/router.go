package templates

import "sync"

// Router mode: hostflow counts each packet once, at ingress, and package
// router adds at export what the host did with the flow: the egress
// interface, next hop and forwarding status from the kernel FIB, the
// prefix lengths of the source and destination routes, and the addresses
// and ports after NAT from conntrack.
//
// A router record carries both interfaces. In the default layouts
// ingressInterface and egressInterface are twins (the one interface of the
// flow, by direction); a layout that names both and at least one router
// element (next hop, prefix length, forwarding status, post-NAT) is a
// router layout instead: every variant carries both, ingressInterface is
// the interface the flow came in on and egressInterface the one the FIB
// sends it out of (for an egress flow, ingressInterface is 0 and
// egressInterface the flow's). Without a router element, naming both is
// still an error, as before.

// IANA elements of router mode.
const (
	IESourceIPv4PrefixLength           uint16 = 9   // v9 SRC_MASK
	IEDestinationIPv4PrefixLength      uint16 = 13  // v9 DST_MASK
	IEIPNextHopIPv4Address             uint16 = 15  // v9 IPV4_NEXT_HOP
	IESourceIPv6PrefixLength           uint16 = 29  // v9 IPV6_SRC_MASK
	IEDestinationIPv6PrefixLength      uint16 = 30  // v9 IPV6_DST_MASK
	IEIPNextHopIPv6Address             uint16 = 62  // v9 IPV6_NEXT_HOP
	IEForwardingStatus                 uint16 = 89  // v9 FORWARDING_STATUS
	IEDroppedOctetDeltaCount           uint16 = 132 // no v9 type
	IEDroppedPacketDeltaCount          uint16 = 133 // no v9 type
	IEPostNATSourceIPv4Address         uint16 = 225
	IEPostNATDestinationIPv4Address    uint16 = 226
	IEPostNAPTSourceTransportPort      uint16 = 227
	IEPostNAPTDestinationTransportPort uint16 = 228
	IEPostNATSourceIPv6Address         uint16 = 281
	IEPostNATDestinationIPv6Address    uint16 = 282
)

// routerElements are the elements only router mode fills, zero when
// unknown. They are kept apart from the table of elements because two
// break its rules on purpose: forwardingStatus is one byte (go-ipfix's
// registry copy still has RFC 7270's unsigned32; IANA has since made it
// unsigned8, and one byte is in any case its reduced-size encoding, RFC
// 7011 section 6.2), and the NAT elements have v9 types above 127, the
// ones Cisco NSEL defined (XLATE_*, the IPFIX IDs), which nfdump decodes
// in v9. The dropped counts have no v9 type at all. Once registered (init) they are used like any other element.
var routerElements = []element{
	{ipfix: Field{IEIPNextHopIPv4Address, 4, "ipNextHopIPv4Address", NextHopIPv4}, v9: Field{15, 4, "IPV4_NEXT_HOP", NextHopIPv4}, family: 4, twin: "ipNextHopIPv6Address"},
	{ipfix: Field{IEIPNextHopIPv6Address, 16, "ipNextHopIPv6Address", NextHopIPv6}, v9: Field{62, 16, "IPV6_NEXT_HOP", NextHopIPv6}, family: 6, twin: "ipNextHopIPv4Address"},
	{ipfix: Field{IESourceIPv4PrefixLength, 1, "sourceIPv4PrefixLength", SrcPrefixLen}, v9: Field{9, 1, "SRC_MASK", SrcPrefixLen}, family: 4, twin: "sourceIPv6PrefixLength"},
	{ipfix: Field{IEDestinationIPv4PrefixLength, 1, "destinationIPv4PrefixLength", DstPrefixLen}, v9: Field{13, 1, "DST_MASK", DstPrefixLen}, family: 4, twin: "destinationIPv6PrefixLength"},
	{ipfix: Field{IESourceIPv6PrefixLength, 1, "sourceIPv6PrefixLength", SrcPrefixLen}, v9: Field{29, 1, "IPV6_SRC_MASK", SrcPrefixLen}, family: 6, twin: "sourceIPv4PrefixLength"},
	{ipfix: Field{IEDestinationIPv6PrefixLength, 1, "destinationIPv6PrefixLength", DstPrefixLen}, v9: Field{30, 1, "IPV6_DST_MASK", DstPrefixLen}, family: 6, twin: "destinationIPv4PrefixLength"},
	// forwardingStatus is unsigned8 in today's IANA registry (RFC 7270
	// had unsigned32; one byte is also its valid reduced-size encoding)
	// and FORWARDING_STATUS is one byte in v9.
	{ipfix: Field{IEForwardingStatus, 1, "forwardingStatus", ForwardingStatus}, v9: Field{89, 1, "FORWARDING_STATUS", ForwardingStatus}},
	// The counts of a record of dropped packets (forwardingStatus 128 to
	// 191), 0 on the others, for collectors that add up drops by these
	// elements rather than by forwardingStatus. RFC 3954 has no such
	// field types and 132 and 135 are outside the v9-compatible range
	// (RFC 7012 section 4): IPFIX only, a v9 layout naming them fails.
	{ipfix: Field{IEDroppedOctetDeltaCount, 8, "droppedOctetDeltaCount", DroppedOctets}},
	{ipfix: Field{IEDroppedPacketDeltaCount, 8, "droppedPacketDeltaCount", DroppedPackets}},
	// v9 has no NAT types of its own: Cisco NSEL uses the IPFIX IDs
	// (XLATE_*), which nfdump reads in v9 as in IPFIX.
	{ipfix: Field{IEPostNATSourceIPv4Address, 4, "postNATSourceIPv4Address", PostNATSrcIPv4}, v9: Field{225, 4, "XLATE_SRC_ADDR_IPV4", PostNATSrcIPv4}, family: 4, twin: "postNATSourceIPv6Address"},
	{ipfix: Field{IEPostNATDestinationIPv4Address, 4, "postNATDestinationIPv4Address", PostNATDstIPv4}, v9: Field{226, 4, "XLATE_DST_ADDR_IPV4", PostNATDstIPv4}, family: 4, twin: "postNATDestinationIPv6Address"},
	{ipfix: Field{IEPostNAPTSourceTransportPort, 2, "postNAPTSourceTransportPort", PostNATSrcPort}, v9: Field{227, 2, "XLATE_SRC_PORT", PostNATSrcPort}},
	{ipfix: Field{IEPostNAPTDestinationTransportPort, 2, "postNAPTDestinationTransportPort", PostNATDstPort}, v9: Field{228, 2, "XLATE_DST_PORT", PostNATDstPort}},
	{ipfix: Field{IEPostNATSourceIPv6Address, 16, "postNATSourceIPv6Address", PostNATSrcIPv6}, v9: Field{281, 16, "XLATE_SRC_ADDR_IPV6", PostNATSrcIPv6}, family: 6, twin: "postNATSourceIPv4Address"},
	{ipfix: Field{IEPostNATDestinationIPv6Address, 16, "postNATDestinationIPv6Address", PostNATDstIPv6}, v9: Field{282, 16, "XLATE_DST_ADDR_IPV6", PostNATDstIPv6}, family: 6, twin: "postNATDestinationIPv4Address"},
}

func init() {
	for i := range routerElements {
		e := &routerElements[i]
		e.router = true
		byName[e.ipfix.Name] = e
		byID[e.ipfix.ID] = e
	}
}

// routerInterfaceElems are the two interface elements of a router layout:
// direction-free, so build keeps both in every variant.
var routerInterfaceElems = [2]element{
	{ipfix: Field{IEIngressInterface, 4, "ingressInterface", InInterface}, v9: Field{10, 4, "INPUT_SNMP", InInterface}},
	{ipfix: Field{IEEgressInterface, 4, "egressInterface", OutInterface}, v9: Field{14, 4, "OUTPUT_SNMP", OutInterface}},
}

// routerInterfaces returns elems with ingressInterface and egressInterface
// replaced by the router pair if elems is a router layout (both interface
// elements and a router element), else elems unchanged.
func routerInterfaces(elems []*element) []*element {
	in, out, router := -1, -1, false
	for i, e := range elems {
		switch {
		case e.ipfix.ID == IEIngressInterface && e.ipfix.Value == Interface:
			in = i
		case e.ipfix.ID == IEEgressInterface && e.ipfix.Value == Interface:
			out = i
		case e.router:
			router = true
		}
	}
	if in < 0 || out < 0 || !router {
		return elems
	}
	r := make([]*element, len(elems))
	copy(r, elems)
	r[in], r[out] = &routerInterfaceElems[0], &routerInterfaceElems[1]
	return r
}

// The router layouts, written as the IPv4-ingress variant: the default
// layout of the protocol, then egressInterface and the router elements.
// IPv4 records are 80 bytes in IPFIX, IPv6 ones 140.
var (
	routerExtraNames = []string{
		"egressInterface",
		"ipNextHopIPv4Address",
		"sourceIPv4PrefixLength", "destinationIPv4PrefixLength",
		"forwardingStatus",
		"postNATSourceIPv4Address", "postNATDestinationIPv4Address",
		"postNAPTSourceTransportPort", "postNAPTDestinationTransportPort",
	}
	routerIPFIXNames = append(append([]string{}, defaultIPFIXNames...), routerExtraNames...)
	routerV9Names    = append(append([]string{}, defaultV9Names...), routerExtraNames...)
)

var (
	routerOnce sync.Once
	routerSets [2]*Set
)

// RouterSet returns the router-mode layout of protocol p: the default
// layout plus egressInterface, ipNextHop*Address, source/destination
// prefix lengths, forwardingStatus and the post-NAT addresses and ports.
// Template IDs are the default ones (256-263): an exporter sends one
// layout. Shared; do not modify.
func RouterSet(p ExportProtocol) *Set {
	routerOnce.Do(func() {
		routerSets[IPFIX] = mustBuild(IPFIX, routerIPFIXNames)
		routerSets[NetFlowV9] = mustBuild(NetFlowV9, routerV9Names)
	})
	return routerSets[p]
}

// RouterNames returns the element names of the router layout of p, as
// the IPv4-ingress variant, for FromNames: a user layout can start from
// it.
func RouterNames(p ExportProtocol) []string {
	if p == NetFlowV9 {
		return append([]string{}, routerV9Names...)
	}
	return append([]string{}, routerIPFIXNames...)
}
