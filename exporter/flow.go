package exporter

import (
	"time"

	"github.com/hostflow/hostflow/bpf"
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
	Key       bpf.NetFlowId
	Packets   uint64
	Bytes     uint64
	Start     time.Time
	End       time.Time
	TCPFlags  uint16
	EndReason EndReason
}

// Sink receives expired flows. Export is called from one goroutine; it must
// not keep the slice after it returns.
type Sink interface {
	Export(flows []Flow) error
	Close() error
}
