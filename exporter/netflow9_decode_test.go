package exporter

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/netsampler/goflow2/v2/decoders/netflow"
)

// This file decodes IPFIX and NetFlow v9 with goflow2 v2's decoder, a
// collector's code that shares nothing with the encoder: framing,
// templates, options templates and padding are all goflow2's. The values
// come back as raw bytes by field type; the tests compare them with values
// derived from the flows by hand (wantV9).

// gfRecord is one data or options data record: raw values by field type,
// scope values under their own map.
type gfRecord struct {
	TemplateID uint16
	Values     map[uint16][]byte
	Scope      map[uint16][]byte
}

type gfMsg struct {
	Version, Count                  uint16
	Uptime, UnixSecs, Seq, SourceID uint32
	Templates, OptionTemplates      []uint16
	Flows, Options                  []gfRecord
	FlowSets                        int
}

// gfCollector keeps templates across messages.
type gfCollector struct {
	ts netflow.NetFlowTemplateSystem
}

func newGFCollector() *gfCollector {
	return &gfCollector{ts: netflow.CreateTemplateSystem()}
}

func (c *gfCollector) decode(msg []byte) (gfMsg, error) {
	var m gfMsg
	var v9 netflow.NFv9Packet
	var ipfix netflow.IPFIXPacket
	if err := netflow.DecodeMessageVersion(bytes.NewBuffer(msg), c.ts, &v9, &ipfix); err != nil {
		return m, err
	}
	var sets []any
	m.Version = binary.BigEndian.Uint16(msg)
	switch m.Version {
	case 9:
		m.Count, m.Uptime, m.UnixSecs, m.Seq, m.SourceID = v9.Count, v9.SystemUptime, v9.UnixSeconds, v9.SequenceNumber, v9.SourceId
		sets = v9.FlowSets
	case 10:
		m.UnixSecs, m.Seq, m.SourceID = ipfix.ExportTime, ipfix.SequenceNumber, ipfix.ObservationDomainId
		sets = ipfix.FlowSets
	}
	vals := func(fs []netflow.DataField) map[uint16][]byte {
		out := map[uint16][]byte{}
		for _, f := range fs {
			b, ok := f.Value.([]byte)
			if !ok {
				continue
			}
			out[f.Type] = b
		}
		return out
	}
	for _, s := range sets {
		m.FlowSets++
		switch s := s.(type) {
		case netflow.TemplateFlowSet:
			for _, r := range s.Records {
				m.Templates = append(m.Templates, r.TemplateId)
			}
		case netflow.NFv9OptionsTemplateFlowSet:
			for _, r := range s.Records {
				m.OptionTemplates = append(m.OptionTemplates, r.TemplateId)
			}
		case netflow.IPFIXOptionsTemplateFlowSet:
			for _, r := range s.Records {
				m.OptionTemplates = append(m.OptionTemplates, r.TemplateId)
			}
		case netflow.DataFlowSet:
			for _, r := range s.Records {
				m.Flows = append(m.Flows, gfRecord{TemplateID: s.Id, Values: vals(r.Values)})
			}
		case netflow.OptionsDataFlowSet:
			for _, r := range s.Records {
				m.Options = append(m.Options, gfRecord{TemplateID: s.Id, Values: vals(r.OptionsValues), Scope: vals(r.ScopesValues)})
			}
		default:
			return m, fmt.Errorf("flowset %d: undecoded %T", m.FlowSets, s)
		}
	}
	return m, nil
}

// gfDecodeAll decodes msgs in order with one collector.
func gfDecodeAll(t testing.TB, msgs [][]byte) []gfMsg {
	t.Helper()
	c := newGFCollector()
	out := make([]gfMsg, 0, len(msgs))
	for i, msg := range msgs {
		m, err := c.decode(msg)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		out = append(out, m)
	}
	return out
}

func gfFlows(msgs []gfMsg) []gfRecord {
	var out []gfRecord
	for _, m := range msgs {
		out = append(out, m.Flows...)
	}
	return out
}

// checkFramingV9 walks a v9 packet's flowsets strictly, apart from
// goflow2, which tolerates what RFC 3954 forbids: every flowset length a
// multiple of 4 (section 5.3 padding) and the flowsets ending exactly at
// the end of the packet.
func checkFramingV9(msg []byte) error {
	if len(msg) < 20 {
		return fmt.Errorf("packet of %d bytes", len(msg))
	}
	rest := msg[20:]
	for len(rest) > 0 {
		if len(rest) < 4 {
			return fmt.Errorf("%d stray bytes", len(rest))
		}
		id, n := binary.BigEndian.Uint16(rest), int(binary.BigEndian.Uint16(rest[2:]))
		if n < 4 || n > len(rest) || n%4 != 0 {
			return fmt.Errorf("flowset %d: length %d, %d bytes left", id, n, len(rest))
		}
		rest = rest[n:]
	}
	return nil
}

// wantV9 is what a collector should decode for f from a v9 record, by
// field type, written from RFC 3954 rather than from the encoder. start is
// the exporter's sysUptime 0 in Unix ms.
func wantV9(f *Flow, start int64) (template uint16, vals map[uint16][]byte) {
	k := &f.Key
	be := binary.BigEndian
	u16 := func(v uint16) []byte { return be.AppendUint16(nil, v) }
	u32 := func(v uint32) []byte { return be.AppendUint32(nil, v) }
	u64 := func(v uint64) []byte { return be.AppendUint64(nil, v) }
	up := func(ms int64) []byte {
		if ms < start {
			return u32(0)
		}
		return u32(uint32(ms - start))
	}
	template = 256
	v4 := k.EtherType() == 0x0800
	if !v4 {
		template += 2
	}
	if k.Direction == 1 {
		template++
	}
	icmp := (v4 && k.Proto == 1) || (!v4 && k.Proto == 58)
	vals = map[uint16][]byte{
		4: {k.Proto}, 5: {k.TOS},
		6: {byte(f.TCPFlags)}, 1: u64(f.Bytes), 2: u64(f.Packets),
		22: up(f.Start.UnixMilli()), 21: up(f.End.UnixMilli()),
		61: {k.Direction}, 58: u16(k.VLAN),
	}
	// Transport records have the ports, ICMP ones ICMP_TYPE.
	if icmp {
		template += 4
		vals[32] = []byte{k.ICMPType, k.ICMPCode}
	} else {
		vals[7], vals[11] = u16(k.SrcPort), u16(k.DstPort)
	}
	if k.Direction == 1 {
		vals[14] = u32(k.IfIndex)
	} else {
		vals[10] = u32(k.IfIndex)
	}
	if v4 {
		vals[8], vals[12] = bytes4(k.Src), bytes4(k.Dst)
	} else {
		vals[27], vals[28] = bytes16(k.Src), bytes16(k.Dst)
	}
	return template, vals
}

func checkV9Record(t testing.TB, got gfRecord, f *Flow, start int64) {
	t.Helper()
	id, want := wantV9(f, start)
	if got.TemplateID != id {
		t.Errorf("flow %v: template %d, want %d", f.Key, got.TemplateID, id)
		return
	}
	if len(got.Values) != len(want) {
		t.Errorf("flow %v: %d fields, want %d", f.Key, len(got.Values), len(want))
	}
	for typ, w := range want {
		if g, ok := got.Values[typ]; !ok || !bytes.Equal(g, w) {
			t.Errorf("flow %v: field %d = %x, want %x", f.Key, typ, g, w)
		}
	}
}
