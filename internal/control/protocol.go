// Package control is the protocol of hostflow's control socket: the
// commands "hostflow flows", "hostflow stats" and "hostflow expire" ask the
// running daemon over a unix stream socket, never a network listener.
//
// One exchange per connection. The client writes one request line, a JSON
// object {"version":1,"command":"flows"}; the server answers with JSON
// lines and closes the connection. The first line is a Header: ok, or the
// error that refused the request. After an ok header come the command's
// lines: one Flow per line for "flows", one Stats for "stats", one
// Expired for "expire". A server refuses a request of another version
// (the header then carries its own), so that a client and a daemon of
// different releases fail clearly instead of misreading each other.
package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Version is the protocol version this package speaks.
const Version = 1

// Commands.
const (
	CommandFlows  = "flows"
	CommandStats  = "stats"
	CommandExpire = "expire"
)

// maxRequest bounds a request line: a client cannot make the server
// buffer more than this.
const maxRequest = 1024

// Request is the one line a client sends.
type Request struct {
	Version int    `json:"version"`
	Command string `json:"command"`
}

// Header is the first line of every answer. Error is set when the request
// was refused; no other line follows it then.
type Header struct {
	Version int    `json:"version"`
	OK      bool   `json:"ok"`
	Error   string `json:"error,omitempty"`
}

// Flow is one flow of the daemon's cache, as it stands now (counts since
// the flow's previous record, if any). Its field names are those of the
// JSON lines hostflow prints on stdout (exporter's JSON sink), so scripts
// read both alike; end_reason is absent, the flow has not ended.
type Flow struct {
	Src       string `json:"src"`
	Dst       string `json:"dst"`
	SrcPort   uint16 `json:"src_port"`
	DstPort   uint16 `json:"dst_port"`
	Proto     uint8  `json:"proto"`
	EtherType uint16 `json:"ethertype"`
	IfIndex   uint32 `json:"ifindex"`
	IfName    string `json:"ifname"`
	Direction string `json:"direction"`
	VLAN      uint16 `json:"vlan"`
	ICMPType  uint8  `json:"icmp_type"`
	ICMPCode  uint8  `json:"icmp_code"`
	TOS       uint8  `json:"tos"` // IPv4 ToS or IPv6 Traffic Class, part of the key
	Packets   uint64 `json:"packets"`
	Bytes     uint64 `json:"bytes"`
	Start     string `json:"start"` // as the JSON lines write it
	End       string `json:"end"`
	TCPFlags  uint16 `json:"tcp_flags"`
	Sampling  uint32 `json:"sampling,omitempty"`
}

// Stats are the daemon's counters since it started.
type Stats struct {
	// PacketsSeen and BytesSeen are what the daemon has read from the
	// kernel: exported, or in the cache now.
	PacketsSeen uint64 `json:"packets_seen"`
	BytesSeen   uint64 `json:"bytes_seen"`
	// Packets and Bytes were exported in flow records.
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
	// FlowsActive are in the cache now; FlowsExported count records by
	// end reason (idle, active, end, forced, lack-of-resources).
	FlowsActive   int               `json:"flows_active"`
	FlowsExported map[string]uint64 `json:"flows_exported"`
	DirectRecords uint64            `json:"direct_records"`
	DrainErrors   uint64            `json:"drain_errors"`
	ExportErrors  uint64            `json:"export_errors"`
	// Kernel are the eBPF programs' counters; KernelError is set when
	// they could not be read.
	Kernel      KernelStats       `json:"kernel"`
	KernelError string            `json:"kernel_error,omitempty"`
	Collectors  []CollectorStatus `json:"collectors"`
}

// KernelStats are the eBPF programs' counters (bpf.KernelCounters).
type KernelStats struct {
	MapFull     uint64 `json:"map_full"`
	RingBufFull uint64 `json:"ringbuf_full"`
	NotIP       uint64 `json:"not_ip"`
	Malformed   uint64 `json:"malformed"`
	NoMap       uint64 `json:"no_map"`
	SampledOut  uint64 `json:"sampled_out"`
	// FateMalformed: router mode's fates not counted (bpf.KernelCounters).
	FateMalformed uint64 `json:"fate_malformed"`
}

// CollectorStatus is one collector's state and counters.
type CollectorStatus struct {
	URL string `json:"url"`
	// State is "connected" or "disconnected" (TCP, TLS; a UDP socket is
	// connected until closed).
	State       string `json:"state"`
	Queued      int    `json:"queued_records"`
	Messages    uint64 `json:"messages"`
	Records     uint64 `json:"records"`
	SendErrors  uint64 `json:"send_errors"`
	RecordsLost uint64 `json:"records_lost"`
	Dropped     uint64 `json:"dropped_records"`
	Unreachable uint64 `json:"unreachable"`
	Reconnects  uint64 `json:"reconnects"`
}

// Expired is the answer to expire: how many flow records it exported.
type Expired struct {
	Flows int `json:"flows"`
}

// ReadRequest reads one request line from r.
func ReadRequest(r *bufio.Reader) (Request, error) {
	line, err := readLine(r, maxRequest)
	if err != nil {
		return Request{}, fmt.Errorf("read request: %w", err)
	}
	var req Request
	if err := json.Unmarshal(line, &req); err != nil {
		return Request{}, fmt.Errorf("decode request: %w", err)
	}
	return req, nil
}

// readLine reads up to and without '\n', at most max bytes.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		part, err := r.ReadSlice('\n')
		line = append(line, part...)
		if len(line) > max {
			return nil, fmt.Errorf("line longer than %d bytes", max)
		}
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return line, nil
		default:
			return nil, err
		}
	}
}
