package exporter

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/hostflow/hostflow/templates"
	"github.com/vmware/go-ipfix/pkg/entities"
	"github.com/vmware/go-ipfix/pkg/registry"
)

// This file is the independent side of the differential tests. The message
// and set framing (RFC 7011 sections 3.1-3.4) is walked here, strictly; the
// field semantics come from go-ipfix v0.17.0: each template field is looked
// up in go-ipfix's IANA registry by its element ID (so the name, data type
// and length are go-ipfix's, not ours) and each value is decoded by
// entities.DecodeAndCreateInfoElementWithValue, with the registry's length.
//
// go-ipfix's own message decoder (pkg/collector) is not usable for this: it
// is unexported except through a UDP/TCP server, and it assumes one set per
// message and one template record per template set, while this encoder
// packs several of both into each message.

var loadRegistry sync.Once

// collector keeps templates across messages, as a real collector does.
type collector struct {
	templates map[uint16][]*entities.InfoElement
}

func newCollector() *collector {
	loadRegistry.Do(registry.LoadRegistry)
	return &collector{templates: map[uint16][]*entities.InfoElement{}}
}

type decodedMsg struct {
	Version    uint16
	Length     uint16
	ExportTime uint32
	Seq        uint32
	Domain     uint32
	// Templates lists the template IDs defined in the message, in order.
	Templates []uint16
	Records   []decodedRecord
	Sets      int
	// Padding counts the padding octets at the end of data sets.
	Padding int
}

// decodedRecord holds the values of one data record by IANA element name.
type decodedRecord struct {
	TemplateID uint16
	Uints      map[string]uint64
	Addrs      map[string]netip.Addr
}

func (c *collector) decode(msg []byte) (decodedMsg, error) {
	var m decodedMsg
	be := binary.BigEndian
	if len(msg) < 16 {
		return m, fmt.Errorf("message of %d bytes, shorter than a header", len(msg))
	}
	m.Version = be.Uint16(msg[0:])
	m.Length = be.Uint16(msg[2:])
	m.ExportTime = be.Uint32(msg[4:])
	m.Seq = be.Uint32(msg[8:])
	m.Domain = be.Uint32(msg[12:])
	if m.Version != 10 {
		return m, fmt.Errorf("version %d", m.Version)
	}
	if int(m.Length) != len(msg) {
		return m, fmt.Errorf("header length %d, message %d bytes", m.Length, len(msg))
	}
	rest := msg[16:]
	for len(rest) > 0 {
		if len(rest) < 4 {
			return m, fmt.Errorf("%d stray bytes after the last set", len(rest))
		}
		id, n := be.Uint16(rest), int(be.Uint16(rest[2:]))
		if n < 4 || n > len(rest) {
			return m, fmt.Errorf("set %d length %d, %d bytes left", id, n, len(rest))
		}
		body := rest[4:n]
		rest = rest[n:]
		m.Sets++
		switch {
		case id == 2:
			ids, err := c.templateSet(body)
			if err != nil {
				return m, err
			}
			m.Templates = append(m.Templates, ids...)
		case id >= 256:
			recs, pad, err := c.dataSet(id, body)
			if err != nil {
				return m, err
			}
			m.Records = append(m.Records, recs...)
			m.Padding += pad
		default:
			return m, fmt.Errorf("unexpected set id %d", id)
		}
	}
	return m, nil
}

func (c *collector) templateSet(b []byte) ([]uint16, error) {
	be := binary.BigEndian
	var ids []uint16
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, fmt.Errorf("template set: %d stray bytes", len(b))
		}
		id, count := be.Uint16(b), int(be.Uint16(b[2:]))
		b = b[4:]
		if id < 256 {
			return nil, fmt.Errorf("template id %d", id)
		}
		if len(b) < 4*count {
			return nil, fmt.Errorf("template %d: %d fields in %d bytes", id, count, len(b))
		}
		ies := make([]*entities.InfoElement, count)
		for i := range count {
			eid, l := be.Uint16(b), be.Uint16(b[2:])
			b = b[4:]
			if eid&0x8000 != 0 {
				return nil, fmt.Errorf("template %d: enterprise element %d", id, eid&0x7fff)
			}
			ie, err := registry.GetInfoElementFromID(eid, registry.IANAEnterpriseID)
			if err != nil {
				return nil, fmt.Errorf("template %d: %w", id, err)
			}
			if ie.Len != l {
				return nil, fmt.Errorf("template %d: %s has length %d, registry says %d", id, ie.Name, l, ie.Len)
			}
			ies[i] = ie
		}
		c.templates[id] = ies
		ids = append(ids, id)
	}
	return ids, nil
}

// dataSet decodes the records of a data set and returns them with the
// number of padding octets after them. RFC 7011 section 3.3.1: padding
// is zero octets, shorter than a record, and a set holds at least one
// record.
func (c *collector) dataSet(id uint16, b []byte) ([]decodedRecord, int, error) {
	ies, ok := c.templates[id]
	if !ok {
		return nil, 0, fmt.Errorf("data set %d before its template", id)
	}
	recLen := 0
	for _, ie := range ies {
		recLen += int(ie.Len)
	}
	if recLen == 0 || len(b) < recLen {
		return nil, 0, fmt.Errorf("data set %d: %d bytes, no record of %d", id, len(b), recLen)
	}
	pad := len(b) % recLen
	for i, o := range b[len(b)-pad:] {
		if o != 0 {
			return nil, 0, fmt.Errorf("data set %d: padding octet %d of %d is %#x, not zero", id, i, pad, o)
		}
	}
	b = b[:len(b)-pad]
	var recs []decodedRecord
	for ; len(b) > 0; b = b[recLen:] {
		r := decodedRecord{TemplateID: id, Uints: map[string]uint64{}, Addrs: map[string]netip.Addr{}}
		off := 0
		for _, ie := range ies {
			v, err := entities.DecodeAndCreateInfoElementWithValue(ie, b[off:off+int(ie.Len)])
			if err != nil {
				return nil, 0, fmt.Errorf("data set %d: %s: %w", id, ie.Name, err)
			}
			off += int(ie.Len)
			switch ie.DataType {
			case entities.Ipv4Address, entities.Ipv6Address:
				a, ok := netip.AddrFromSlice(v.GetIPAddressValue())
				if !ok {
					return nil, 0, fmt.Errorf("data set %d: %s: bad address", id, ie.Name)
				}
				r.Addrs[ie.Name] = a
			case entities.Unsigned8:
				r.Uints[ie.Name] = uint64(v.GetUnsigned8Value())
			case entities.Unsigned16:
				r.Uints[ie.Name] = uint64(v.GetUnsigned16Value())
			case entities.Unsigned32:
				r.Uints[ie.Name] = uint64(v.GetUnsigned32Value())
			case entities.Unsigned64, entities.DateTimeMilliseconds:
				r.Uints[ie.Name] = v.GetUnsigned64Value()
			default:
				return nil, 0, fmt.Errorf("data set %d: %s: unexpected type %d", id, ie.Name, ie.DataType)
			}
		}
		recs = append(recs, r)
	}
	return recs, pad, nil
}

// decodeAll decodes msgs in order with one collector.
func decodeAll(t testing.TB, msgs [][]byte) []decodedMsg {
	t.Helper()
	c := newCollector()
	out := make([]decodedMsg, 0, len(msgs))
	for i, msg := range msgs {
		m, err := c.decode(msg)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		out = append(out, m)
	}
	return out
}

// wantRecord is what a collector should decode for f, by element name,
// derived from the flow here rather than from the encoder. It lists the
// elements of all templates; a record is checked only against the ones it
// carries.
func wantRecord(f *Flow) decodedRecord {
	k := &f.Key
	ms := func(tm int64) uint64 {
		if tm < 0 {
			return 0
		}
		return uint64(tm)
	}
	tc := func(proto uint8) uint64 {
		if k.Proto != proto {
			return 0
		}
		return uint64(k.ICMPType)<<8 | uint64(k.ICMPCode)
	}
	// Template: bit 0 egress, bit 1 IPv6, bit 2 ICMP (of the family).
	id := uint16(256)
	v4 := k.EtherType() == 0x0800
	if !v4 {
		id += 2
	}
	if k.Direction == 1 {
		id++
	}
	icmp := (v4 && k.Proto == 1) || (!v4 && k.Proto == 58)
	if icmp {
		id += 4
	}
	r := decodedRecord{
		TemplateID: id,
		Addrs: map[string]netip.Addr{
			"sourceIPv4Address":      netip.AddrFrom4([4]byte(bytes4(k.Src))),
			"destinationIPv4Address": netip.AddrFrom4([4]byte(bytes4(k.Dst))),
			"sourceIPv6Address":      netip.AddrFrom16(k.Src.As16()),
			"destinationIPv6Address": netip.AddrFrom16(k.Dst.As16()),
		},
		Uints: map[string]uint64{
			"sourceTransportPort":      uint64(k.SrcPort),
			"destinationTransportPort": uint64(k.DstPort),
			"protocolIdentifier":       uint64(k.Proto),
			"ipClassOfService":         uint64(k.TOS),
			"tcpControlBits":           uint64(f.TCPFlags),
			"octetDeltaCount":          f.Bytes,
			"packetDeltaCount":         f.Packets,
			"flowStartMilliseconds":    ms(f.Start.UnixMilli()),
			"flowEndMilliseconds":      ms(f.End.UnixMilli()),
			"flowDirection":            uint64(k.Direction),
			"ingressInterface":         uint64(k.IfIndex),
			"egressInterface":          uint64(k.IfIndex),
			"flowEndReason":            uint64(f.EndReason),
			"icmpTypeCodeIPv4":         tc(1),
			"icmpTypeCodeIPv6":         tc(58),
			"vlanId":                   uint64(k.VLAN),
		},
	}
	// Transport records have the ports, ICMP ones the type and code.
	if icmp {
		delete(r.Uints, "sourceTransportPort")
		delete(r.Uints, "destinationTransportPort")
	} else {
		delete(r.Uints, "icmpTypeCodeIPv4")
		delete(r.Uints, "icmpTypeCodeIPv6")
	}
	return r
}

// wantFieldCount is the number of elements in each default template:
// transport ones have two ports, ICMP ones one type and code.
func wantFieldCount(id uint16) int {
	if id >= templates.ICMPv4Ingress {
		return 14
	}
	return 15
}

// checkRecord compares a decoded record with the flow it came from, field by
// field.
func checkRecord(t testing.TB, got decodedRecord, f *Flow) {
	t.Helper()
	want := wantRecord(f)
	if got.TemplateID != want.TemplateID {
		t.Errorf("flow %v: template %d, want %d", f.Key, got.TemplateID, want.TemplateID)
		return
	}
	if n := len(got.Uints) + len(got.Addrs); n != wantFieldCount(want.TemplateID) {
		t.Errorf("flow %v: %d fields, want %d", f.Key, n, wantFieldCount(want.TemplateID))
	}
	for name, v := range got.Addrs {
		w, ok := want.Addrs[name]
		if !ok {
			t.Errorf("flow %v: unexpected element %s", f.Key, name)
		} else if v != w {
			t.Errorf("flow %v: %s = %v, want %v", f.Key, name, v, w)
		}
	}
	for name, v := range got.Uints {
		w, ok := want.Uints[name]
		if !ok {
			t.Errorf("flow %v: unexpected element %s", f.Key, name)
		} else if v != w {
			t.Errorf("flow %v: %s = %d, want %d", f.Key, name, v, w)
		}
	}
}

// records flattens the data records of msgs.
func records(msgs []decodedMsg) []decodedRecord {
	var out []decodedRecord
	for _, m := range msgs {
		out = append(out, m.Records...)
	}
	return out
}

// inWireOrder returns flows in the order Export puts them on the wire:
// grouped by template ID, input order within a template.
func inWireOrder(flows []Flow) []Flow {
	var out []Flow
	for id := uint16(256); id < 256+templates.NumTemplates; id++ {
		for i := range flows {
			if wantRecord(&flows[i]).TemplateID == id {
				out = append(out, flows[i])
			}
		}
	}
	return out
}
