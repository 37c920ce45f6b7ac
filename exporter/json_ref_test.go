package exporter

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

// refJSONFlow is the JSON line as encoding/json writes it from a struct:
// the reference appendJSON must match byte for byte.
type refJSONFlow struct {
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
	TOS       uint8  `json:"tos"`
	Packets   uint64 `json:"packets"`
	Bytes     uint64 `json:"bytes"`
	Start     string `json:"start"`
	End       string `json:"end"`
	TCPFlags  uint16 `json:"tcp_flags"`
	EndReason string `json:"end_reason"`
	Sampling  uint32 `json:"sampling,omitempty"`
	// Router mode, only with a forwarding status.
	ForwardingStatus uint8  `json:"forwarding_status,omitempty"`
	Fate             string `json:"fate,omitempty"`
	EgressIfIndex    uint32 `json:"egress_ifindex,omitempty"`
	NextHop          string `json:"next_hop,omitempty"`
}

func refJSON(t *testing.T, f *Flow, ifname string) []byte {
	t.Helper()
	k := &f.Key
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	r := refJSONFlow{
		Src: k.Src.String(), Dst: k.Dst.String(), SrcPort: k.SrcPort, DstPort: k.DstPort,
		Proto: k.Proto, EtherType: k.EtherType(), IfIndex: k.IfIndex, IfName: ifname, Direction: directionName(k.Direction),
		VLAN: k.VLAN, ICMPType: k.ICMPType, ICMPCode: k.ICMPCode, TOS: k.TOS, Packets: f.Packets, Bytes: f.Bytes,
		Start: f.Start.UTC().Format(jsonTimeLayout), End: f.End.UTC().Format(jsonTimeLayout),
		TCPFlags: f.TCPFlags, EndReason: f.EndReason.String(), Sampling: samplingOf(f.SamplingInterval),
	}
	if f.ForwardingStatus != 0 {
		r.ForwardingStatus = f.ForwardingStatus
		r.Fate = map[uint8]string{1: "forwarded", 2: "dropped", 3: "consumed"}[f.ForwardingStatus>>6]
		r.EgressIfIndex = f.EgressIfIndex
		if f.NextHop.IsValid() {
			r.NextHop = f.NextHop.String()
		}
	}
	if err := enc.Encode(r); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// appendJSON writes what encoding/json writes, for the sample flows and
// random ones: every field at its extremes, sampled or not, any direction
// and end reason, times in other zones.
func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	flows := sampleFlows()
	rng := rand.New(rand.NewPCG(3, 4))
	zone := time.FixedZone("X", -7*3600)
	for range 2000 {
		f := flows[rng.IntN(len(flows))]
		k := &f.Key
		if rng.IntN(2) == 0 {
			var a [16]byte
			for i := range a {
				a[i] = uint8(rng.Uint32())
			}
			k.Src = netip.AddrFrom16(a)
		}
		k.SrcPort, k.DstPort, k.VLAN = uint16(rng.Uint32()), uint16(rng.Uint32()), uint16(rng.Uint32())
		k.IfIndex, k.Proto, k.Direction = rng.Uint32(), uint8(rng.Uint32()), uint8(rng.IntN(3))
		k.ICMPType, k.ICMPCode, k.TOS = uint8(rng.Uint32()), uint8(rng.Uint32()), uint8(rng.Uint32())
		f.Packets, f.Bytes = rng.Uint64(), rng.Uint64()>>uint(rng.IntN(64))
		f.TCPFlags = uint16(rng.Uint32())
		f.EndReason = EndReason(rng.IntN(7))
		f.SamplingInterval = []uint32{0, 1, 2, 1 << 31}[rng.IntN(4)]
		f.ForwardingStatus = []uint8{0, 0, 64, 131, 192, 195, 255}[rng.IntN(7)]
		f.EgressIfIndex = []uint32{0, 3, 1<<32 - 1}[rng.IntN(3)]
		f.NextHop = []netip.Addr{{}, netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("fd00::2")}[rng.IntN(3)]
		f.Start = time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)).In(zone)
		f.End = f.Start.Add(time.Duration(rng.Int64N(int64(time.Hour))))
		flows = append(flows, f)
	}
	// Interface names: plain, empty, and every byte the kernel allows
	// in one (all but '/', ':', white space and NUL) with what
	// encoding/json escapes.
	names := []string{"eth0", "", "veth-a.10", "a\"b\\c", "<&>", "\x01\x1f\x7f", "\xff\xfe", "é\u2028\u2029"}
	for i := range flows {
		name := names[i%len(names)]
		got, want := appendJSON(nil, &flows[i], name, &jsonTimes{}), refJSON(t, &flows[i], name)
		if !bytes.Equal(got, want) {
			t.Fatalf("flow %d:\ngot  %s\nwant %s", i, got, want)
		}
	}
}

func TestJSONLinesExportAllocatesNothingPerFlow(t *testing.T) {
	s := NewJSONLines(discard{})
	flows := sampleFlows()
	allocs := testing.AllocsPerRun(100, func() {
		if err := s.Export(flows); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Export of %d flows: %.1f allocations, want 0", len(flows), allocs)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
