package integration

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/exporter"
	"github.com/hostflow/hostflow/internal/testutil"
	"github.com/hostflow/hostflow/templates"
)

// fateRecord is one router-mode flow record as a real collector decoded
// it: tshark for IPFIX, nfdump for NetFlow v9.
type fateRecord struct {
	proto          int
	src, dst       string
	sport, dport   int
	icmpType       int // -1 if not ICMP
	packets, bytes uint64
	in, out        int
	nextHop        string // "" when absent or zero
	status         int    // forwardingStatus, the whole byte
	// droppedPacketDeltaCount (133) and droppedOctetDeltaCount (132),
	// IPFIX only, when the layout has them (hasDropped).
	droppedPackets, droppedBytes uint64
	hasDropped                   bool
}

func (r fateRecord) String() string {
	s := fmt.Sprintf("proto %d %s:%d -> %s:%d icmp %d pkts %d bytes %d in %d out %d nh %q fwd %d",
		r.proto, r.src, r.sport, r.dst, r.dport, r.icmpType, r.packets, r.bytes, r.in, r.out, r.nextHop, r.status)
	if r.hasDropped {
		s += fmt.Sprintf(" dropped pkts %d bytes %d", r.droppedPackets, r.droppedBytes)
	}
	return s
}

// tsharkRecords decodes the IPFIX messages msgs (sent to port) with
// Wireshark's cflow dissector and returns every data record of a flow
// template. Wireshark splits forwardingStatus into the status (the two
// high bits, cflow.forwarding_status) and the reason code (the six low
// bits, in the field of that status); fwd is both put together again.
func tsharkRecords(t *testing.T, msgs [][]byte, port uint16) []fateRecord {
	t.Helper()
	tshark := testutil.RequireTool(t, "tshark")
	pcap := testutil.WriteUDPPcap(t, msgs, netip.MustParseAddrPort("127.0.0.1:40000"),
		netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port), time.Unix(0, 0))
	cmd := exec.Command(tshark, "-r", pcap, "-d", "udp.port=="+strconv.Itoa(int(port))+",cflow", "-Y", "cflow",
		"-T", "json", "--no-duplicate-keys", "-O", "cflow")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	o, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, stderr.String())
	}
	out := string(o)
	recs, err := parseTsharkRecords(out)
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	return recs
}

// parseTsharkRecords reads `tshark -T json --no-duplicate-keys -O cflow`:
// each flow record is an object of "cflow.*" fields inside a flowset's
// "Flow N" objects.
func parseTsharkRecords(out string) ([]fateRecord, error) {
	var pkts []struct {
		Source struct {
			Layers map[string]json.RawMessage `json:"layers"`
		} `json:"_source"`
	}
	if err := json.Unmarshal([]byte(out), &pkts); err != nil {
		return nil, fmt.Errorf("parse json: %w", err)
	}
	var recs []fateRecord
	for _, p := range pkts {
		raw, ok := p.Source.Layers["cflow"]
		if !ok {
			continue
		}
		var tree any
		if err := json.Unmarshal(raw, &tree); err != nil {
			return nil, fmt.Errorf("parse cflow layer: %w", err)
		}
		var walk func(name string, v any) error
		walk = func(name string, v any) error {
			switch x := v.(type) {
			case []any:
				for _, e := range x {
					if err := walk(name, e); err != nil {
						return err
					}
				}
			case map[string]any:
				if strings.HasPrefix(name, "Flow ") {
					r, ok, err := tsharkRecord(x)
					if err != nil {
						return fmt.Errorf("%s: %w", name, err)
					}
					if ok {
						recs = append(recs, r)
					}
					return nil
				}
				for k, e := range x {
					if err := walk(k, e); err != nil {
						return err
					}
				}
			}
			return nil
		}
		if err := walk("", tree); err != nil {
			return nil, err
		}
	}
	return recs, nil
}

// tsharkRecord reads one "Flow N" object; ok is false for a record
// without addresses (an options record, e.g. the interface table). Fields
// may sit in sub-trees (e.g. forwardingStatus's reason under the status);
// they are collected flat, first occurrence wins.
func tsharkRecord(obj map[string]any) (r fateRecord, ok bool, err error) {
	f := map[string]string{}
	var flat func(m map[string]any)
	flat = func(m map[string]any) {
		for k, v := range m {
			switch x := v.(type) {
			case string:
				if _, ok := f[k]; !ok {
					f[k] = x
				}
			case map[string]any:
				flat(x)
			case []any:
				if len(x) > 0 {
					if s, ok := x[0].(string); ok {
						if _, ok := f[k]; !ok {
							f[k] = s
						}
					}
				}
			}
		}
	}
	flat(obj)
	num := func(key string) (uint64, error) {
		s, ok := f[key]
		if !ok {
			return 0, nil
		}
		return strconv.ParseUint(s, 0, 64)
	}
	get := func(key string) int {
		v, e := num(key)
		if e != nil && err == nil {
			err = fmt.Errorf("%s %q: %w", key, f[key], e)
		}
		return int(v)
	}
	r.proto = get("cflow.protocol")
	r.src, r.dst = f["cflow.srcaddr"], f["cflow.dstaddr"]
	if r.src == "" {
		r.src, r.dst = f["cflow.srcaddrv6"], f["cflow.dstaddrv6"]
	}
	if r.src == "" {
		return r, false, nil
	}
	r.sport, r.dport = get("cflow.srcport"), get("cflow.dstport")
	r.icmpType = -1
	if r.proto == 1 || r.proto == 58 {
		// icmpTypeCodeIPv4 (32) is type << 8 | code; Wireshark splits
		// icmpTypeCodeIPv6 (139) into type and code.
		r.icmpType = get("cflow.icmp_type_code_ipv4") >> 8
		if _, ok := f["cflow.icmp_ipv6_type"]; ok {
			r.icmpType = get("cflow.icmp_ipv6_type")
		}
	}
	r.packets, r.bytes = uint64(get("cflow.packets")), uint64(get("cflow.octets"))
	r.in, r.out = get("cflow.inputint"), get("cflow.outputint")
	r.nextHop = f["cflow.nexthop"]
	if r.nextHop == "" {
		r.nextHop = f["cflow.nexthopv6"]
	}
	if r.nextHop == "0.0.0.0" || r.nextHop == "::" {
		r.nextHop = ""
	}
	// cflow.forwarding_status is the status (0-3) alone; the reason
	// code is the field of that status.
	st := get("cflow.forwarding_status")
	code := 0
	for _, k := range []string{"cflow.forwarding_status_unknown_code", "cflow.forwarding_status_forward_code",
		"cflow.forwarding_status_drop_code", "cflow.forwarding_status_consume_code"} {
		if _, ok := f[k]; ok {
			code = get(k)
		}
	}
	r.status = st<<6 | code
	// Wireshark names 133 and 132 "Dropped Packets" and "Dropped Octets"
	// (134/135, the total counts, are drop_total_*).
	_, p := f["cflow.drop_packets"]
	_, o := f["cflow.drop_octets"]
	if r.hasDropped = p || o; r.hasDropped {
		r.droppedPackets, r.droppedBytes = uint64(get("cflow.drop_packets")), uint64(get("cflow.drop_octets"))
	}
	return r, err == nil, err
}

// nfdumpFateRecords reads `nfdump -o json` of router-mode records.
func nfdumpFateRecords(t *testing.T, file string) []fateRecord {
	t.Helper()
	out := sh(t, "nfdump", "-r", file, "-o", "json")
	var recs []nfRouterRecord
	if err := json.Unmarshal([]byte(out), &recs); err != nil {
		t.Fatalf("parse nfdump json: %v\n%s", err, out)
	}
	var got []fateRecord
	for _, r := range recs {
		r.normalize()
		f := fateRecord{proto: r.Proto, src: r.SrcAddress, dst: r.DstAddress, sport: r.SrcPort, dport: r.DstPort, icmpType: -1,
			packets: r.Packets, bytes: r.Bytes, status: r.FwdStatus}
		if r.ICMPType != nil && (r.Proto == 1 || r.Proto == 58) {
			f.icmpType, f.sport, f.dport = *r.ICMPType, 0, 0
		}
		if r.Input != nil {
			f.in = *r.Input
		}
		if r.Output != nil {
			f.out = *r.Output
		}
		f.nextHop = r.NextHop4
		if strings.Contains(f.src, ":") {
			f.nextHop = r.NextHop6
		}
		if f.nextHop == "0.0.0.0" || f.nextHop == "::" {
			f.nextHop = ""
		}
		got = append(got, f)
	}
	return got
}

// TestTsharkRouterRecords checks the IPFIX decoding the fate test relies
// on: router records encoded by hostflow's IPFIX encoder with known
// forwardingStatus codes (forwarded, each kind of drop, consumed) come
// back from tshark with the same whole status byte, counts, interfaces and
// next hop.
func TestTsharkRouterRecords(t *testing.T) {
	testutil.RequireTool(t, "tshark")
	now := time.Now().Truncate(time.Second)
	mk := func(src, dst string, sport, dport uint16, proto, icmpType uint8, pk uint64, out uint32, nh string, st uint8) exporter.Flow {
		s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
		k := bpf.NetFlowId{SrcIp: bpf.IPAddrFrom(s), DstIp: bpf.IPAddrFrom(d), IfIndex: 7, EthProtocol: 0x0800,
			SrcPort: sport, DstPort: dport, TransportProtocol: proto, IcmpType: icmpType, Direction: bpf.DirectionIngress}
		if s.Is6() {
			k.EthProtocol = 0x86dd
		}
		f := exporter.Flow{Key: exporter.KeyOf(k), Packets: pk, Bytes: pk * 100, Start: now.Add(-time.Second), End: now,
			EgressIfIndex: out, ForwardingStatus: st, SrcPrefixLen: 24, DstPrefixLen: 25}
		if nh != "" {
			f.NextHop = netip.MustParseAddr(nh)
		}
		return f
	}
	flows := []exporter.Flow{
		mk(clientV4, serverV4, 40000, 5001, 17, 0, 3, 9, serverV4, 64),
		mk(clientV4, serverV4, 40001, 5002, 17, 0, 4, 0, "", 130),
		mk(clientV4, serverV4, 40002, 5003, 17, 0, 5, 0, "", 137),
		mk(clientV4, "198.19.99.1", 40003, 9, 17, 0, 6, 0, "", 131),
		mk("198.19.20.77", serverV4, 40004, 5004, 17, 0, 7, 0, "", 140),
		mk(clientV4, routerCV4, 0, 0, 1, 8, 8, 0, "", 195),
		mk(clientV6, serverV6, 40005, 5005, 17, 0, 9, 9, serverV6, 64),
		mk(clientV6, "fd00:98::1", 40006, 9, 17, 0, 10, 0, "", 131),
		mk(clientV6, routerCV6, 0, 0, 58, 128, 11, 0, "", 192),
	}
	var msgs [][]byte
	e, err := exporter.NewIPFIX(exporter.IPFIXConfig{Writer: exporter.MessageWriterFunc(func(m []byte) error {
		msgs = append(msgs, append([]byte(nil), m...))
		return nil
	}), Templates: templates.RouterSet(templates.IPFIX)})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Export(flows); err != nil {
		t.Fatal(err)
	}
	e.Close()
	recs := tsharkRecords(t, msgs, 4739)
	if len(recs) != len(flows) {
		t.Fatalf("tshark decoded %d records, want %d: %v", len(recs), len(flows), recs)
	}
	for _, f := range flows {
		want := fateRecord{proto: int(f.Key.Proto), src: f.Key.Src.String(), dst: f.Key.Dst.String(),
			sport: int(f.Key.SrcPort), dport: int(f.Key.DstPort), icmpType: -1, packets: f.Packets, bytes: f.Bytes,
			in: 7, out: int(f.EgressIfIndex), status: int(f.ForwardingStatus)}
		if f.NextHop.IsValid() {
			want.nextHop = f.NextHop.String()
		}
		if want.proto == 1 || want.proto == 58 {
			want.icmpType = int(f.Key.ICMPType)
		}
		found := false
		for _, r := range recs {
			if r == want {
				found = true
			}
		}
		if !found {
			t.Errorf("no tshark record %v in %v", want, recs)
		}
	}
}
