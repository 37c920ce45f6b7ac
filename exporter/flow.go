package exporter

import (
	"net/netip"
	"time"
)

// EndReason is IANA IPFIX element 136, flowEndReason.
type EndReason uint8

const (
	EndIdleTimeout     EndReason = 1
	EndActiveTimeout   EndReason = 2
	EndOfFlowDetected  EndReason = 3
	EndForced          EndReason = 4
	EndLackOfResources EndReason = 5
)

func (r EndReason) String() string {
	switch r {
	case EndIdleTimeout:
		return "idle"
	case EndActiveTimeout:
		return "active"
	case EndOfFlowDetected:
		return "end"
	case EndForced:
		return "forced"
	case EndLackOfResources:
		return "lack-of-resources"
	}
	return "unknown"
}

// Flow is one expired flow record, ready to encode: counts are deltas since
// the previous record of the same key, times are wall-clock.
type Flow struct {
	Key       FlowKey
	Packets   uint64
	Bytes     uint64
	Start     time.Time
	End       time.Time
	TCPFlags  uint16
	EndReason EndReason
	// SamplingInterval is N of the 1-in-N packet sampling the counts
	// were taken with (0 or 1: every packet); a collector multiplies
	// by it.
	SamplingInterval uint32

	// Router mode: what the host did with an ingress flow's packets,
	// zero when unknown or not in router mode. With kernel fates
	// (CacheConfig.Fates) the Cache sets ForwardingStatus to the key's
	// Fate and EgressIfIndex to the interface the kernel saw forwarded
	// packets leave on; router.Enricher adds the next hop and the rest
	// at export. Without them, router.Enricher fills all three from the
	// FIB at export time (see the router package).
	//
	// EgressIfIndex is the interface the packets were forwarded to
	// (egressInterface, 14), 0 if they were not forwarded.
	EgressIfIndex uint32
	// NextHop is the route's gateway, or the destination itself for a
	// connected route (ipNextHopIPv4Address 15 / ipNextHopIPv6Address 62).
	NextHop netip.Addr
	// ForwardingStatus is IANA forwardingStatus (89, RFC 7270): 64
	// forwarded, 128 to 143 dropped with a reason (128 unknown), 192
	// consumed, 195 consumed for us (delivered locally), 0 unknown.
	ForwardingStatus uint8
	// SrcPrefixLen and DstPrefixLen are the lengths of the longest main
	// table routes matching the source and destination (source/
	// destinationIPv4PrefixLength 9/13, IPv6 29/30).
	SrcPrefixLen uint8
	DstPrefixLen uint8
	// PostNATSrc, PostNATDst and their ports are the flow's addresses
	// and ports after NAT, from conntrack (postNATSourceIPv4Address 225,
	// postNATDestinationIPv4Address 226, IPv6 281/282, postNAPTSource/
	// DestinationTransportPort 227/228). Invalid (zero) if the flow has no
	// conntrack entry; equal to the key's when it is tracked untranslated.
	PostNATSrc     netip.Addr
	PostNATDst     netip.Addr
	PostNATSrcPort uint16
	PostNATDstPort uint16
}

// Sink receives expired flows. Export is called from one goroutine; it must
// not keep the slice after it returns.
type Sink interface {
	Export(flows []Flow) error
	Close() error
}
