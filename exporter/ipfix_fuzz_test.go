package exporter

import (
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/hostflow/hostflow/bpf"
)

func FuzzIPFIXEncode(f *testing.F) {
	f.Add([]byte{192, 0, 2, 1}, []byte{198, 51, 100, 7}, true, uint8(0), uint16(40000), uint16(443), uint8(6), uint8(0), uint8(0),
		uint32(2), uint16(0), uint64(12), uint64(3456), int64(1714564800000), int64(1714564830000), uint16(0x1b), uint8(3))
	f.Add([]byte{0x20, 0x01, 0x0d, 0xb8, 15: 1}, []byte{0xff, 0x02, 15: 1}, false, uint8(1), uint16(0), uint16(0), uint8(58), uint8(135), uint8(0),
		uint32(5), uint16(4094), uint64(1), uint64(72), int64(0), int64(-5), uint16(0), uint8(5))
	f.Add([]byte{}, []byte{1}, true, uint8(0xff), uint16(1), uint16(2), uint8(1), uint8(8), uint8(0),
		uint32(math.MaxUint32), uint16(math.MaxUint16), uint64(math.MaxUint64), uint64(0), int64(math.MinInt64), int64(math.MaxInt64), uint16(math.MaxUint16), uint8(0xff))
	f.Fuzz(func(t *testing.T, src, dst []byte, ipv4 bool, dir uint8, sport, dport uint16, proto, icmpType, icmpCode uint8,
		ifindex uint32, vlan uint16, packets, octets uint64, startMs, endMs int64, flags uint16, reason uint8) {
		var k bpf.NetFlowId
		if ipv4 {
			// IPv4 keys are mapped; the encoder takes the last 4 bytes.
			k.EthProtocol = 0x0800
			var s4, d4 [4]byte
			copy(s4[:], src)
			copy(d4[:], dst)
			k.SrcIp = netip.AddrFrom4(s4).As16()
			k.DstIp = netip.AddrFrom4(d4).As16()
		} else {
			k.EthProtocol = 0x86dd
			copy(k.SrcIp[:], src)
			copy(k.DstIp[:], dst)
		}
		k.Direction, k.SrcPort, k.DstPort, k.TransportProtocol = dir, sport, dport, proto
		k.IcmpType, k.IcmpCode, k.IfIndex, k.VlanId = icmpType, icmpCode, ifindex, vlan
		fl := Flow{
			Key: KeyOf(k), Packets: packets, Bytes: octets,
			Start: time.UnixMilli(startMs), End: time.UnixMilli(endMs),
			TCPFlags: flags, EndReason: EndReason(reason),
		}
		w := &captureWriter{}
		e := newTestIPFIX(t, w, &ipfixClock{testEpoch}, 0)
		if err := e.Export([]Flow{fl}); err != nil {
			t.Fatal(err)
		}
		recs := records(decodeAll(t, w.msgs))
		if len(recs) != 1 {
			t.Fatalf("%d records, want 1", len(recs))
		}
		checkRecord(t, recs[0], &fl)
	})
}

// BenchmarkIPFIXEncode encodes batches of 256 flows of all templates into
// 1400-byte messages for a writer that discards them.
func BenchmarkIPFIXEncode(b *testing.B) {
	flows := randomFlows(256, 2)
	e := newTestIPFIX(b, MessageWriterFunc(func([]byte) error { return nil }), &ipfixClock{testEpoch}, 0)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if err := e.Export(flows); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*len(flows)), "ns/record")
}
