package templates

// IANA information element identifiers used by the default templates
// (https://www.iana.org/assignments/ipfix). They are constants so the
// encoder can switch on them.
const (
	IEOctetDeltaCount          uint16 = 1
	IEPacketDeltaCount         uint16 = 2
	IEProtocolIdentifier       uint16 = 4
	IETCPControlBits           uint16 = 6
	IESourceTransportPort      uint16 = 7
	IESourceIPv4Address        uint16 = 8
	IEIngressInterface         uint16 = 10
	IEDestinationTransportPort uint16 = 11
	IEDestinationIPv4Address   uint16 = 12
	IEEgressInterface          uint16 = 14
	IESourceIPv6Address        uint16 = 27
	IEDestinationIPv6Address   uint16 = 28
	IEICMPTypeCodeIPv4         uint16 = 32
	IEVLANID                   uint16 = 58
	IEFlowDirection            uint16 = 61
	IEFlowEndReason            uint16 = 136
	IEICMPTypeCodeIPv6         uint16 = 139
	IEFlowStartMilliseconds    uint16 = 152
	IEFlowEndMilliseconds      uint16 = 153
)

// The field specifiers, each written once and shared by the layouts below.
// Lengths are the IANA full-length encodings: reduced-size encoding (RFC 7011
// section 6.2) is not used because the kernel counts in 64 bits and a counter
// that outgrows a reduced size could not be sent.
var (
	sourceIPv4Address        = Field{IESourceIPv4Address, 4, "sourceIPv4Address"}
	destinationIPv4Address   = Field{IEDestinationIPv4Address, 4, "destinationIPv4Address"}
	sourceIPv6Address        = Field{IESourceIPv6Address, 16, "sourceIPv6Address"}
	destinationIPv6Address   = Field{IEDestinationIPv6Address, 16, "destinationIPv6Address"}
	sourceTransportPort      = Field{IESourceTransportPort, 2, "sourceTransportPort"}
	destinationTransportPort = Field{IEDestinationTransportPort, 2, "destinationTransportPort"}
	protocolIdentifier       = Field{IEProtocolIdentifier, 1, "protocolIdentifier"}
	tcpControlBits           = Field{IETCPControlBits, 2, "tcpControlBits"}
	octetDeltaCount          = Field{IEOctetDeltaCount, 8, "octetDeltaCount"}
	packetDeltaCount         = Field{IEPacketDeltaCount, 8, "packetDeltaCount"}
	flowStartMilliseconds    = Field{IEFlowStartMilliseconds, 8, "flowStartMilliseconds"}
	flowEndMilliseconds      = Field{IEFlowEndMilliseconds, 8, "flowEndMilliseconds"}
	flowDirection            = Field{IEFlowDirection, 1, "flowDirection"}
	ingressInterface         = Field{IEIngressInterface, 4, "ingressInterface"}
	egressInterface          = Field{IEEgressInterface, 4, "egressInterface"}
	flowEndReason            = Field{IEFlowEndReason, 1, "flowEndReason"}
	// icmpTypeCode* are type<<8 | code; 0 for flows that are not ICMP.
	icmpTypeCodeIPv4 = Field{IEICMPTypeCodeIPv4, 2, "icmpTypeCodeIPv4"}
	icmpTypeCodeIPv6 = Field{IEICMPTypeCodeIPv6, 2, "icmpTypeCodeIPv6"}
	vlanID           = Field{IEVLANID, 2, "vlanId"}
)

// defaults is indexed by ID-256; Select relies on that order. Each row is a
// complete layout, read top to bottom as the record is laid out on the wire.
var defaults = [...]Template{
	{ID: IPv4Ingress, Name: "ipv4-ingress", Fields: []Field{
		sourceIPv4Address, destinationIPv4Address,
		sourceTransportPort, destinationTransportPort,
		protocolIdentifier, tcpControlBits,
		octetDeltaCount, packetDeltaCount,
		flowStartMilliseconds, flowEndMilliseconds,
		flowDirection, ingressInterface, flowEndReason,
		icmpTypeCodeIPv4, vlanID,
	}},
	{ID: IPv4Egress, Name: "ipv4-egress", Fields: []Field{
		sourceIPv4Address, destinationIPv4Address,
		sourceTransportPort, destinationTransportPort,
		protocolIdentifier, tcpControlBits,
		octetDeltaCount, packetDeltaCount,
		flowStartMilliseconds, flowEndMilliseconds,
		flowDirection, egressInterface, flowEndReason,
		icmpTypeCodeIPv4, vlanID,
	}},
	{ID: IPv6Ingress, Name: "ipv6-ingress", Fields: []Field{
		sourceIPv6Address, destinationIPv6Address,
		sourceTransportPort, destinationTransportPort,
		protocolIdentifier, tcpControlBits,
		octetDeltaCount, packetDeltaCount,
		flowStartMilliseconds, flowEndMilliseconds,
		flowDirection, ingressInterface, flowEndReason,
		icmpTypeCodeIPv6, vlanID,
	}},
	{ID: IPv6Egress, Name: "ipv6-egress", Fields: []Field{
		sourceIPv6Address, destinationIPv6Address,
		sourceTransportPort, destinationTransportPort,
		protocolIdentifier, tcpControlBits,
		octetDeltaCount, packetDeltaCount,
		flowStartMilliseconds, flowEndMilliseconds,
		flowDirection, egressInterface, flowEndReason,
		icmpTypeCodeIPv6, vlanID,
	}},
}
