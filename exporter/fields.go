package exporter

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
	"unicode/utf8"

	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/templates"
)

// The codec table. templates' element table gives each field its IPFIX
// and v9 ids and lengths and names the Value that fills it; flowValues
// below gives each Value its accessor, once. The encode function of every
// template, default, user (FromNames) or router layout alike, is compiled
// from the two when the exporter is made (compileTemplate): nothing else
// maps a field to a flow's value.

// accessor reads one templates.Value from a Flow.
type accessor struct {
	// uint returns an unsigned value; origin is the wall time in Unix
	// ms of v9 sysUptime 0 as of the message (encoder.msgOrigin). A
	// field of it takes 1, 2, 4 or 8 bytes (RFC 7011 section 6.2
	// reduced-size encoding: the low bytes of the value), or only size
	// bytes if size is set.
	uint func(f *Flow, origin int64) uint64
	// put writes a value that is no integer (an IPv6 address) into dst,
	// of exactly size bytes.
	put  func(dst []byte, f *Flow)
	size uint16
	// ifIndex marks an interface index, which Interfaces may renumber.
	ifIndex bool
	// ifName marks the name of the flow's interface: a fixed-length
	// string from Interfaces.
	ifName bool
}

// flowValues is the accessor of every flow Value. Every accessor writes all
// of a field's bytes, zeros for an unknown value: the record buffer is
// reused. Router values (router.Enricher fills them) are zero outside
// router mode.
var flowValues = [...]accessor{
	templates.SrcIPv4: {uint: func(f *Flow, _ int64) uint64 { return addr4(f.Key.Src) }, size: 4},
	templates.DstIPv4: {uint: func(f *Flow, _ int64) uint64 { return addr4(f.Key.Dst) }, size: 4},
	templates.SrcIPv6: {put: func(d []byte, f *Flow) { putKeyAddr16(d, f.Key.Src) }, size: 16},
	templates.DstIPv6: {put: func(d []byte, f *Flow) { putKeyAddr16(d, f.Key.Dst) }, size: 16},
	templates.SrcPort: {uint: func(f *Flow, _ int64) uint64 { return uint64(f.Key.SrcPort) }},
	templates.DstPort: {uint: func(f *Flow, _ int64) uint64 { return uint64(f.Key.DstPort) }},

	templates.Protocol:  {uint: func(f *Flow, _ int64) uint64 { return uint64(f.Key.Proto) }},
	templates.TCPFlags:  {uint: func(f *Flow, _ int64) uint64 { return uint64(f.TCPFlags) }},
	templates.Octets:    {uint: func(f *Flow, _ int64) uint64 { return f.Bytes }},
	templates.Packets:   {uint: func(f *Flow, _ int64) uint64 { return f.Packets }},
	templates.Direction: {uint: func(f *Flow, _ int64) uint64 { return uint64(f.Key.Direction) }},
	templates.Interface: {uint: func(f *Flow, _ int64) uint64 { return uint64(f.Key.IfIndex) }, ifIndex: true},
	templates.EndReason: {uint: func(f *Flow, _ int64) uint64 { return uint64(f.EndReason) }},
	templates.VLAN:      {uint: func(f *Flow, _ int64) uint64 { return uint64(f.Key.VLAN) }},
	templates.TOS:       {uint: func(f *Flow, _ int64) uint64 { return uint64(f.Key.TOS) }},
	templates.IPVersion: {uint: func(f *Flow, _ int64) uint64 { return ipVersion(&f.Key) }},

	templates.StartMillis: {uint: func(f *Flow, _ int64) uint64 { return epochMillis(f.Start) }, size: 8},
	templates.EndMillis:   {uint: func(f *Flow, _ int64) uint64 { return epochMillis(f.End) }, size: 8},
	templates.StartUptime: {uint: func(f *Flow, o int64) uint64 { return uint64(uptimeMillis(f.Start, o)) }, size: 4},
	templates.EndUptime:   {uint: func(f *Flow, o int64) uint64 { return uint64(uptimeMillis(f.End, o)) }, size: 4},

	templates.ICMPv4TypeCode: {uint: func(f *Flow, _ int64) uint64 { return uint64(icmpTypeCode(&f.Key, protoICMP)) }},
	templates.ICMPv6TypeCode: {uint: func(f *Flow, _ int64) uint64 { return uint64(icmpTypeCode(&f.Key, protoICMPv6)) }},
	templates.IfName:         {ifName: true},

	templates.NextHopIPv4:      {uint: func(f *Flow, _ int64) uint64 { return addr4(f.NextHop) }, size: 4},
	templates.NextHopIPv6:      {put: func(d []byte, f *Flow) { putAddr16(d, f.NextHop) }, size: 16},
	templates.PostNATSrcIPv4:   {uint: func(f *Flow, _ int64) uint64 { return addr4(f.PostNATSrc) }, size: 4},
	templates.PostNATDstIPv4:   {uint: func(f *Flow, _ int64) uint64 { return addr4(f.PostNATDst) }, size: 4},
	templates.PostNATSrcIPv6:   {put: func(d []byte, f *Flow) { putAddr16(d, f.PostNATSrc) }, size: 16},
	templates.PostNATDstIPv6:   {put: func(d []byte, f *Flow) { putAddr16(d, f.PostNATDst) }, size: 16},
	templates.SrcPrefixLen:     {uint: func(f *Flow, _ int64) uint64 { return uint64(f.SrcPrefixLen) }},
	templates.DstPrefixLen:     {uint: func(f *Flow, _ int64) uint64 { return uint64(f.DstPrefixLen) }},
	templates.ForwardingStatus: {uint: func(f *Flow, _ int64) uint64 { return uint64(f.ForwardingStatus) }},
	templates.PostNATSrcPort:   {uint: func(f *Flow, _ int64) uint64 { return uint64(f.PostNATSrcPort) }},
	templates.PostNATDstPort:   {uint: func(f *Flow, _ int64) uint64 { return uint64(f.PostNATDstPort) }},
	templates.InInterface:      {uint: func(f *Flow, _ int64) uint64 { return uint64(inInterface(f)) }, ifIndex: true},
	templates.OutInterface:     {uint: func(f *Flow, _ int64) uint64 { return uint64(outInterface(f)) }, ifIndex: true},
	templates.DroppedOctets:    {uint: func(f *Flow, _ int64) uint64 { return ifDropped(f, f.Bytes) }},
	templates.DroppedPackets:   {uint: func(f *Flow, _ int64) uint64 { return ifDropped(f, f.Packets) }},
}

func (a *accessor) defined() bool { return a.uint != nil || a.put != nil || a.ifName }

// compiledField is one field of a compiled template: either uint, whose
// value the record loop writes in end-off bytes, or put.
type compiledField struct {
	uint     func(f *Flow, origin int64) uint64
	put      func(dst []byte, f *Flow)
	off, end int
}

// compiledTemplate is a template with an encode function per field, chosen
// once so that encoding a record is a loop of calls, with no lookup.
type compiledTemplate struct {
	t      *templates.Template
	recLen int
	fields []compiledField
}

func compileTemplate(t *templates.Template, ifs *Interfaces) (compiledTemplate, error) {
	c := compiledTemplate{t: t, fields: make([]compiledField, len(t.Fields))}
	off := 0
	for i, f := range t.Fields {
		cf, err := compileField(f, ifs)
		if err != nil {
			return c, err
		}
		cf.off, cf.end = off, off+int(f.Length)
		c.fields[i] = cf
		off += int(f.Length)
	}
	c.recLen = off
	return c, nil
}

// compileField returns the encode function of field f from its accessor.
// ifs, which may be nil, names interfaces and renumbers their exported
// index.
func compileField(f templates.Field, ifs *Interfaces) (compiledField, error) {
	if int(f.Value) >= len(flowValues) || !flowValues[f.Value].defined() {
		return compiledField{}, fmt.Errorf("cannot encode %s (%d): no flow value %d", f.Name, f.ID, f.Value)
	}
	a := flowValues[f.Value]
	switch {
	case a.ifName:
		if f.Length == templates.VariableLength {
			return compiledField{}, fmt.Errorf("cannot encode %s (%d) variable-length", f.Name, f.ID)
		}
		return compiledField{put: func(d []byte, fl *Flow) { putName(d, ifs.Name(fl.Key.IfIndex)) }}, nil
	case a.size != 0 && f.Length != a.size:
		return compiledField{}, fmt.Errorf("cannot encode %s (%d) in %d bytes, only %d", f.Name, f.ID, f.Length, a.size)
	case a.put != nil:
		return compiledField{put: a.put}, nil
	}
	switch f.Length {
	case 1, 2, 4, 8:
	default:
		return compiledField{}, fmt.Errorf("cannot encode %s (%d) in %d bytes", f.Name, f.ID, f.Length)
	}
	get := a.uint
	if a.ifIndex && ifs.Overridden() {
		get = func(fl *Flow, o int64) uint64 { return uint64(ifs.Index(uint32(a.uint(fl, o)))) }
	}
	return compiledField{uint: get}, nil
}

// putRecord writes f as one record of c into rec, len(rec) == c.recLen.
func (c *compiledTemplate) putRecord(rec []byte, f *Flow, origin int64) {
	be := binary.BigEndian
	for i := range c.fields {
		cf := &c.fields[i]
		d := rec[cf.off:cf.end]
		if cf.uint == nil {
			cf.put(d, f)
			continue
		}
		v := cf.uint(f, origin)
		switch len(d) {
		case 1:
			d[0] = byte(v)
		case 2:
			be.PutUint16(d, uint16(v))
		case 4:
			be.PutUint32(d, uint32(v))
		default:
			be.PutUint64(d, v)
		}
	}
}

// addr4 is a as an IPv4 address field: an IPv4 (or IPv4-mapped) address,
// else 0.0.0.0 (unknown).
func addr4(a netip.Addr) uint64 {
	if a.Is4() || a.Is4In6() {
		b := a.As4()
		return uint64(binary.BigEndian.Uint32(b[:]))
	}
	return 0
}

// putKeyAddr16 writes a key address as 16 bytes: any valid address (an
// IPv4 one as ::ffff:a.b.c.d), else ::.
func putKeyAddr16(d []byte, a netip.Addr) {
	if a.IsValid() {
		b := a.As16()
		copy(d, b[:])
		return
	}
	clear(d[:16])
}

// putAddr16 writes a router address as 16 bytes: an IPv6 address, else ::
// (unknown).
func putAddr16(d []byte, a netip.Addr) {
	if a.Is6() && !a.Is4In6() {
		b := a.As16()
		copy(d, b[:])
		return
	}
	clear(d[:16])
}

func ipVersion(k *FlowKey) uint64 {
	if k.IsIPv4() {
		return 4
	}
	return 6
}

// icmpTypeCode is the icmpTypeCode* value: type<<8 | code for a flow of
// the given ICMP protocol, 0 otherwise (the key's type and code fields are
// only meaningful for ICMP).
func icmpTypeCode(k *FlowKey, proto uint8) uint16 {
	if k.Proto != proto {
		return 0
	}
	return uint16(k.ICMPType)<<8 | uint16(k.ICMPCode)
}

// epochMillis is the dateTimeMilliseconds encoding of t. Times before the
// epoch (including the zero Time) are 0: the element is unsigned.
func epochMillis(t time.Time) uint64 {
	ms := t.UnixMilli()
	if ms < 0 {
		return 0
	}
	return uint64(ms)
}

// uptimeMillis is t as v9 FIRST/LAST_SWITCHED: milliseconds since sysUptime
// 0 (origin, in Unix ms), modulo 2^32 like sysUptime itself. A time before
// the exporter started (a flow the kernel saw before) is 0, the earliest
// v9 can say: a wrapped negative would read as 49 days in the future.
func uptimeMillis(t time.Time, origin int64) uint32 {
	d := t.UnixMilli() - origin
	if d < 0 {
		return 0
	}
	return uint32(d)
}

// inInterface is ingressInterface in a router layout: the flow's
// interface for an ingress flow, 0 (unknown) for an egress one.
func inInterface(f *Flow) uint32 {
	if f.Key.Direction == bpf.DirectionEgress {
		return 0
	}
	return f.Key.IfIndex
}

// outInterface is egressInterface in a router layout: the FIB's egress
// interface for an ingress flow, the flow's interface for an egress one.
func outInterface(f *Flow) uint32 {
	if f.Key.Direction == bpf.DirectionEgress {
		return f.Key.IfIndex
	}
	return f.EgressIfIndex
}

// ifDropped is n if f is a record of dropped packets (forwardingStatus
// 128 to 191, RFC 7270), else 0.
func ifDropped(f *Flow, n uint64) uint64 {
	if f.ForwardingStatus&0xc0 == 0x80 {
		return n
	}
	return 0
}

// putName writes s NUL-padded to len(d), cut at a UTF-8 boundary if
// longer.
func putName(d []byte, s string) {
	n := len(s)
	if n > len(d) {
		n = len(d)
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
	}
	copy(d, s[:n])
	clear(d[n:])
}
