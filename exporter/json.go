package exporter

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/hostflow/hostflow/bpf"
)

// jsonTimeLayout is RFC 3339 with milliseconds: flow times are kept to the
// millisecond in IPFIX too, and a fixed width keeps the lines aligned.
// Times are rendered in UTC, so lines from hosts in different zones sort
// and compare as text.
const jsonTimeLayout = "2006-01-02T15:04:05.000Z07:00"

// JSONTimeLayout is the layout of the JSON lines' times, for other
// writers of the same fields (the control socket's flows).
const JSONTimeLayout = jsonTimeLayout

// jsonLines writes one JSON object per flow per line. A line holds, in
// this order: src, dst (text form, IPv4 unmapped),
// src_port, dst_port, proto, ethertype, ifindex, ifname (the interface's
// name, "" when unknown), direction ("ingress",
// "egress" or "unknown"), vlan, icmp_type, icmp_code, tos (the IPv4 ToS
// byte or IPv6 Traffic Class, DSCP and ECN), packets, bytes,
// start, end (jsonTimeLayout, UTC), tcp_flags, end_reason (EndReason's
// String), only for sampled flows, sampling (N of 1-in-N), and only for
// records with a forwarding status (router mode): forwarding_status (IANA
// forwardingStatus, RFC 7270: 64, 128 to 143, 192, 195 ...), fate
// ("forwarded", "dropped" or "consumed", its two high bits), and, when
// known, egress_ifindex and next_hop. Field names
// are stable: they are what scripts reading the output match on. Every
// string value but ifname comes from a fixed alphabet (addresses, times,
// names) that needs no escaping; an interface name may hold any byte but
// '/', ':' and white space, and is escaped as encoding/json does.
//
// jsonLines is the Sink that writes those lines, for people and scripts
// when there is no collector.
type jsonLines struct {
	w      *bufio.Writer
	line   []byte
	ifname func(ifindex uint32) string
	times  jsonTimes
}

// JSONOptions tune the JSON-lines sink.
type JSONOptions struct {
	// InterfaceName returns the name of an interface, "" if unknown; nil
	// writes "" for every flow. It is called on the exporting goroutine,
	// once per flow: it should answer from a cache.
	InterfaceName func(ifindex uint32) string
}

// NewJSONLines returns a Sink writing to w, with no interface names.
// Close flushes but does not close w, which may be os.Stdout.
func NewJSONLines(w io.Writer) Sink { return NewJSONLinesWith(w, JSONOptions{}) }

// NewJSONLinesWith is NewJSONLines with options.
func NewJSONLinesWith(w io.Writer, opts JSONOptions) Sink {
	name := opts.InterfaceName
	if name == nil {
		name = func(uint32) string { return "" }
	}
	return &jsonLines{w: bufio.NewWriterSize(w, jsonBufferSize), line: make([]byte, 0, 512), ifname: name}
}

// jsonBufferSize is the JSON-lines sink's buffer: a batch of records
// (about 300 bytes a line) goes out in writes of 64 KiB, not of bufio's
// default 4 KiB. A flood of new flows exports a batch per 4096 flows
// pushed out of the full cache; in 4 KiB writes to a file on ext4 the
// kernel's writes (page zeroing of each partial write included) cost as
// much as the cache itself (bench/RESULTS.md, the flood's profile).
const jsonBufferSize = 64 << 10

// Export writes flows and flushes, so every batch is visible when Export
// returns. It allocates nothing per flow: a flood of flows exported as
// JSON leaves no garbage behind.
func (j *jsonLines) Export(flows []Flow) error {
	for i := range flows {
		f := &flows[i]
		j.line = appendJSON(j.line[:0], f, j.ifname(f.Key.IfIndex), &j.times)
		if _, err := j.w.Write(j.line); err != nil {
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

// appendJSON appends the JSON line of f, newline included; ifname is the
// name of its interface. It renders times with tc.
func appendJSON(b []byte, f *Flow, ifname string, tc *jsonTimes) []byte {
	k := &f.Key
	b = append(b, `{"src":"`...)
	b = k.Src.AppendTo(b)
	b = append(b, `","dst":"`...)
	b = k.Dst.AppendTo(b)
	b = append(b, `","src_port":`...)
	b = strconv.AppendUint(b, uint64(k.SrcPort), 10)
	b = append(b, `,"dst_port":`...)
	b = strconv.AppendUint(b, uint64(k.DstPort), 10)
	b = append(b, `,"proto":`...)
	b = strconv.AppendUint(b, uint64(k.Proto), 10)
	b = append(b, `,"ethertype":`...)
	b = strconv.AppendUint(b, uint64(k.EtherType()), 10)
	b = append(b, `,"ifindex":`...)
	b = strconv.AppendUint(b, uint64(k.IfIndex), 10)
	b = append(b, `,"ifname":`...)
	b = appendJSONString(b, ifname)
	b = append(b, `,"direction":"`...)
	b = append(b, directionName(k.Direction)...)
	b = append(b, `","vlan":`...)
	b = strconv.AppendUint(b, uint64(k.VLAN), 10)
	b = append(b, `,"icmp_type":`...)
	b = strconv.AppendUint(b, uint64(k.ICMPType), 10)
	b = append(b, `,"icmp_code":`...)
	b = strconv.AppendUint(b, uint64(k.ICMPCode), 10)
	b = append(b, `,"tos":`...)
	b = strconv.AppendUint(b, uint64(k.TOS), 10)
	b = append(b, `,"packets":`...)
	b = strconv.AppendUint(b, f.Packets, 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendUint(b, f.Bytes, 10)
	b = append(b, `,"start":"`...)
	b = tc.append(b, f.Start)
	b = append(b, `","end":"`...)
	b = tc.append(b, f.End)
	b = append(b, `","tcp_flags":`...)
	b = strconv.AppendUint(b, uint64(f.TCPFlags), 10)
	b = append(b, `,"end_reason":"`...)
	b = append(b, f.EndReason.String()...)
	b = append(b, '"')
	if n := samplingOf(f.SamplingInterval); n != 0 {
		b = append(b, `,"sampling":`...)
		b = strconv.AppendUint(b, uint64(n), 10)
	}
	if f.ForwardingStatus != 0 {
		b = append(b, `,"forwarding_status":`...)
		b = strconv.AppendUint(b, uint64(f.ForwardingStatus), 10)
		b = append(b, `,"fate":"`...)
		b = append(b, fateName(f.ForwardingStatus)...)
		b = append(b, '"')
		if f.EgressIfIndex != 0 {
			b = append(b, `,"egress_ifindex":`...)
			b = strconv.AppendUint(b, uint64(f.EgressIfIndex), 10)
		}
		if f.NextHop.IsValid() {
			b = append(b, `,"next_hop":"`...)
			b = f.NextHop.AppendTo(b)
			b = append(b, '"')
		}
	}
	return append(b, "}\n"...)
}

// fateName names the status of an IANA forwardingStatus value (RFC 7270),
// its two high bits: "unknown", "forwarded", "dropped" or "consumed".
func fateName(status uint8) string {
	return [...]string{"unknown", "forwarded", "dropped", "consumed"}[status>>6]
}

// DirectionName is the direction of a flow key as the JSON lines write it:
// "ingress", "egress" or "unknown".
func DirectionName(d uint8) string { return directionName(d) }

func directionName(d uint8) string {
	switch d {
	case bpf.DirectionIngress:
		return "ingress"
	case bpf.DirectionEgress:
		return "egress"
	}
	return "unknown"
}

// samplingOf is N for sampled flows and 0 (omitted) for unsampled ones.
func samplingOf(n uint32) uint32 {
	if n <= 1 {
		return 0
	}
	return n
}

// jsonTimes renders times in jsonTimeLayout, UTC, keeping the text of the
// last minute it rendered ("2006-01-02T15:04:", by time.Time.AppendFormat):
// the times of a batch of records mostly fall in one minute, and
// AppendFormat, which parses the layout at every call, was a tenth of the
// daemon's CPU in a flood of new flows exported as JSON.
type jsonTimes struct {
	minute int64  // Unix minute of prefix
	prefix []byte // empty until the first call
}

// append appends t as time.Time.AppendFormat(b, jsonTimeLayout) of
// t.UTC() does.
func (c *jsonTimes) append(b []byte, t time.Time) []byte {
	sec := t.Unix()
	minute, s := sec/60, sec%60
	if s < 0 { // before 1970: floor
		minute, s = minute-1, s+60
	}
	if len(c.prefix) == 0 || minute != c.minute {
		c.prefix = time.Unix(minute*60, 0).UTC().AppendFormat(c.prefix[:0], "2006-01-02T15:04:")
		c.minute = minute
	}
	ms := t.Nanosecond() / 1e6 // truncated, as AppendFormat's .000
	return append(append(b, c.prefix...), byte('0'+s/10), byte('0'+s%10), '.',
		byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10), 'Z')
}
