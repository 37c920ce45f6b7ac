package exporter

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/templates"
)

// MessageWriter sends one IPFIX message. It must not keep msg after it
// returns: the exporter reuses the buffer for the next message.
type MessageWriter interface {
	WriteMessage(msg []byte) error
}

// MessageWriterFunc adapts a function to a MessageWriter.
type MessageWriterFunc func(msg []byte) error

// WriteMessage calls f(msg).
func (f MessageWriterFunc) WriteMessage(msg []byte) error { return f(msg) }

const (
	// DefaultMaxMessageSize fits one message in one unfragmented datagram on
	// a 1500-byte MTU path, for IPv4 or IPv6: 1500 - 40 (IPv6 header, the
	// larger) - 8 (UDP header) = 1452 bytes, less some room for tunnel or
	// extension headers on the way. A lost fragment loses the whole message,
	// so it is cheaper to send more, smaller datagrams.
	DefaultMaxMessageSize = 1400

	// DefaultTemplateRefresh is how often templates are sent again over
	// UDP, where the exporter cannot know that a collector restarted and
	// forgot them (RFC 7011 section 8.4). A collector drops data it has no
	// template for, so this bounds the loss after a restart: at 60s, the
	// usual active timeout, a restarted collector decodes again within one
	// active timeout. It is well below the template lifetime collectors
	// keep (go-ipfix: 1800s), so templates never expire between refreshes.
	DefaultTemplateRefresh = 60 * time.Second

	// maxIPFIXMessage is the most the 16-bit length field can express.
	maxIPFIXMessage = 65535

	ipfixVersion  = 10
	headerLen     = 16
	setHeaderLen  = 4
	templateSetID = 2
	protoICMP     = 1
	protoICMPv6   = 58
)

// IPFIXConfig configures an IPFIX exporter. Zero values take the defaults.
type IPFIXConfig struct {
	// Writer sends each message, e.g. a *UDPWriter. Required.
	Writer MessageWriter
	// ObservationDomainID identifies this exporter's observation domain
	// to the collector (RFC 7011 section 3.1).
	ObservationDomainID uint32
	// MaxMessageSize bounds every message, headers included. Default
	// DefaultMaxMessageSize.
	MaxMessageSize int
	// TemplateRefresh is how often templates are sent again. Default
	// DefaultTemplateRefresh.
	TemplateRefresh time.Duration
	// Now is the clock, injected for tests. Default time.Now.
	Now func() time.Time
	// Logger reports send failures and recoveries. Default: discard.
	Logger *slog.Logger
}

// IPFIXStats are the exporter's counters since it was created.
type IPFIXStats struct {
	// Messages and Records count messages written without error and the
	// data records in them.
	Messages uint64
	Records  uint64
	// SendErrors counts messages the writer failed to send; RecordsLost
	// counts the data records in them. Over UDP a failed datagram is gone:
	// the records are not retried.
	SendErrors  uint64
	RecordsLost uint64
}

// IPFIX is a Sink that encodes flows as IPFIX messages (RFC 7011) with the
// default templates of package templates. Encoding allocates nothing per
// record: each message is built in one buffer allocated up front.
//
// Export is called from one goroutine; Stats may be called from any.
type IPFIX struct {
	w       MessageWriter
	domain  uint32
	max     int
	refresh time.Duration
	now     func() time.Time
	log     *slog.Logger

	// templateSet is the encoded template set, built once.
	templateSet []byte
	// buf holds the message being built; cap(buf) == max, so appends
	// never reallocate once fits has said yes.
	buf []byte

	// seq is the number of data records in all messages before the next
	// one: RFC 7011 section 3.1 sequence number. It advances for messages
	// that failed to send too, so the collector sees the loss as a gap.
	seq uint32

	templatesSent bool
	lastTemplates time.Time
	failing       bool
	closed        bool

	// Per-message state.
	exportTime  uint32
	msgRecords  uint32
	msgTemplate bool
	setStart    int // offset of the open set's header, -1 if none
	setID       uint16
	res         exportResult

	messages, records, sendErrors, recordsLost atomic.Uint64
}

var _ Sink = (*IPFIX)(nil)

// NewIPFIX returns an IPFIX exporter writing to cfg.Writer.
func NewIPFIX(cfg IPFIXConfig) (*IPFIX, error) {
	if cfg.Writer == nil {
		return nil, errors.New("ipfix config: no writer")
	}
	if cfg.MaxMessageSize == 0 {
		cfg.MaxMessageSize = DefaultMaxMessageSize
	}
	if cfg.TemplateRefresh == 0 {
		cfg.TemplateRefresh = DefaultTemplateRefresh
	}
	if cfg.TemplateRefresh < 0 {
		return nil, fmt.Errorf("ipfix config: negative template refresh %v", cfg.TemplateRefresh)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	set, err := encodeTemplateSet(templates.Defaults())
	if err != nil {
		return nil, err
	}
	// A message must hold the template set alone, or one set of the
	// longest record: anything smaller could never make progress.
	least := headerLen + max(len(set), setHeaderLen+templates.MaxRecordLength())
	if cfg.MaxMessageSize < least || cfg.MaxMessageSize > maxIPFIXMessage {
		return nil, fmt.Errorf("ipfix config: max message size %d not in [%d, %d]", cfg.MaxMessageSize, least, maxIPFIXMessage)
	}
	return &IPFIX{
		w:           cfg.Writer,
		domain:      cfg.ObservationDomainID,
		max:         cfg.MaxMessageSize,
		refresh:     cfg.TemplateRefresh,
		now:         cfg.Now,
		log:         cfg.Logger,
		templateSet: set,
		buf:         make([]byte, 0, cfg.MaxMessageSize),
		setStart:    -1,
	}, nil
}

// encodeTemplateSet encodes ts as one template set, checking that the
// encoder knows every field at the length the template says: a template
// table the encoder cannot fill is an error here, not garbage on the wire.
func encodeTemplateSet(ts []templates.Template) ([]byte, error) {
	n := setHeaderLen
	for i := range ts {
		n += ts[i].SpecLength()
	}
	if n > maxIPFIXMessage-headerLen {
		return nil, fmt.Errorf("ipfix templates: template set of %d bytes too long", n)
	}
	b := make([]byte, 0, n)
	b = binary.BigEndian.AppendUint16(b, templateSetID)
	b = binary.BigEndian.AppendUint16(b, uint16(n))
	for i := range ts {
		t := &ts[i]
		if t.ID < 256 {
			return nil, fmt.Errorf("ipfix templates: template %q has reserved id %d", t.Name, t.ID)
		}
		b = binary.BigEndian.AppendUint16(b, t.ID)
		b = binary.BigEndian.AppendUint16(b, uint16(len(t.Fields)))
		for _, f := range t.Fields {
			if l, ok := fieldLength(f.ID); !ok || l != f.Length {
				return nil, fmt.Errorf("ipfix templates: template %q: cannot encode %s (%d) in %d bytes", t.Name, f.Name, f.ID, f.Length)
			}
			b = binary.BigEndian.AppendUint16(b, f.ID)
			b = binary.BigEndian.AppendUint16(b, f.Length)
		}
	}
	return b, nil
}

// fieldLength returns the length appendField writes for element id, and
// whether it can write it at all. The two must agree.
func fieldLength(id uint16) (uint16, bool) {
	switch id {
	case templates.IESourceIPv6Address, templates.IEDestinationIPv6Address:
		return 16, true
	case templates.IEOctetDeltaCount, templates.IEPacketDeltaCount,
		templates.IEFlowStartMilliseconds, templates.IEFlowEndMilliseconds:
		return 8, true
	case templates.IESourceIPv4Address, templates.IEDestinationIPv4Address,
		templates.IEIngressInterface, templates.IEEgressInterface:
		return 4, true
	case templates.IESourceTransportPort, templates.IEDestinationTransportPort,
		templates.IETCPControlBits, templates.IEICMPTypeCodeIPv4,
		templates.IEICMPTypeCodeIPv6, templates.IEVLANID:
		return 2, true
	case templates.IEProtocolIdentifier, templates.IEFlowDirection, templates.IEFlowEndReason:
		return 1, true
	}
	return 0, false
}

// appendField appends the value of element id for f.
func appendField(b []byte, id uint16, f *Flow) []byte {
	k := &f.Key
	be := binary.BigEndian
	switch id {
	case templates.IESourceIPv4Address:
		// The key holds IPv4 as ::ffff:a.b.c.d; the address is the tail.
		return append(b, k.SrcIp[12:16]...)
	case templates.IEDestinationIPv4Address:
		return append(b, k.DstIp[12:16]...)
	case templates.IESourceIPv6Address:
		return append(b, k.SrcIp[:]...)
	case templates.IEDestinationIPv6Address:
		return append(b, k.DstIp[:]...)
	case templates.IESourceTransportPort:
		return be.AppendUint16(b, k.SrcPort)
	case templates.IEDestinationTransportPort:
		return be.AppendUint16(b, k.DstPort)
	case templates.IEProtocolIdentifier:
		return append(b, k.TransportProtocol)
	case templates.IETCPControlBits:
		return be.AppendUint16(b, f.TCPFlags)
	case templates.IEOctetDeltaCount:
		return be.AppendUint64(b, f.Bytes)
	case templates.IEPacketDeltaCount:
		return be.AppendUint64(b, f.Packets)
	case templates.IEFlowStartMilliseconds:
		return be.AppendUint64(b, epochMillis(f.Start))
	case templates.IEFlowEndMilliseconds:
		return be.AppendUint64(b, epochMillis(f.End))
	case templates.IEFlowDirection:
		return append(b, k.Direction)
	case templates.IEIngressInterface, templates.IEEgressInterface:
		return be.AppendUint32(b, k.IfIndex)
	case templates.IEFlowEndReason:
		return append(b, uint8(f.EndReason))
	case templates.IEICMPTypeCodeIPv4:
		return be.AppendUint16(b, icmpTypeCode(k, protoICMP))
	case templates.IEICMPTypeCodeIPv6:
		return be.AppendUint16(b, icmpTypeCode(k, protoICMPv6))
	case templates.IEVLANID:
		return be.AppendUint16(b, k.VlanId)
	}
	// Unreachable: encodeTemplateSet rejected unknown elements.
	panic(fmt.Sprintf("ipfix encode: element %d has no encoder", id))
}

// icmpTypeCode is the icmpTypeCode* value: type<<8 | code for a flow of
// the given ICMP protocol, 0 otherwise (the key's type and code fields are
// only meaningful for ICMP).
func icmpTypeCode(k *bpf.NetFlowId, proto uint8) uint16 {
	if k.TransportProtocol != proto {
		return 0
	}
	return uint16(k.IcmpType)<<8 | uint16(k.IcmpCode)
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

// Export encodes flows into as few messages as fit MaxMessageSize and sends
// them. Records are grouped by template, so a message holds at most one
// data set per template. If templates are due (never sent, or sent
// TemplateRefresh ago or more), the first message starts with them: in the
// same datagram as the data, they cannot arrive after it.
//
// A message that fails to send is counted and skipped; Export goes on with
// the rest and returns an error wrapping the first failure.
func (e *IPFIX) Export(flows []Flow) error {
	if e.closed {
		return errors.New("ipfix export: exporter closed")
	}
	if len(flows) == 0 {
		return nil
	}
	now := e.now()
	e.exportTime = uint32(now.Unix())
	e.res = exportResult{}
	withTemplates := !e.templatesSent || now.Sub(e.lastTemplates) >= e.refresh
	if withTemplates {
		// Until a message carrying them is sent. If it fails, templates
		// are due again at the next Export, not at the next message: that
		// could loop forever against a writer that always fails.
		e.templatesSent = false
	}
	e.begin(withTemplates)
	// One pass per template groups records into few sets without
	// reordering (or copying) the caller's slice.
	defaults := templates.Defaults()
	for ti := range defaults {
		t := &defaults[ti]
		recLen := t.RecordLength()
		for i := range flows {
			f := &flows[i]
			if templates.Select(f.Key.IsIPv4(), f.Key.Direction == bpf.DirectionEgress) != t {
				continue
			}
			if !e.fits(t.ID, recLen) {
				e.send(now)
				e.begin(false)
			}
			e.appendRecord(t, f)
		}
	}
	e.send(now)
	if e.res.firstErr != nil {
		return fmt.Errorf("ipfix export: %d of %d messages not sent: %w", e.res.failed, e.res.total, e.res.firstErr)
	}
	return nil
}

// exportResult tallies the messages of one Export.
type exportResult struct {
	firstErr      error
	failed, total int
}

// send sends the message built so far, if it holds anything.
func (e *IPFIX) send(now time.Time) {
	if e.msgRecords == 0 && !e.msgTemplate {
		return
	}
	e.res.total++
	if err := e.flush(); err != nil {
		e.res.failed++
		if e.res.firstErr == nil {
			e.res.firstErr = err
		}
		return
	}
	if e.msgTemplate {
		e.templatesSent = true
		e.lastTemplates = now
	}
}

// begin starts a message, with the template set first if asked.
func (e *IPFIX) begin(withTemplates bool) {
	e.buf = e.buf[:headerLen]
	e.msgRecords = 0
	e.setStart = -1
	e.msgTemplate = withTemplates
	if withTemplates {
		e.buf = append(e.buf, e.templateSet...)
	}
}

// fits reports whether a record of template id and length recLen fits in
// the message, with a set header if it needs a new set.
func (e *IPFIX) fits(id uint16, recLen int) bool {
	need := recLen
	if e.setStart < 0 || e.setID != id {
		need += setHeaderLen
	}
	return len(e.buf)+need <= e.max
}

func (e *IPFIX) appendRecord(t *templates.Template, f *Flow) {
	if e.setStart < 0 || e.setID != t.ID {
		e.closeSet()
		e.setStart = len(e.buf)
		e.setID = t.ID
		e.buf = binary.BigEndian.AppendUint16(e.buf, t.ID)
		e.buf = append(e.buf, 0, 0) // length, set by closeSet
	}
	for _, fld := range t.Fields {
		e.buf = appendField(e.buf, fld.ID, f)
	}
	e.msgRecords++
}

func (e *IPFIX) closeSet() {
	if e.setStart < 0 {
		return
	}
	binary.BigEndian.PutUint16(e.buf[e.setStart+2:], uint16(len(e.buf)-e.setStart))
	e.setStart = -1
}

// flush completes the message header and writes the message.
func (e *IPFIX) flush() error {
	e.closeSet()
	b := e.buf
	be := binary.BigEndian
	be.PutUint16(b[0:], ipfixVersion)
	be.PutUint16(b[2:], uint16(len(b)))
	be.PutUint32(b[4:], e.exportTime)
	be.PutUint32(b[8:], e.seq)
	be.PutUint32(b[12:], e.domain)
	n := e.msgRecords
	// uint32 arithmetic wraps: the sequence number is modulo 2^32.
	e.seq += n
	e.msgRecords = 0
	if err := e.w.WriteMessage(b); err != nil {
		e.sendErrors.Add(1)
		e.recordsLost.Add(uint64(n))
		if !e.failing {
			// Log the change of state, not every failure: a collector
			// that is down fails every message.
			e.failing = true
			e.log.Warn("ipfix send failing; records are lost until it recovers", "err", err)
		}
		return err
	}
	if e.failing {
		e.failing = false
		e.log.Info("ipfix send recovered", "records_lost_total", e.recordsLost.Load())
	}
	e.messages.Add(1)
	e.records.Add(uint64(n))
	return nil
}

// Stats returns the counters. It is safe to call concurrently with Export.
func (e *IPFIX) Stats() IPFIXStats {
	return IPFIXStats{
		Messages:    e.messages.Load(),
		Records:     e.records.Load(),
		SendErrors:  e.sendErrors.Load(),
		RecordsLost: e.recordsLost.Load(),
	}
}

// Close closes the writer if it is an io.Closer: the exporter is its only
// user. Export fails after Close. Nothing is buffered between Exports, so
// nothing is flushed.
func (e *IPFIX) Close() error {
	if e.closed {
		return nil
	}
	e.closed = true
	if c, ok := e.w.(io.Closer); ok {
		if err := c.Close(); err != nil {
			return fmt.Errorf("ipfix close: %w", err)
		}
	}
	return nil
}
