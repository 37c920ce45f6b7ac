package exporter

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/templates"
)

// FuzzNetFlow9Encode encodes one arbitrary flow, decodes it with goflow2
// and requires the values RFC 3954 says.
func FuzzNetFlow9Encode(f *testing.F) {
	f.Add([]byte{192, 0, 2, 1}, []byte{198, 51, 100, 7}, true, uint8(0), uint16(40000), uint16(443), uint8(6), uint8(0), uint8(0),
		uint32(2), uint16(0), uint64(12), uint64(3456), int64(1714564800000), int64(1714564830000), uint16(0x1b))
	f.Add([]byte{0x20, 0x01, 0x0d, 0xb8, 15: 1}, []byte{0xff, 0x02, 15: 1}, false, uint8(1), uint16(0), uint16(0), uint8(58), uint8(135), uint8(0),
		uint32(5), uint16(4094), uint64(1), uint64(72), int64(0), int64(-5), uint16(0))
	f.Add([]byte{}, []byte{1}, true, uint8(0xff), uint16(1), uint16(2), uint8(1), uint8(8), uint8(0),
		uint32(math.MaxUint32), uint16(math.MaxUint16), uint64(math.MaxUint64), uint64(0), int64(math.MinInt64/2), int64(math.MaxInt64/2), uint16(math.MaxUint16))
	f.Fuzz(func(t *testing.T, src, dst []byte, ipv4 bool, dir uint8, sport, dport uint16, proto, icmpType, icmpCode uint8,
		ifindex uint32, vlan uint16, packets, octets uint64, startMs, endMs int64, flags uint16) {
		var k bpf.NetFlowId
		if ipv4 {
			k.EthProtocol = 0x0800
			var s4, d4 [4]byte
			copy(s4[:], src)
			copy(d4[:], dst)
			k.SrcIp, k.DstIp = netip.AddrFrom4(s4).As16(), netip.AddrFrom4(d4).As16()
		} else {
			k.EthProtocol = 0x86dd
			copy(k.SrcIp[:], src)
			copy(k.DstIp[:], dst)
		}
		k.Direction, k.SrcPort, k.DstPort, k.TransportProtocol = dir, sport, dport, proto
		k.IcmpType, k.IcmpCode, k.IfIndex, k.VlanId = icmpType, icmpCode, ifindex, vlan
		fl := Flow{Key: KeyOf(k), Packets: packets, Bytes: octets, Start: time.UnixMilli(startMs), End: time.UnixMilli(endMs), TCPFlags: flags}
		w := &captureWriter{}
		e, _ := newTestNetFlow9(t, w, 0, nil)
		if err := e.Export([]Flow{fl}); err != nil {
			t.Fatal(err)
		}
		if err := checkFramingV9(w.msgs[0]); err != nil {
			t.Fatal(err)
		}
		recs := gfFlows(gfDecodeAll(t, w.msgs))
		if len(recs) != 1 {
			t.Fatalf("%d records, want 1", len(recs))
		}
		checkV9Record(t, recs[0], &fl, v9BootMillis)
	})
}

// BenchmarkNetFlow9Encode encodes batches of 256 flows of all templates
// into 1400-byte packets for a writer that discards them.
func BenchmarkNetFlow9Encode(b *testing.B) {
	flows := randomFlows(256, 2)
	e, _ := newTestNetFlow9(b, MessageWriterFunc(func([]byte) error { return nil }), 0, nil)
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

// TestNetFlow9UptimeMonotonic steps the wall clock back between two
// exports: sysUptime keeps counting on the monotonic clock, unix_secs
// follows the wall clock, and FIRST/LAST_SWITCHED stay consistent with
// both, so a collector still places the flows at their wall times.
func TestNetFlow9UptimeMonotonic(t *testing.T) {
	w := &captureWriter{}
	clk := newFakeClock()
	e, err := NewNetFlow9(NetFlow9Config{Writer: w, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	c := newGFCollector()
	for _, s := range []struct {
		name       string
		wallStep   time.Duration
		monoStep   time.Duration
		wantUptime uint32
	}{
		{"start", 0, 10 * time.Second, 10_000},
		{"wall back an hour", -time.Hour, 5 * time.Second, 15_000},
		{"wall forward a day", 24 * time.Hour, time.Second, 16_000},
	} {
		clk.epoch = clk.epoch.Add(s.wallStep)
		clk.advance(s.monoStep)
		now := clk.Now()
		f := testFlow(flowKey("198.18.0.1", "198.18.0.2", 1000, 2000, 17, 0, 2), 1, 100, 0, 0)
		f.Start, f.End = now.Add(-3*time.Second), now.Add(-time.Second)
		w.msgs = nil
		if err := e.Export([]Flow{f}); err != nil {
			t.Fatal(err)
		}
		m, err := c.decode(w.msgs[0])
		if err != nil {
			t.Fatal(err)
		}
		if m.Uptime != s.wantUptime || m.UnixSecs != uint32(now.Unix()) {
			t.Errorf("%s: sysUptime %d unix_secs %d, want %d and %d", s.name, m.Uptime, m.UnixSecs, s.wantUptime, now.Unix())
		}
		if len(m.Flows) != 1 {
			t.Fatalf("%s: %d flows", s.name, len(m.Flows))
		}
		first := binary.BigEndian.Uint32(m.Flows[0].Values[templates.IEFlowStartSysUpTime])
		last := binary.BigEndian.Uint32(m.Flows[0].Values[templates.IEFlowEndSysUpTime])
		if first != s.wantUptime-3000 || last != s.wantUptime-1000 {
			t.Errorf("%s: FIRST_SWITCHED %d LAST_SWITCHED %d, want %d and %d", s.name, first, last, s.wantUptime-3000, s.wantUptime-1000)
		}
	}
}

// TestTemplateRefreshOff: with both refreshes off (a TCP or TLS stream),
// templates go in the first message only (a stream transport's OnConnect
// hook writes them on each new connection), however much time and how
// many messages pass.
func TestTemplateRefreshOff(t *testing.T) {
	for _, proto := range []templates.ExportProtocol{templates.IPFIX, templates.NetFlowV9} {
		t.Run(proto.String(), func(t *testing.T) {
			w := &captureWriter{}
			clk := &ipfixClock{testEpoch}
			var e interface {
				Export([]Flow) error
			}
			var err error
			if proto == templates.NetFlowV9 {
				e, err = NewNetFlow9(NetFlow9Config{Writer: w, Now: clk.Now, TemplateRefresh: -1, TemplateRefreshMessages: -1})
			} else {
				e, err = NewIPFIX(IPFIXConfig{Writer: w, Now: clk.Now, TemplateRefresh: -1, TemplateRefreshMessages: -1})
			}
			if err != nil {
				t.Fatal(err)
			}
			c := newGFCollector()
			var with []int
			for i := range 60 {
				w.msgs = nil
				if err := e.Export(sampleFlows()[:2]); err != nil {
					t.Fatal(err)
				}
				m, err := c.decode(w.msgs[0])
				if err != nil {
					t.Fatal(err)
				}
				if len(m.Templates) > 0 {
					with = append(with, i)
				}
				clk.Advance(time.Hour)
			}
			if len(with) != 1 || with[0] != 0 {
				t.Errorf("templates in exports %v, want [0]", with)
			}
		})
	}
}

// TestWriteTemplatesInsideWriter calls WriteTemplates from inside the
// writer, as a stream transport's hook does when a write reconnects: the
// templates go first and the sequence numbers stay right (IPFIX counts
// data records, v9 packets).
func TestWriteTemplatesInsideWriter(t *testing.T) {
	for _, proto := range []templates.ExportProtocol{templates.IPFIX, templates.NetFlowV9} {
		t.Run(proto.String(), func(t *testing.T) {
			var msgs [][]byte
			var e interface {
				Export([]Flow) error
				WriteTemplates() error
			}
			writes := 0
			w := MessageWriterFunc(func(b []byte) error {
				writes++
				if writes == 2 { // a reconnect in the second write
					if err := e.WriteTemplates(); err != nil {
						t.Fatal(err)
					}
				}
				msgs = append(msgs, append([]byte(nil), b...))
				return nil
			})
			var err error
			if proto == templates.NetFlowV9 {
				e, err = NewNetFlow9(NetFlow9Config{Writer: w, TemplateRefresh: -1, TemplateRefreshMessages: -1})
			} else {
				e, err = NewIPFIX(IPFIXConfig{Writer: w, TemplateRefresh: -1, TemplateRefreshMessages: -1})
			}
			if err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if err := e.Export(sampleFlows()[:2]); err != nil {
					t.Fatal(err)
				}
			}
			c := newGFCollector()
			var got []string
			for _, m := range msgs {
				d, err := c.decode(m)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, fmt.Sprintf("t%d f%d s%d", len(d.Templates), len(d.Flows), d.Seq))
			}
			want := []string{"t8 f2 s0", "t8 f0 s2", "t0 f2 s2"}
			if proto == templates.NetFlowV9 {
				want = []string{"t8 f2 s0", "t8 f0 s1", "t0 f2 s2"}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("messages %v, want %v", got, want)
			}
		})
	}
}
