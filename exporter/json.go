package exporter

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/hostflow/hostflow/bpf"
)

// jsonTimeLayout is RFC 3339 with milliseconds: flow times are kept to the
// millisecond in IPFIX too, and a fixed width keeps the lines aligned.
const jsonTimeLayout = "2006-01-02T15:04:05.000Z07:00"

// jsonFlow is one line of JSON-lines output. Field names are stable: they
// are what scripts reading the output match on.
type jsonFlow struct {
	Src       string `json:"src"`
	Dst       string `json:"dst"`
	SrcPort   uint16 `json:"src_port"`
	DstPort   uint16 `json:"dst_port"`
	Proto     uint8  `json:"proto"`
	EtherType uint16 `json:"ethertype"`
	IfIndex   uint32 `json:"ifindex"`
	Direction string `json:"direction"`
	VLAN      uint16 `json:"vlan"`
	ICMPType  uint8  `json:"icmp_type"`
	ICMPCode  uint8  `json:"icmp_code"`
	Packets   uint64 `json:"packets"`
	Bytes     uint64 `json:"bytes"`
	Start     string `json:"start"`
	End       string `json:"end"`
	TCPFlags  uint16 `json:"tcp_flags"`
	EndReason string `json:"end_reason"`
	// Sampling is N of 1-in-N packet sampling; absent when unsampled.
	Sampling uint32 `json:"sampling,omitempty"`
}

// jsonLines is a Sink that writes one JSON object per flow per line, for
// people and scripts when there is no collector.
type jsonLines struct {
	w   *bufio.Writer
	enc *json.Encoder
}

// NewJSONLines returns a Sink writing to w. Close flushes but does not close
// w, which may be os.Stdout.
func NewJSONLines(w io.Writer) Sink {
	bw := bufio.NewWriter(w)
	return &jsonLines{w: bw, enc: json.NewEncoder(bw)}
}

// Export writes flows and flushes, so every batch is visible when Export
// returns.
func (j *jsonLines) Export(flows []Flow) error {
	for i := range flows {
		if err := j.enc.Encode(toJSON(&flows[i])); err != nil {
			return fmt.Errorf("json export: %w", err)
		}
	}
	if err := j.w.Flush(); err != nil {
		return fmt.Errorf("json export: %w", err)
	}
	return nil
}

// Close flushes buffered output.
func (j *jsonLines) Close() error {
	if err := j.w.Flush(); err != nil {
		return fmt.Errorf("json close: %w", err)
	}
	return nil
}

func toJSON(f *Flow) jsonFlow {
	k := &f.Key
	return jsonFlow{
		Src:       k.SrcAddr().String(),
		Dst:       k.DstAddr().String(),
		SrcPort:   k.SrcPort,
		DstPort:   k.DstPort,
		Proto:     k.TransportProtocol,
		EtherType: k.EthProtocol,
		IfIndex:   k.IfIndex,
		Direction: directionName(k.Direction),
		VLAN:      k.VlanId,
		ICMPType:  k.IcmpType,
		ICMPCode:  k.IcmpCode,
		Packets:   f.Packets,
		Bytes:     f.Bytes,
		Start:     jsonTime(f.Start),
		End:       jsonTime(f.End),
		TCPFlags:  f.TCPFlags,
		EndReason: f.EndReason.String(),
		Sampling:  samplingOf(f.SamplingInterval),
	}
}

func directionName(d uint8) string {
	switch d {
	case bpf.DirectionIngress:
		return "ingress"
	case bpf.DirectionEgress:
		return "egress"
	}
	return "unknown"
}

// jsonTime renders t in UTC, so lines from hosts in different zones sort
// and compare as text.
func jsonTime(t time.Time) string {
	return t.UTC().Format(jsonTimeLayout)
}

// samplingOf is N for sampled flows and 0 (omitted) for unsampled ones.
func samplingOf(n uint32) uint32 {
	if n <= 1 {
		return 0
	}
	return n
}
