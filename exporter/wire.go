package exporter

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/hostflow/hostflow/templates"
)

// IPFIX (RFC 7011) and NetFlow v9 (RFC 3954) share their shape: a header
// followed by sets (v9: flowsets) of template, options template and data
// records, with the same template record layout. What differs is a
// wireFormat: the header, the set ids, the padding of sets, how sequence
// numbers count and the header of an options template record.
type wireFormat interface {
	// name is the protocol in errors and logs.
	name() string
	protocol() templates.ExportProtocol
	headerLen() int
	templateSetID() uint16
	optionsSetID() uint16
	// pad reports whether every set is padded to 4 bytes.
	pad() bool
	// maxMessage is the most a message may be.
	maxMessage() int
	// putHeader writes the header of message b.
	putHeader(b []byte, h msgHeader)
	// putSeq rewrites the sequence number in the header of message b.
	putSeq(b []byte, seq uint32)
	// nextSeq is the sequence number of the message after one numbered
	// seq with records data records.
	nextSeq(seq, records uint32) uint32
	// appendOptionsCounts appends the two counts that follow the ID in
	// an options template record header.
	appendOptionsCounts(b []byte, scope, fields int) []byte
}

// msgHeader is what a message header says.
type msgHeader struct {
	export time.Time
	// uptime is the v9 sysUptime in ms; count the v9 record count
	// (templates included).
	uptime, count uint32
	seq, domain   uint32
}

// ipfixWire is RFC 7011: a 16-byte header with the message length, sets
// unpadded (section 3.3.1 makes padding optional, and the IPFIX golden
// files have none), sequence numbers counting data records.
type ipfixWire struct{}

func (ipfixWire) name() string                       { return "ipfix" }
func (ipfixWire) protocol() templates.ExportProtocol { return templates.IPFIX }
func (ipfixWire) headerLen() int                     { return 16 }
func (ipfixWire) templateSetID() uint16              { return 2 }
func (ipfixWire) optionsSetID() uint16               { return 3 }
func (ipfixWire) pad() bool                          { return false }

// maxMessage: the IPFIX length field is 16 bits.
func (ipfixWire) maxMessage() int { return 65535 }

func (ipfixWire) putHeader(b []byte, h msgHeader) {
	be := binary.BigEndian
	be.PutUint16(b[0:], 10)
	be.PutUint16(b[2:], uint16(len(b)))
	be.PutUint32(b[4:], uint32(h.export.Unix()))
	be.PutUint32(b[8:], h.seq)
	be.PutUint32(b[12:], h.domain)
}

func (ipfixWire) putSeq(b []byte, seq uint32) { binary.BigEndian.PutUint32(b[8:], seq) }

// nextSeq: IPFIX numbers data records; uint32 arithmetic wraps, as the
// sequence number is modulo 2^32.
func (ipfixWire) nextSeq(seq, records uint32) uint32 { return seq + records }

// appendOptionsCounts: the total field count, then the scope field count.
func (ipfixWire) appendOptionsCounts(b []byte, scope, fields int) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(scope+fields))
	return binary.BigEndian.AppendUint16(b, uint16(scope))
}

// v9Wire is RFC 3954: a 20-byte header with a record count and sysUptime,
// flowsets padded to 4 bytes (section 5.3), sequence numbers counting
// packets.
type v9Wire struct{}

func (v9Wire) name() string                       { return "netflow9" }
func (v9Wire) protocol() templates.ExportProtocol { return templates.NetFlowV9 }
func (v9Wire) headerLen() int                     { return 20 }
func (v9Wire) templateSetID() uint16              { return 0 }
func (v9Wire) optionsSetID() uint16               { return 1 }
func (v9Wire) pad() bool                          { return true }

// maxMessage: v9 has no length field, but a UDP datagram cannot be larger.
func (v9Wire) maxMessage() int { return 65535 }

func (v9Wire) putHeader(b []byte, h msgHeader) {
	be := binary.BigEndian
	be.PutUint16(b[0:], 9)
	be.PutUint16(b[2:], uint16(h.count))
	be.PutUint32(b[4:], h.uptime)
	be.PutUint32(b[8:], uint32(h.export.Unix()))
	be.PutUint32(b[12:], h.seq)
	be.PutUint32(b[16:], h.domain)
}

func (v9Wire) putSeq(b []byte, seq uint32) { binary.BigEndian.PutUint32(b[12:], seq) }

// nextSeq: v9 numbers packets.
func (v9Wire) nextSeq(seq, _ uint32) uint32 { return seq + 1 }

// appendOptionsCounts: the scope and option lengths in bytes of field
// specifiers.
func (v9Wire) appendOptionsCounts(b []byte, scope, fields int) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(4*scope))
	return binary.BigEndian.AppendUint16(b, uint16(4*fields))
}

func align(n int, pad bool) int {
	if pad {
		return (n + 3) &^ 3
	}
	return n
}

// encodeTemplateBlock encodes ts as one template set and each of opts, if
// any, as an options template set of its own (RFC 7011 section 3.4.2, RFC
// 3954 sections 5.2 and 6.1). It returns the bytes and the number of
// records in them.
//
// Both RFCs allow several options template records in one set, but
// collectors mis-parse that: pmacct's nfacctd 1.7.7 keeps the first and
// steps to the next by a miscomputed length (IPFIX: it adds the scope
// field count to the field count; v9: it multiplies byte lengths by 4),
// and nfdump's v9 parser reads only the first record of an options
// template flowset. One per set costs 4 bytes (v9: up to 7 with padding)
// per options template, in the template block only.
func encodeTemplateBlock(wire wireFormat, ts []templates.Template, opts []templates.OptionsTemplate) ([]byte, int, error) {
	be := binary.BigEndian
	var b []byte
	b = be.AppendUint16(b, wire.templateSetID())
	b = append(b, 0, 0)
	for i := range ts {
		t := &ts[i]
		if t.ID < 256 {
			return nil, 0, fmt.Errorf("%s templates: template %q has reserved id %d", wire.name(), t.Name, t.ID)
		}
		b = be.AppendUint16(b, t.ID)
		b = be.AppendUint16(b, uint16(len(t.Fields)))
		b = appendSpecs(b, t.Fields)
	}
	be.PutUint16(b[2:], uint16(len(b)))
	for _, o := range opts {
		if o.ID < 256 {
			return nil, 0, fmt.Errorf("%s templates: options template %q has reserved id %d", wire.name(), o.Name, o.ID)
		}
		start := len(b)
		b = be.AppendUint16(b, wire.optionsSetID())
		b = append(b, 0, 0)
		b = be.AppendUint16(b, o.ID)
		b = wire.appendOptionsCounts(b, len(o.Scope), len(o.Fields))
		b = appendSpecs(b, o.Scope)
		b = appendSpecs(b, o.Fields)
		for wire.pad() && (len(b)-start)%4 != 0 {
			b = append(b, 0)
		}
		be.PutUint16(b[start+2:], uint16(len(b)-start))
	}
	if len(b) > wire.maxMessage()-wire.headerLen() {
		return nil, 0, fmt.Errorf("%s templates: template sets of %d bytes too long", wire.name(), len(b))
	}
	return b, len(ts) + len(opts), nil
}

func appendSpecs(b []byte, fs []templates.Field) []byte {
	for _, f := range fs {
		b = binary.BigEndian.AppendUint16(b, f.ID)
		b = binary.BigEndian.AppendUint16(b, f.Length)
	}
	return b
}
