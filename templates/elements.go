package templates

// IANA information element identifiers (https://www.iana.org/assignments/ipfix).
// Identifiers below 128 are also the NetFlow v9 field types of RFC 3954
// section 8 (RFC 7012 section 4 keeps that range compatible), so the v9
// layouts use the same constants where the two agree.
const (
	IEOctetDeltaCount          uint16 = 1
	IEPacketDeltaCount         uint16 = 2
	IEProtocolIdentifier       uint16 = 4
	IEIPClassOfService         uint16 = 5 // v9 SRC_TOS
	IETCPControlBits           uint16 = 6
	IESourceTransportPort      uint16 = 7
	IESourceIPv4Address        uint16 = 8
	IEIngressInterface         uint16 = 10
	IEDestinationTransportPort uint16 = 11
	IEDestinationIPv4Address   uint16 = 12
	IEEgressInterface          uint16 = 14
	IEFlowEndSysUpTime         uint16 = 21 // v9 LAST_SWITCHED
	IEFlowStartSysUpTime       uint16 = 22 // v9 FIRST_SWITCHED
	IESourceIPv6Address        uint16 = 27
	IEDestinationIPv6Address   uint16 = 28
	IEICMPTypeCodeIPv4         uint16 = 32 // v9 ICMP_TYPE
	IESamplingInterval         uint16 = 34 // v9 SAMPLING_INTERVAL
	IESamplingAlgorithm        uint16 = 35 // v9 SAMPLING_ALGORITHM; not sent, see ipfixSampling
	IEExportedMessageTotal     uint16 = 41 // v9 TOTAL_PKTS_EXP
	IEExportedFlowRecordTotal  uint16 = 42 // v9 TOTAL_FLOWS_EXP
	IESamplerMode              uint16 = 49 // v9 FLOW_SAMPLER_MODE
	IEVLANID                   uint16 = 58
	IEIPVersion                uint16 = 60
	IEFlowDirection            uint16 = 61
	IEInterfaceName            uint16 = 82
	IEInterfaceDescription     uint16 = 83
	IEFlowEndReason            uint16 = 136
	IEICMPTypeCodeIPv6         uint16 = 139
	IEObservationDomainID      uint16 = 149
	IEFlowStartMilliseconds    uint16 = 152
	IEFlowEndMilliseconds      uint16 = 153
	IESystemInitTimeMillis     uint16 = 160
	IEIgnoredPacketTotal       uint16 = 164
	IENotSentFlowTotal         uint16 = 166
	IESelectorAlgorithm        uint16 = 304
	IESamplingPacketInterval   uint16 = 305
	IESamplingPacketSpace      uint16 = 306
	IESamplingProbability      uint16 = 311
)

// NetFlow v9 options scope field types (RFC 3954 section 6.2).
const (
	V9ScopeSystem    uint16 = 1
	V9ScopeInterface uint16 = 2
)

// element is one row of the table of elements hostflow can fill: the IPFIX
// field specifier and, if v9 can carry the value, the v9 one. The two differ
// where v9 has its own encoding: times are FIRST/LAST_SWITCHED, 32-bit
// milliseconds of sysUptime; TCP flags are one byte; ICMP is ICMP_TYPE (32)
// for both families.
//
// Lengths are the IANA full-length encodings: reduced-size encoding (RFC 7011
// section 6.2) is not used because the kernel counts in 64 bits and a counter
// that outgrows a reduced size could not be sent. v9 counters use the
// 8-byte form RFC 3954 allows for IN_BYTES and IN_PKTS for the same reason.
type element struct {
	ipfix, v9 Field
	// family is 4 or 6 for an element that only an IPv4 or IPv6 flow has,
	// dir is 'i' or 'e' for one only an ingress or egress flow has; the
	// twin is the element that takes its place in the other family or
	// direction (sourceIPv4Address <-> sourceIPv6Address).
	family uint8
	dir    byte
	twin   string
	// router marks an element only router mode fills (routerElements).
	router bool
}

// elements is every element a flow can fill. A user layout (FromNames) can
// use any of them; adding a row here, and the Value's accessor to the
// exporter's codec table (exporter/fields.go), is all it takes to offer
// one more.
var elements = []element{
	{ipfix: Field{IESourceIPv4Address, 4, "sourceIPv4Address", SrcIPv4}, v9: Field{8, 4, "IPV4_SRC_ADDR", SrcIPv4}, family: 4, twin: "sourceIPv6Address"},
	{ipfix: Field{IEDestinationIPv4Address, 4, "destinationIPv4Address", DstIPv4}, v9: Field{12, 4, "IPV4_DST_ADDR", DstIPv4}, family: 4, twin: "destinationIPv6Address"},
	{ipfix: Field{IESourceIPv6Address, 16, "sourceIPv6Address", SrcIPv6}, v9: Field{27, 16, "IPV6_SRC_ADDR", SrcIPv6}, family: 6, twin: "sourceIPv4Address"},
	{ipfix: Field{IEDestinationIPv6Address, 16, "destinationIPv6Address", DstIPv6}, v9: Field{28, 16, "IPV6_DST_ADDR", DstIPv6}, family: 6, twin: "destinationIPv4Address"},
	{ipfix: Field{IESourceTransportPort, 2, "sourceTransportPort", SrcPort}, v9: Field{7, 2, "L4_SRC_PORT", SrcPort}},
	{ipfix: Field{IEDestinationTransportPort, 2, "destinationTransportPort", DstPort}, v9: Field{11, 2, "L4_DST_PORT", DstPort}},
	{ipfix: Field{IEProtocolIdentifier, 1, "protocolIdentifier", Protocol}, v9: Field{4, 1, "PROTOCOL", Protocol}},
	{ipfix: Field{IETCPControlBits, 2, "tcpControlBits", TCPFlags}, v9: Field{6, 1, "TCP_FLAGS", TCPFlags}},
	{ipfix: Field{IEOctetDeltaCount, 8, "octetDeltaCount", Octets}, v9: Field{1, 8, "IN_BYTES", Octets}},
	{ipfix: Field{IEPacketDeltaCount, 8, "packetDeltaCount", Packets}, v9: Field{2, 8, "IN_PKTS", Packets}},
	{ipfix: Field{IEFlowStartMilliseconds, 8, "flowStartMilliseconds", StartMillis}, v9: Field{IEFlowStartSysUpTime, 4, "FIRST_SWITCHED", StartUptime}},
	{ipfix: Field{IEFlowEndMilliseconds, 8, "flowEndMilliseconds", EndMillis}, v9: Field{IEFlowEndSysUpTime, 4, "LAST_SWITCHED", EndUptime}},
	{ipfix: Field{IEFlowDirection, 1, "flowDirection", Direction}, v9: Field{61, 1, "DIRECTION", Direction}},
	{ipfix: Field{IEIngressInterface, 4, "ingressInterface", Interface}, v9: Field{10, 4, "INPUT_SNMP", Interface}, dir: 'i', twin: "egressInterface"},
	{ipfix: Field{IEEgressInterface, 4, "egressInterface", Interface}, v9: Field{14, 4, "OUTPUT_SNMP", Interface}, dir: 'e', twin: "ingressInterface"},
	// RFC 3954 has no end reason and 136 is outside the v9-compatible
	// range 1-127 (RFC 7012 section 4), so v9 does not carry it.
	{ipfix: Field{IEFlowEndReason, 1, "flowEndReason", EndReason}},
	// icmpTypeCode* are type<<8 | code, in the ICMP templates only (see
	// Set).
	{ipfix: Field{IEICMPTypeCodeIPv4, 2, "icmpTypeCodeIPv4", ICMPv4TypeCode}, v9: Field{32, 2, "ICMP_TYPE", ICMPv4TypeCode}, family: 4, twin: "icmpTypeCodeIPv6"},
	{ipfix: Field{IEICMPTypeCodeIPv6, 2, "icmpTypeCodeIPv6", ICMPv6TypeCode}, v9: Field{32, 2, "ICMP_TYPE", ICMPv6TypeCode}, family: 6, twin: "icmpTypeCodeIPv4"},
	{ipfix: Field{IEVLANID, 2, "vlanId", VLAN}, v9: Field{58, 2, "SRC_VLAN", VLAN}},
	{ipfix: Field{IEIPVersion, 1, "ipVersion", IPVersion}, v9: Field{60, 1, "IP_PROTOCOL_VERSION", IPVersion}},
	// interfaceName is the name of the flow's interface (the one whose
	// index is ingressInterface or egressInterface), for collectors that
	// read names from data records only (Logstash's netflow codec,
	// ElastiFlow). Fixed length, as in the options table (see
	// InterfaceNameLen): IFNAMSIZ holds every Linux name, and a fixed
	// field keeps every record of a template the same length. v9 has it
	// as IF_NAME (82) in Cisco's field type list.
	{ipfix: Field{IEInterfaceName, InterfaceNameLen, "interfaceName", IfName}, v9: Field{IEInterfaceName, InterfaceNameLen, "IF_NAME", IfName}},
	// The whole ToS byte (IPv4) or Traffic Class (IPv6), DSCP and ECN, as
	// NetFlow v5's tos and softflowd export it; part of the flow key.
	{ipfix: Field{IEIPClassOfService, 1, "ipClassOfService", TOS}, v9: Field{5, 1, "SRC_TOS", TOS}},
}

// The default layouts, one table each, written as the IPv4-ingress variant:
// the other three variants swap in the twins (see build).
var (
	defaultIPFIXNames = []string{
		"sourceIPv4Address", "destinationIPv4Address",
		"sourceTransportPort", "destinationTransportPort",
		"protocolIdentifier", "ipClassOfService", "tcpControlBits",
		"octetDeltaCount", "packetDeltaCount",
		"flowStartMilliseconds", "flowEndMilliseconds",
		"flowDirection", "ingressInterface", "flowEndReason",
		"icmpTypeCodeIPv4", "vlanId",
	}
	// defaultV9Names is the IPFIX layout less flowEndReason, which v9
	// cannot carry.
	defaultV9Names = []string{
		"sourceIPv4Address", "destinationIPv4Address",
		"sourceTransportPort", "destinationTransportPort",
		"protocolIdentifier", "ipClassOfService", "tcpControlBits",
		"octetDeltaCount", "packetDeltaCount",
		"flowStartMilliseconds", "flowEndMilliseconds",
		"flowDirection", "ingressInterface",
		"icmpTypeCodeIPv4", "vlanId",
	}
)

// The options templates (RFC 7011 section 3.4.2.2, RFC 3954 section 6.1),
// as data. IDs follow the eight data templates.
const (
	OptionsInterfaces  uint16 = 264
	OptionsSampling    uint16 = 265
	OptionsReliability uint16 = 266
)

// Lengths of the interface strings, the same in IPFIX and v9: fixed, zero-
// padded, cut at a UTF-8 boundary. IPFIX could send them variable-length
// (RFC 7011 section 7), but nfdump 1.7.1 sizes an options record by adding
// up the template's field lengths, takes the variable-length marker 65535
// literally and drops the whole set ("Process_ifvrf_option: nbar option
// size error"), so fixed lengths are what every collector decodes:
// Wireshark, libfixbuf and goflow2 read any string length, nfdump only a
// fixed one. 16 is IFNAMSIZ, the longest Linux interface name with its
// NUL, so names are never cut; descriptions (ifalias, up to 255 bytes) are
// cut at 64 bytes, as v9 exporters commonly do for IF_DESC.
//
// nfdump shows field 83 (interfaceDescription / IF_DESC) as the interface
// name and ignores 82; the encoder therefore fills 83 with the name when an
// interface has no alias (see exporter.InterfaceInfo).
const (
	InterfaceNameLen        = 16
	InterfaceDescriptionLen = 64
)

var (
	// ipfixOptions are the interface table and the reliability
	// template; the sampling one is ipfixSampling, by algorithm. The
	// interface table is keyed by the scope
	// ingressInterface, the index flows carry in ingressInterface or
	// egressInterface, and carries it again as its first option field:
	// nfdump 1.7.1 reads field 10 only among the option fields (not the
	// scope) and takes a template with ingressInterface (10) and a
	// fixed-length interfaceDescription (83) as its interface-name
	// table. v9 does the same (v9Options).
	ipfixOptions = []OptionsTemplate{
		{ID: OptionsInterfaces, Name: "interfaces",
			Scope: []Field{{IEIngressInterface, 4, "ingressInterface", OptInterfaceIndex}},
			Fields: []Field{
				{IEIngressInterface, 4, "ingressInterface", OptInterfaceIndex},
				{IEInterfaceName, InterfaceNameLen, "interfaceName", OptInterfaceName},
				{IEInterfaceDescription, InterfaceDescriptionLen, "interfaceDescription", OptInterfaceDescription},
			}},
		{ID: OptionsReliability, Name: "reliability",
			Scope: []Field{{IEObservationDomainID, 4, "observationDomainId", OptDomain}},
			Fields: []Field{
				{IEExportedMessageTotal, 8, "exportedMessageTotalCount", OptExportedMessages},
				{IEExportedFlowRecordTotal, 8, "exportedFlowRecordTotalCount", OptExportedRecords},
				{IEIgnoredPacketTotal, 8, "ignoredPacketTotalCount", OptIgnoredPackets},
				{IENotSentFlowTotal, 8, "notSentFlowTotalCount", OptNotSentFlows},
				{IESystemInitTimeMillis, 8, "systemInitTimeMilliseconds", OptSystemInitMillis},
			}},
	}
	// v9Options, the same two for v9 (sampling: v9Sampling). v9 has
	// only the counters below 128: ignored packets, not-sent
	// flows and the init time have no v9 type. The interface table keeps
	// the v9 Interface scope (RFC 3954 section 6.2) and carries the index
	// again as INPUT_SNMP, its first option field: nfdump 1.7.1 keys its
	// interface-name table by field type 10 and does not read v9 scope
	// types, so without it every name lands under index 0.
	v9Options = []OptionsTemplate{
		{ID: OptionsInterfaces, Name: "interfaces",
			Scope: []Field{{V9ScopeInterface, 4, "Interface", OptInterfaceIndex}},
			Fields: []Field{
				{IEIngressInterface, 4, "INPUT_SNMP", OptInterfaceIndex},
				{IEInterfaceName, InterfaceNameLen, "IF_NAME", OptInterfaceName},
				{IEInterfaceDescription, InterfaceDescriptionLen, "IF_DESC", OptInterfaceDescription},
			}},
		{ID: OptionsReliability, Name: "reliability",
			Scope: []Field{{V9ScopeSystem, 4, "System", OptDomain}},
			Fields: []Field{
				{IEExportedMessageTotal, 8, "TOTAL_PKTS_EXP", OptExportedMessages},
				{IEExportedFlowRecordTotal, 8, "TOTAL_FLOWS_EXP", OptExportedRecords},
			}},
	}
)

// Sampling is the packet sampling the options report: hostflow's two
// algorithms (bpf.SamplingRandom and bpf.SamplingCount).
type Sampling uint8

const (
	// SamplingRandom picks each packet with probability 1/N.
	SamplingRandom Sampling = iota
	// SamplingCount picks every Nth packet.
	SamplingCount
)

// The sampling options templates, one per algorithm in IPFIX. Every
// collector must read the rate N from them, and each reads other elements
// (their sources, as of nfdump 1.7.1, pmacct 1.7.7 and goflow2 2.2.6):
//
//   - goflow2 takes the first of samplingPacketInterval (305),
//     samplerRandomInterval (50) and samplingInterval (34) it finds in a
//     record, in that order, as the rate. RFC 5475's way to say 1-in-N
//     count-based sampling, samplingPacketInterval 1 and
//     samplingPacketSpace N-1, would read as a rate of 1
//     (netsampler/goflow2#440, open), so 305 and 306 are not sent.
//   - nfacctd takes samplingInterval (34), samplerRandomInterval (50), or
//     (305+306)/305.
//   - nfdump 1.7.1's nfcapd (Debian 12's, read from its machine code:
//     Process_ipfix_option_templates and Process_v9_option_templates
//     alike) takes an options template as a sampler table only if it has
//     samplingInterval (34) and no samplingAlgorithm (35), or
//     samplingPacketSpace (306, or 50) and neither selectorId (302, or 48)
//     nor selectorAlgorithm (304, or 49). So RFC 3954's own pair, 34 with
//     35, registers no sampler (nfdump -E lists none, flows stay
//     "Unsampled"), nor does RFC 5475's 305/306 form with 304. From 34
//     with 304 (v9: 49) it registers sampler id 0 with that algorithm,
//     packet interval 1 and packet space N-1, and id 0 is the sampler of
//     every flow that carries no selectorId: all of hostflow's, whose
//     packets and bytes it multiplies by N.
//
// So every template carries samplingInterval N, read by all three, and
// the algorithm in an element nfdump 1.7.1 tolerates: in IPFIX
// selectorAlgorithm (RFC 5475, IANA psamp) 4, uniform probabilistic, with
// its parameter samplingProbability 1/N, for random sampling, or 1,
// systematic count-based, for count-based; in v9 (RFC 3954 has no element for the
// algorithm other than 35) Cisco's FLOW_SAMPLER_MODE, 2 random or 1
// deterministic, the values of SAMPLING_ALGORITHM.
var (
	ipfixSampling = [2]OptionsTemplate{
		SamplingRandom: {ID: OptionsSampling, Name: "sampling",
			Scope: []Field{{IEObservationDomainID, 4, "observationDomainId", OptDomain}},
			Fields: []Field{
				{IESelectorAlgorithm, 2, "selectorAlgorithm", OptSelectorAlgorithm},
				{IESamplingProbability, 8, "samplingProbability", OptSamplingProbability},
				{IESamplingInterval, 4, "samplingInterval", OptSamplingInterval},
			}},
		SamplingCount: {ID: OptionsSampling, Name: "sampling",
			Scope: []Field{{IEObservationDomainID, 4, "observationDomainId", OptDomain}},
			Fields: []Field{
				{IESelectorAlgorithm, 2, "selectorAlgorithm", OptSelectorAlgorithm},
				{IESamplingInterval, 4, "samplingInterval", OptSamplingInterval},
			}},
	}
	v9Sampling = OptionsTemplate{ID: OptionsSampling, Name: "sampling",
		Scope: []Field{{V9ScopeSystem, 4, "System", OptDomain}},
		Fields: []Field{
			{IESamplingInterval, 4, "SAMPLING_INTERVAL", OptSamplingInterval},
			{IESamplerMode, 1, "FLOW_SAMPLER_MODE", OptSamplingAlgorithm},
		}}
)

var optionsSets [2][2][]OptionsTemplate

func init() {
	for _, s := range []Sampling{SamplingRandom, SamplingCount} {
		// Interface table, sampling, reliability: IDs 264-266.
		optionsSets[IPFIX][s] = []OptionsTemplate{ipfixOptions[0], ipfixSampling[s], ipfixOptions[1]}
		optionsSets[NetFlowV9][s] = []OptionsTemplate{v9Options[0], v9Sampling, v9Options[1]}
	}
}
