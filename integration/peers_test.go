package integration

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/exporter"
	"github.com/hostflow/hostflow/templates"
)

// The Peer tests export a fixed set of flows with hostflow's encoders and
// transports, no eBPF involved, to real collectors (nfcapd/nfdump, pmacct's
// nfacctd, libfixbuf's ipfixDump, go-ipfix's collecting process) and check
// what each decoded. Wireshark's dissector is covered by exporter's
// TestTshark on the same encoders, so it is not run again here.

// peerFlow is one flow of the fixture with the values a collector must
// show for it.
type peerFlow struct {
	name           string
	proto          uint8
	src, dst       netip.Addr
	sport, dport   uint16
	icmpType       uint8
	icmpCode       uint8
	egress         bool
	ifindex        uint32
	packets, bytes uint64
	flags          uint16
	tos            uint8
	start, end     time.Time
	reason         exporter.EndReason
}

// The interface table the Interfaces provider reports: every flow's
// ifindex is one of these.
var peerInterfaces = []exporter.InterfaceInfo{
	{Index: 3, Name: "eth0", Description: "uplink to rack switch"},
	{Index: 7, Name: "veth-c1", Description: "container c1"},
	{Index: 12, Name: "wg0", Description: ""},
}

// peerIfDesc is the interfaceDescription (IF_DESC) the exporter sends for
// idx: the alias, else the name. nfdump shows it as the interface name.
func peerIfDesc(idx uint32) string {
	for _, i := range peerInterfaces {
		if i.Index == idx {
			if i.Description == "" {
				return i.Name
			}
			return i.Description
		}
	}
	return ""
}

// peerClock is the time of export: a whole second, so that NetFlow v9,
// whose header carries the export time in seconds and flow times in
// milliseconds of uptime, gives back the exact millisecond flow times.
func peerClock() time.Time {
	return time.Now().Truncate(time.Second)
}

// peerBoot is when the exporters started, by their clock: before every
// flow of the fixture, so v9 uptimes are positive.
func peerBoot(now time.Time) time.Time { return now.Add(-10 * time.Minute) }

// peerFlows returns the fixture: IPv4 and IPv6, both directions, TCP, UDP,
// ICMP and ICMPv6, counts past 2^32, three interfaces and every end reason,
// all within the minute before now (times with milliseconds).
func peerFlows(now time.Time) []peerFlow {
	a4, b4 := netip.MustParseAddr("10.20.30.40"), netip.MustParseAddr("192.0.2.200")
	c4 := netip.MustParseAddr("198.51.100.7")
	a6, b6 := netip.MustParseAddr("2001:db8::10"), netip.MustParseAddr("2001:db8:ffff::2")
	c6 := netip.MustParseAddr("fd00:1234::abcd")
	at := func(ms int) time.Time { return now.Add(-60 * time.Second).Add(time.Duration(ms) * time.Millisecond) }
	const (
		fin, syn, rst, psh, ack = 0x01, 0x02, 0x04, 0x08, 0x10
	)
	base := []peerFlow{
		{name: "tcp4 out", proto: 6, src: a4, dst: b4, sport: 40001, dport: 443, egress: true, ifindex: 3,
			packets: 12, bytes: 1733, flags: syn | ack | psh | fin, tos: 0xb8, start: at(1001), end: at(2345), reason: exporter.EndOfFlowDetected},
		{name: "tcp4 in", proto: 6, src: b4, dst: a4, sport: 443, dport: 40001, egress: false, ifindex: 3,
			packets: 15, bytes: 18_222, flags: syn | ack | psh | fin, start: at(1012), end: at(2344), reason: exporter.EndOfFlowDetected},
		{name: "udp4 out", proto: 17, src: a4, dst: c4, sport: 5353, dport: 53, egress: true, ifindex: 7,
			packets: 3, bytes: 213, start: at(3000), end: at(3999), reason: exporter.EndIdleTimeout},
		{name: "udp4 in", proto: 17, src: c4, dst: a4, sport: 53, dport: 5353, egress: false, ifindex: 7,
			packets: 3, bytes: 411, start: at(3007), end: at(4005), reason: exporter.EndIdleTimeout},
		{name: "icmp4 echo", proto: 1, src: a4, dst: b4, icmpType: 8, egress: true, ifindex: 3,
			packets: 4, bytes: 336, start: at(5000), end: at(8003), reason: exporter.EndIdleTimeout},
		{name: "icmp4 unreachable", proto: 1, src: b4, dst: a4, icmpType: 3, icmpCode: 3, egress: false, ifindex: 3,
			packets: 1, bytes: 56, start: at(5100), end: at(5100), reason: exporter.EndIdleTimeout},
		{name: "tcp6 out", proto: 6, src: a6, dst: b6, sport: 50022, dport: 22, egress: true, ifindex: 12,
			packets: 5_000_001, bytes: 7_000_000_123, flags: ack | psh, tos: 0x29, start: at(100), end: at(59_999), reason: exporter.EndActiveTimeout},
		{name: "tcp6 in", proto: 6, src: b6, dst: a6, sport: 22, dport: 50022, egress: false, ifindex: 12,
			packets: 2_500_000, bytes: 130_000_000, flags: ack | rst, start: at(101), end: at(59_998), reason: exporter.EndActiveTimeout},
		{name: "udp6 out", proto: 17, src: a6, dst: c6, sport: 33434, dport: 4789, egress: true, ifindex: 7,
			packets: 77, bytes: 98_765, start: at(10_000), end: at(20_500), reason: exporter.EndForced},
		{name: "udp6 in", proto: 17, src: c6, dst: a6, sport: 4789, dport: 33434, egress: false, ifindex: 7,
			packets: 1, bytes: 1280, tos: 0xff, start: at(10_250), end: at(10_250), reason: exporter.EndLackOfResources},
		{name: "icmp6 echo", proto: 58, src: a6, dst: b6, icmpType: 128, egress: true, ifindex: 12,
			packets: 6, bytes: 624, start: at(30_000), end: at(35_001), reason: exporter.EndIdleTimeout},
		{name: "icmp6 echo reply", proto: 58, src: b6, dst: a6, icmpType: 129, egress: false, ifindex: 12,
			packets: 6, bytes: 624, start: at(30_002), end: at(35_003), reason: exporter.EndIdleTimeout},
	}
	// Two more of each from other source addresses, so that each half of
	// the fixture fills several messages: exportUDPPadded pads them.
	flows := base
	for v := 1; v <= 2; v++ {
		for _, f := range base {
			f.name = fmt.Sprintf("%s #%d", f.name, v+1)
			for range v * 16 {
				f.src = f.src.Next()
			}
			flows = append(flows, f)
		}
	}
	return flows
}

// exporterFlow converts a fixture flow to what the encoders take.
func (f peerFlow) exporterFlow() exporter.Flow {
	k := bpf.NetFlowId{
		SrcIp:             bpf.IPAddrFrom(f.src),
		DstIp:             bpf.IPAddrFrom(f.dst),
		IfIndex:           f.ifindex,
		EthProtocol:       0x0800,
		SrcPort:           f.sport,
		DstPort:           f.dport,
		TransportProtocol: f.proto,
		Direction:         bpf.DirectionIngress,
		IcmpType:          f.icmpType,
		IcmpCode:          f.icmpCode,
		Tos:               f.tos,
	}
	if f.src.Is6() {
		k.EthProtocol = 0x86dd
	}
	if f.egress {
		k.Direction = bpf.DirectionEgress
	}
	return exporter.Flow{Key: exporter.KeyOf(k), Packets: f.packets, Bytes: f.bytes, Start: f.start, End: f.end, TCPFlags: f.flags, EndReason: f.reason}
}

func (f peerFlow) isICMP() bool { return f.proto == 1 || f.proto == 58 }

// dir is flowDirection: 0 ingress, 1 egress.
func (f peerFlow) dir() int {
	if f.egress {
		return 1
	}
	return 0
}

func exporterFlows(fs []peerFlow) []exporter.Flow {
	out := make([]exporter.Flow, len(fs))
	for i, f := range fs {
		out[i] = f.exporterFlow()
	}
	return out
}

// peerOptions turns on options records with the fixture's interface table.
func peerOptions() *exporter.OptionsConfig {
	return &exporter.OptionsConfig{
		Interfaces: func() []exporter.InterfaceInfo { return peerInterfaces },
		Counters:   func() exporter.OptionsCounters { return exporter.OptionsCounters{IgnoredPackets: 5, NotSentFlows: 2} },
	}
}

// peerSink is an encoder for proto writing to w, with options on, a fixed
// clock, and small messages so that the fixture spans several of them.
func peerSink(t *testing.T, proto templates.ExportProtocol, w exporter.MessageWriter, now time.Time, refreshMessages int) exporter.Sink {
	t.Helper()
	return peerSinkOptions(t, proto, w, now, refreshMessages, peerOptions())
}

// peerSinkOptions is peerSink with options opts.
func peerSinkOptions(t *testing.T, proto templates.ExportProtocol, w exporter.MessageWriter, now time.Time, refreshMessages int, opts *exporter.OptionsConfig) exporter.Sink {
	t.Helper()
	// The encoder reads the clock once at creation (v9: sysUptime 0),
	// then at every message.
	t0 := peerBoot(now)
	clock := func() time.Time { return t0 }
	var (
		s   exporter.Sink
		err error
	)
	switch proto {
	case templates.IPFIX:
		lw, pad := w.(*lengthWriter)
		s, err = exporter.NewIPFIX(exporter.IPFIXConfig{Writer: w, ObservationDomainID: 4242, MaxMessageSize: peerMaxMessage,
			TemplateRefreshMessages: refreshMessages, Options: opts, Now: clock, PadForGSO: pad && lw.pad})
	case templates.NetFlowV9:
		s, err = exporter.NewNetFlow9(exporter.NetFlow9Config{Writer: w, SourceID: 4242, MaxMessageSize: peerMaxMessage,
			TemplateRefreshMessages: refreshMessages, Options: opts, Now: clock})
	}
	if err != nil {
		t.Fatal(err)
	}
	t0 = now // read by the encoder's goroutine only after this
	return s
}

// peerMaxMessage is the message size of the peer tests: small, so the
// fixture takes several messages.
const peerMaxMessage = 640

// lengthWriter keeps a copy of each message on its way to the UDPWriter
// (whose GSO method it keeps). With pad, peerSinkOptions turns on the
// IPFIX encoder's PadForGSO.
type lengthWriter struct {
	*exporter.UDPWriter
	pad  bool
	msgs [][]byte
}

func (w *lengthWriter) WriteMessageRecords(msg []byte, records int) error {
	w.msgs = append(w.msgs, bytes.Clone(msg))
	return w.UDPWriter.WriteMessageRecords(msg, records)
}

func (w *lengthWriter) WriteMessage(msg []byte) error {
	w.msgs = append(w.msgs, bytes.Clone(msg))
	return w.UDPWriter.WriteMessage(msg)
}

// ipfixSetPadding returns the padding octets of each data set of an IPFIX
// message of the default templates.
func ipfixSetPadding(m []byte) []int {
	lens := map[uint16]int{}
	for _, t := range templates.DefaultSet(templates.IPFIX).Templates() {
		lens[t.ID] = t.RecordLength()
	}
	var pads []int
	for o := 16; o+4 <= len(m); {
		id, l := binary.BigEndian.Uint16(m[o:]), int(binary.BigEndian.Uint16(m[o+2:]))
		if r := lens[id]; r > 0 {
			pads = append(pads, (l-4)%r)
		}
		if l < 4 {
			break
		}
		o += l
	}
	return pads
}

// exportUDP exports the fixture once to addr over UDP from inside ns (or
// the test's namespace if ns is nil), in two batches so that sequence
// numbers run across messages and batches.
func exportUDP(t *testing.T, ns *namespace, proto templates.ExportProtocol, addr string, now time.Time, flows []peerFlow) exporter.ExportStats {
	t.Helper()
	return exportUDPWith(t, ns, proto, addr, now, flows, peerOptions(), false)
}

// exportUDPPadded is exportUDP with IPFIXConfig.PadForGSO: IPFIX messages
// that exact fill leaves short of the export's length are padded to it.
func exportUDPPadded(t *testing.T, ns *namespace, proto templates.ExportProtocol, addr string, now time.Time, flows []peerFlow) exporter.ExportStats {
	t.Helper()
	return exportUDPWith(t, ns, proto, addr, now, flows, peerOptions(), true)
}

// exportUDPOptions is exportUDP with options opts.
func exportUDPOptions(t *testing.T, ns *namespace, proto templates.ExportProtocol, addr string, now time.Time, flows []peerFlow, opts *exporter.OptionsConfig) exporter.ExportStats {
	t.Helper()
	return exportUDPWith(t, ns, proto, addr, now, flows, opts, false)
}

// exportUDPWith exports over the daemon's UDP writer (batched, GSO), with
// options opts, padding IPFIX messages if pad.
func exportUDPWith(t *testing.T, ns *namespace, proto templates.ExportProtocol, addr string, now time.Time, flows []peerFlow, opts *exporter.OptionsConfig, pad bool) exporter.ExportStats {
	t.Helper()
	var u *exporter.UDPWriter
	dial := func() error {
		var err error
		// The daemon's UDP writer: batched, with GSO, so IPFIX
		// messages are filled to one length (exporter/fill.go).
		u, err = exporter.NewUDPWriter(exporter.UDPConfig{Address: addr, Batch: exporter.DefaultUDPBatch})
		return err
	}
	if ns != nil {
		ns.do(t, dial)
	} else if err := dial(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = u.Close() })
	if proto == templates.IPFIX && !u.GSO() {
		t.Fatal("udp writer without GSO: IPFIX exact fill untested")
	}
	lw := &lengthWriter{UDPWriter: u, pad: pad}
	s := peerSinkOptions(t, proto, lw, now, 0, opts)
	// Options data first, in messages of their own (Export with no flows
	// sends them when due), the way a daemon that starts with an empty
	// cache sends them: nfdump 1.7.1 leaves options data records out of
	// its IPFIX sequence count (RFC 7011 section 3.1 counts every data
	// record), so options records after its first flow record would
	// count as a sequence failure; before it, nfdump resynchronises
	// silently.
	if err := s.Export(nil); err != nil {
		t.Fatalf("export %s options: %v", proto, err)
	}
	if err := u.Flush(); err != nil {
		t.Fatal(err)
	}
	efs := exporterFlows(flows)
	half := len(efs) / 2
	filled, setPadded := false, false
	for _, batch := range [][]exporter.Flow{efs[:half], efs[half:]} {
		lw.msgs = lw.msgs[:0]
		if err := s.Export(batch); err != nil {
			t.Fatalf("export %s: %v", proto, err)
		}
		if err := u.Flush(); err != nil {
			t.Fatal(err)
		}
		if proto == templates.IPFIX {
			// Exact fill: every message of the export but the last
			// is the maximum size (the fixture mixes all eight
			// templates), each data set padded by 3 octets at most
			// unless PadForGSO: the collector decodes it all.
			if len(lw.msgs) >= 2 {
				filled = true
			}
			for i, m := range lw.msgs {
				if i < len(lw.msgs)-1 && len(m) != peerMaxMessage {
					t.Fatalf("IPFIX message %d of %d is %d bytes, want %d (exact fill)", i, len(lw.msgs), len(m), peerMaxMessage)
				}
				for _, p := range ipfixSetPadding(m) {
					if p > 3 && !pad {
						t.Fatalf("IPFIX message %d: a data set has %d octets of padding", i, p)
					}
					setPadded = setPadded || p > 0
				}
			}
		}
		time.Sleep(20 * time.Millisecond) // no burst loss on lo
	}
	// The whole fixture spans several messages an export; fewer flows
	// may not.
	if proto == templates.IPFIX && len(flows) >= len(peerFlows(now)) && (!filled || !setPadded) {
		t.Fatalf("IPFIX exact fill untested: several messages in an export %v, set padding %v", filled, setPadded)
	}
	st := s.(interface{ Stats() exporter.ExportStats }).Stats()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if ts := u.Stats(); ts.Lost != 0 {
		t.Fatalf("udp transport lost %d messages", ts.Lost)
	}
	t.Logf("%s: exported %+v", proto, st)
	return st
}

// peerKey identifies a flow the way every collector can: addresses,
// protocol, ports (ICMP: 0 and type<<8|code).
func (f peerFlow) String() string {
	return fmt.Sprintf("%s (%d %s:%d -> %s:%d)", f.name, f.proto, f.src, f.sport, f.dst, f.dport)
}

// exportStream exports the fixture as IPFIX through a StreamTransport (TCP,
// or TLS if tc is set) and a Collector, the way the daemon wires them:
// templates once per connection, sent first on it (OnConnect), and
// through w, if set, a wrapper around the transport. It returns when the
// collector has closed, which closes the connection.
func exportStream(t *testing.T, addr string, tc *tls.Config, now time.Time, flows []peerFlow, wrap func(exporter.MessageWriter) exporter.MessageWriter) (exporter.CollectorStats, exporter.ExportStats) {
	t.Helper()
	tr, err := exporter.NewStreamTransport(exporter.StreamConfig{Address: addr, TLS: tc, DialTimeout: 5 * time.Second,
		Backoff: exporter.Backoff{Min: 50 * time.Millisecond, Max: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	var w exporter.MessageWriter = tr
	if wrap != nil {
		w = wrap(tr)
	}
	enc := peerSink(t, templates.IPFIX, w, now, -1).(*exporter.IPFIX)
	tr.SetOnConnect(func() { enc.WriteTemplates() })
	c, err := exporter.NewCollector(exporter.CollectorConfig{Name: addr, Sink: enc, Transport: tr, DrainTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = c.Close()
		}
	})
	efs := exporterFlows(flows)
	half := len(efs) / 2
	for _, batch := range [][]exporter.Flow{efs[:half], efs[half:]} {
		if err := c.Export(batch); err != nil {
			t.Fatalf("export: %v", err)
		}
	}
	err = c.Close()
	closed = true
	cs := c.Stats()
	if err != nil {
		t.Logf("collector close: %v", err)
	}
	return cs, enc.Stats()
}
