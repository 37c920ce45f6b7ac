package exporter

import (
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/templates"
)

// This file is the machinery IPFIX (RFC 7011) and NetFlow v9 (RFC 3954)
// share: both are a header followed by sets (v9: flowsets) of template,
// options template and data records, with the same template record layout.
// What differs is in wireFormat and in writeHeader.

// wireFormat is what differs between the two protocols' framing.
type wireFormat struct {
	name          string // in errors and logs
	version       uint16
	headerLen     int
	templateSetID uint16
	optionsSetID  uint16
	// pad rounds every set up to 4 bytes, as RFC 3954 section 5.3 asks of
	// v9 flowsets. IPFIX does not need it (RFC 7011 section 3.3.1 makes it
	// optional) and the IPFIX golden files have none.
	pad bool
	// maxMessage is the most a message may be: the IPFIX length field is
	// 16 bits; v9 has none, but a UDP datagram cannot be larger either.
	maxMessage int
}

var (
	ipfixWire = wireFormat{name: "ipfix", version: 10, headerLen: 16, templateSetID: 2, optionsSetID: 3, maxMessage: 65535}
	v9Wire    = wireFormat{name: "netflow9", version: 9, headerLen: 20, templateSetID: 0, optionsSetID: 1, pad: true, maxMessage: 65535}
)

const (
	// DefaultTemplateRefreshMessages resends templates every 20 messages
	// as well as every DefaultTemplateRefresh. Time alone bounds the loss
	// after a collector restart in seconds, which at a high export rate
	// is thousands of undecodable messages; counting bounds it in
	// messages. 20 is the Cisco IOS default (template refresh-rate 20
	// packets), so collectors are tuned for it, and the cost is small:
	// the four default templates are 276 bytes against 20 full messages
	// of ~1400 bytes, about 1%.
	DefaultTemplateRefreshMessages = 20

	setHeaderLen = 4
	protoICMP    = 1
	protoICMPv6  = 58
)

// ExportStats are an exporter's counters since it was created.
type ExportStats struct {
	// Messages and Records count messages written without error and the
	// flow records in them (options records are not counted).
	Messages uint64
	Records  uint64
	// SendErrors counts messages the writer failed to send; RecordsLost
	// counts the flow records in them. Over UDP a failed datagram is gone:
	// the records are not retried.
	SendErrors  uint64
	RecordsLost uint64
}

// encoderConfig is what IPFIXConfig and NetFlow9Config have in common,
// after defaults.
type encoderConfig struct {
	wire            *wireFormat
	w               MessageWriter
	domain          uint32
	max             int
	refresh         time.Duration
	refreshMessages int
	set             *templates.Set
	options         *OptionsConfig
	ifs             *Interfaces
	now             func() time.Time
	// mono is a monotonic clock (any origin), for the v9 sysUptime.
	// Default: CLOCK_MONOTONIC if now is time.Now, else elapsed time
	// on now.
	mono func() time.Duration
	log  *slog.Logger
}

// encoder builds and sends messages of either protocol. Encoding allocates
// nothing per record: each message is built in one buffer allocated up
// front, and each template's fields are compiled to encode functions once.
type encoder struct {
	wire            *wireFormat
	w               MessageWriter
	domain          uint32
	max             int
	refresh         time.Duration
	refreshMessages int
	now             func() time.Time
	log             *slog.Logger
	set             *templates.Set
	ifs             *Interfaces
	compiled        [templates.NumTemplates]compiledTemplate

	// templateBlock is the encoded template set and options template
	// sets, built once; templateRecords counts the records in it (v9
	// counts them in the header).
	templateBlock   []byte
	templateRecords int
	// buf holds the message being built; cap(buf) == max, so appends
	// never reallocate once fits has said yes.
	buf []byte

	// start is when the exporter was made: v9 sysUptime 0 and IPFIX
	// systemInitTimeMilliseconds. startMono is mono() then: sysUptime
	// is time on the monotonic clock since, so a step of the wall clock
	// never makes it go backwards.
	start     time.Time
	startMono time.Duration
	mono      func() time.Duration

	// seq is the header sequence number of the next message: IPFIX counts
	// data records before it, v9 counts packets. It advances for messages
	// that failed to send too, so the collector sees the loss as a gap.
	seq uint32

	templatesSent  bool
	lastTemplates  time.Time
	sinceTemplates int // messages since the last one with templates, it included
	forceTemplates bool
	resend         atomic.Bool
	// flushing is set while flush is in the writer, with flushSeq the
	// sequence number of the message in flight (see WriteTemplates).
	flushing bool
	flushSeq uint32
	tmplBuf  []byte
	failing  bool
	closed   bool

	opts        *options
	lastOptions time.Time
	optionsSent bool

	// Per-message state.
	msgTime   time.Time
	msgUptime uint32 // v9 sysUptime of the message, ms
	// msgOrigin is the wall time, in Unix ms, that sysUptime 0 maps to
	// as of msgTime: msgTime less msgUptime. v9 FIRST/LAST_SWITCHED are
	// flow times less it, so that a collector adding them back to
	// unix_secs - sysUptime gets the flow's wall time.
	msgOrigin   int64
	msgRecords  uint32 // data records, options data included
	msgFlows    uint32 // flow records
	msgTemplate bool
	setStart    int // offset of the open set's header, -1 if none
	setID       uint16
	res         exportResult

	messages, records, sendErrors, recordsLost atomic.Uint64
}

// init sets up e, which must be new, from cfg.
func (e *encoder) init(cfg encoderConfig) error {
	name := cfg.wire.name
	if cfg.w == nil {
		return fmt.Errorf("%s config: no writer", name)
	}
	if cfg.max == 0 {
		cfg.max = DefaultMaxMessageSize
	}
	if cfg.refresh == 0 {
		cfg.refresh = DefaultTemplateRefresh
	}
	if cfg.refreshMessages == 0 {
		cfg.refreshMessages = DefaultTemplateRefreshMessages
	}
	if cfg.mono == nil && cfg.now == nil {
		cfg.mono = SystemClock{}.Monotonic
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	if cfg.mono == nil {
		// An injected wall clock alone: elapsed time on it.
		now, base := cfg.now, cfg.now()
		cfg.mono = func() time.Duration { return now().Sub(base) }
	}
	if cfg.log == nil {
		cfg.log = slog.New(slog.DiscardHandler)
	}
	proto := templates.IPFIX
	if cfg.wire == &v9Wire {
		proto = templates.NetFlowV9
	}
	if cfg.set == nil {
		cfg.set = templates.DefaultSet(proto)
	}
	if cfg.set.Protocol != proto {
		return fmt.Errorf("%s config: templates are for %v", name, cfg.set.Protocol)
	}
	*e = encoder{
		wire:            cfg.wire,
		w:               cfg.w,
		domain:          cfg.domain,
		max:             cfg.max,
		refresh:         cfg.refresh,
		refreshMessages: cfg.refreshMessages,
		now:             cfg.now,
		log:             cfg.log,
		set:             cfg.set,
		ifs:             cfg.ifs,
		setStart:        -1,
	}
	for i, t := range cfg.set.Templates() {
		c, err := compileTemplate(&cfg.set.Templates()[i], cfg.ifs)
		if err != nil {
			return fmt.Errorf("%s templates: template %s: %w", name, t.Name, err)
		}
		e.compiled[i] = c
	}
	var optTemplates []templates.OptionsTemplate
	if cfg.options != nil {
		o, err := newOptions(*cfg.options, proto)
		if err != nil {
			return fmt.Errorf("%s config: %w", name, err)
		}
		e.opts = o
		optTemplates = o.templates
	}
	block, n, err := encodeTemplateBlock(e.wire, cfg.set.Templates(), optTemplates)
	if err != nil {
		return err
	}
	e.templateBlock, e.templateRecords = block, n
	// A message must hold the template block alone, or one set of the
	// longest record: anything smaller could never make progress.
	rec := setHeaderLen + cfg.set.MaxRecordLength()
	if e.opts != nil {
		rec = max(rec, setHeaderLen+e.opts.maxRecord)
	}
	least := e.wire.headerLen + max(len(block), align(rec, e.wire.pad))
	if cfg.max < least || cfg.max > e.wire.maxMessage {
		return fmt.Errorf("%s config: max message size %d not in [%d, %d]", name, cfg.max, least, e.wire.maxMessage)
	}
	e.buf = make([]byte, 0, cfg.max)
	e.mono = cfg.mono
	e.start = cfg.now()
	e.startMono = cfg.mono()
	return nil
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
func encodeTemplateBlock(wire *wireFormat, ts []templates.Template, opts []templates.OptionsTemplate) ([]byte, int, error) {
	be := binary.BigEndian
	var b []byte
	b = be.AppendUint16(b, wire.templateSetID)
	b = append(b, 0, 0)
	for i := range ts {
		t := &ts[i]
		if t.ID < 256 {
			return nil, 0, fmt.Errorf("%s templates: template %q has reserved id %d", wire.name, t.Name, t.ID)
		}
		b = be.AppendUint16(b, t.ID)
		b = be.AppendUint16(b, uint16(len(t.Fields)))
		b = appendSpecs(b, t.Fields)
	}
	be.PutUint16(b[2:], uint16(len(b)))
	for _, o := range opts {
		if o.ID < 256 {
			return nil, 0, fmt.Errorf("%s templates: options template %q has reserved id %d", wire.name, o.Name, o.ID)
		}
		start := len(b)
		b = be.AppendUint16(b, wire.optionsSetID)
		b = append(b, 0, 0)
		b = be.AppendUint16(b, o.ID)
		if wire == &v9Wire {
			// Scope and option lengths in bytes of specifiers.
			b = be.AppendUint16(b, uint16(4*len(o.Scope)))
			b = be.AppendUint16(b, uint16(4*len(o.Fields)))
		} else {
			// Total field count, then scope field count.
			b = be.AppendUint16(b, uint16(len(o.Scope)+len(o.Fields)))
			b = be.AppendUint16(b, uint16(len(o.Scope)))
		}
		b = appendSpecs(b, o.Scope)
		b = appendSpecs(b, o.Fields)
		for wire.pad && (len(b)-start)%4 != 0 {
			b = append(b, 0)
		}
		be.PutUint16(b[start+2:], uint16(len(b)-start))
	}
	if len(b) > wire.maxMessage-wire.headerLen {
		return nil, 0, fmt.Errorf("%s templates: template sets of %d bytes too long", wire.name, len(b))
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

// putFunc writes one field of f into dst, which is exactly the field's
// length. origin is the wall time in Unix ms of v9 sysUptime 0 as of the
// message (encoder.msgOrigin).
type putFunc func(dst []byte, f *Flow, origin int64)

type compiledField struct {
	put      putFunc
	off, end int
}

// compiledTemplate is a template with an encode function per field, chosen
// once so that encoding a record is a loop of calls, with no switch.
type compiledTemplate struct {
	t      *templates.Template
	recLen int
	fields []compiledField
}

func compileTemplate(t *templates.Template, ifs *Interfaces) (compiledTemplate, error) {
	c := compiledTemplate{t: t, fields: make([]compiledField, len(t.Fields))}
	off := 0
	for i, f := range t.Fields {
		put, err := putFor(f, ifs)
		if err != nil {
			return c, err
		}
		c.fields[i] = compiledField{put: put, off: off, end: off + int(f.Length)}
		off += int(f.Length)
	}
	c.recLen = off
	return c, nil
}

// putFor returns the encode function of field f: an address, a time, or an
// unsigned integer of the field's length (RFC 7011 section 6.2
// reduced-size encoding: the low bytes of the value). ifs, which may be
// nil, names interfaces and overrides their exported index.
func putFor(f templates.Field, ifs *Interfaces) (putFunc, error) {
	if p, ok := interfacePut(f, ifs); ok {
		return p, nil
	}
	fixed := func(n uint16, p putFunc) (putFunc, error) {
		if f.Length != n {
			return nil, fmt.Errorf("cannot encode %s (%d) in %d bytes, only %d", f.Name, f.ID, f.Length, n)
		}
		return p, nil
	}
	switch f.Value {
	case templates.SrcIPv4:
		// The key holds IPv4 as ::ffff:a.b.c.d; the address is the tail.
		return fixed(4, func(d []byte, fl *Flow, _ int64) { putAddr4(d, fl.Key.Src) })
	case templates.DstIPv4:
		return fixed(4, func(d []byte, fl *Flow, _ int64) { putAddr4(d, fl.Key.Dst) })
	case templates.SrcIPv6:
		return fixed(16, func(d []byte, fl *Flow, _ int64) { putKeyAddr16(d, fl.Key.Src) })
	case templates.DstIPv6:
		return fixed(16, func(d []byte, fl *Flow, _ int64) { putKeyAddr16(d, fl.Key.Dst) })
	case templates.StartMillis:
		return fixed(8, func(d []byte, fl *Flow, _ int64) { binary.BigEndian.PutUint64(d, epochMillis(fl.Start)) })
	case templates.EndMillis:
		return fixed(8, func(d []byte, fl *Flow, _ int64) { binary.BigEndian.PutUint64(d, epochMillis(fl.End)) })
	case templates.StartUptime:
		return fixed(4, func(d []byte, fl *Flow, s int64) { binary.BigEndian.PutUint32(d, uptimeMillis(fl.Start, s)) })
	case templates.EndUptime:
		return fixed(4, func(d []byte, fl *Flow, s int64) { binary.BigEndian.PutUint32(d, uptimeMillis(fl.End, s)) })
	}
	if p, ok := routerPut(f); ok {
		return p, nil
	}
	if p, ok := directPuts[putKey{f.Value, f.Length}]; ok {
		return p, nil
	}
	// Any other length of an unsigned value: reduced-size (or, for
	// 1-byte TCP flags, v9) encoding through the generic getter.
	get := uintValue(f.Value)
	if get == nil {
		return nil, fmt.Errorf("cannot encode %s (%d): no flow value %d", f.Name, f.ID, f.Value)
	}
	switch f.Length {
	case 1:
		return func(d []byte, fl *Flow, _ int64) { d[0] = byte(get(fl)) }, nil
	case 2:
		return func(d []byte, fl *Flow, _ int64) { binary.BigEndian.PutUint16(d, uint16(get(fl))) }, nil
	case 4:
		return func(d []byte, fl *Flow, _ int64) { binary.BigEndian.PutUint32(d, uint32(get(fl))) }, nil
	case 8:
		return func(d []byte, fl *Flow, _ int64) { binary.BigEndian.PutUint64(d, get(fl)) }, nil
	}
	return nil, fmt.Errorf("cannot encode %s (%d) in %d bytes", f.Name, f.ID, f.Length)
}

type putKey struct {
	v templates.Value
	n uint16
}

// directPuts are the encode functions of the unsigned values at the
// lengths the element table gives them: one call per field, where the
// generic path takes two. The generic path stays for other lengths.
var directPuts = map[putKey]putFunc{
	{templates.SrcPort, 2}:        func(d []byte, f *Flow, _ int64) { binary.BigEndian.PutUint16(d, f.Key.SrcPort) },
	{templates.DstPort, 2}:        func(d []byte, f *Flow, _ int64) { binary.BigEndian.PutUint16(d, f.Key.DstPort) },
	{templates.Protocol, 1}:       func(d []byte, f *Flow, _ int64) { d[0] = f.Key.Proto },
	{templates.TCPFlags, 2}:       func(d []byte, f *Flow, _ int64) { binary.BigEndian.PutUint16(d, f.TCPFlags) },
	{templates.TCPFlags, 1}:       func(d []byte, f *Flow, _ int64) { d[0] = byte(f.TCPFlags) },
	{templates.Octets, 8}:         func(d []byte, f *Flow, _ int64) { binary.BigEndian.PutUint64(d, f.Bytes) },
	{templates.Packets, 8}:        func(d []byte, f *Flow, _ int64) { binary.BigEndian.PutUint64(d, f.Packets) },
	{templates.Direction, 1}:      func(d []byte, f *Flow, _ int64) { d[0] = f.Key.Direction },
	{templates.Interface, 4}:      func(d []byte, f *Flow, _ int64) { binary.BigEndian.PutUint32(d, f.Key.IfIndex) },
	{templates.EndReason, 1}:      func(d []byte, f *Flow, _ int64) { d[0] = byte(f.EndReason) },
	{templates.VLAN, 2}:           func(d []byte, f *Flow, _ int64) { binary.BigEndian.PutUint16(d, f.Key.VLAN) },
	{templates.TOS, 1}:            func(d []byte, f *Flow, _ int64) { d[0] = f.Key.TOS },
	{templates.ICMPv4TypeCode, 2}: func(d []byte, f *Flow, _ int64) { binary.BigEndian.PutUint16(d, icmpTypeCode(&f.Key, protoICMP)) },
	{templates.ICMPv6TypeCode, 2}: func(d []byte, f *Flow, _ int64) { binary.BigEndian.PutUint16(d, icmpTypeCode(&f.Key, protoICMPv6)) },
}

// uintValue returns the getter of an unsigned flow value, nil if v is not
// one.
func uintValue(v templates.Value) func(*Flow) uint64 {
	switch v {
	case templates.SrcPort:
		return func(f *Flow) uint64 { return uint64(f.Key.SrcPort) }
	case templates.DstPort:
		return func(f *Flow) uint64 { return uint64(f.Key.DstPort) }
	case templates.Protocol:
		return func(f *Flow) uint64 { return uint64(f.Key.Proto) }
	case templates.TCPFlags:
		return func(f *Flow) uint64 { return uint64(f.TCPFlags) }
	case templates.Octets:
		return func(f *Flow) uint64 { return f.Bytes }
	case templates.Packets:
		return func(f *Flow) uint64 { return f.Packets }
	case templates.Direction:
		return func(f *Flow) uint64 { return uint64(f.Key.Direction) }
	case templates.Interface:
		return func(f *Flow) uint64 { return uint64(f.Key.IfIndex) }
	case templates.EndReason:
		return func(f *Flow) uint64 { return uint64(f.EndReason) }
	case templates.ICMPv4TypeCode:
		return func(f *Flow) uint64 { return uint64(icmpTypeCode(&f.Key, protoICMP)) }
	case templates.ICMPv6TypeCode:
		return func(f *Flow) uint64 { return uint64(icmpTypeCode(&f.Key, protoICMPv6)) }
	case templates.VLAN:
		return func(f *Flow) uint64 { return uint64(f.Key.VLAN) }
	case templates.TOS:
		return func(f *Flow) uint64 { return uint64(f.Key.TOS) }
	case templates.SrcPrefixLen:
		return func(f *Flow) uint64 { return uint64(f.SrcPrefixLen) }
	case templates.DstPrefixLen:
		return func(f *Flow) uint64 { return uint64(f.DstPrefixLen) }
	case templates.ForwardingStatus:
		return func(f *Flow) uint64 { return uint64(f.ForwardingStatus) }
	case templates.PostNATSrcPort:
		return func(f *Flow) uint64 { return uint64(f.PostNATSrcPort) }
	case templates.PostNATDstPort:
		return func(f *Flow) uint64 { return uint64(f.PostNATDstPort) }
	case templates.InInterface:
		return func(f *Flow) uint64 { return uint64(inInterface(f)) }
	case templates.OutInterface:
		return func(f *Flow) uint64 { return uint64(outInterface(f)) }
	case templates.IPVersion:
		return func(f *Flow) uint64 {
			if f.Key.IsIPv4() {
				return 4
			}
			return 6
		}
	}
	return nil
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

// export encodes flows into as few messages as fit max and sends them.
// Records are grouped by template, so a message holds at most one data set
// per template. If templates are due (never sent, sent refresh ago or
// more, refreshMessages messages ago, or asked for by ResendTemplates), the
// message starts with them: in the same datagram as the data, they cannot
// arrive after it. Options data, when due, follow the templates.
//
// A message that fails to send is counted and skipped; export goes on with
// the rest and returns an error wrapping the first failure.
func (e *encoder) export(flows []Flow) error {
	if e.closed {
		return fmt.Errorf("%s export: exporter closed", e.wire.name)
	}
	now := e.now()
	optionsDue := e.opts != nil && (!e.optionsSent || now.Sub(e.lastOptions) >= e.opts.interval)
	if len(flows) == 0 && !optionsDue {
		return nil
	}
	e.setMsgTime(now)
	e.res = exportResult{}
	if !e.templatesSent || (e.refresh > 0 && now.Sub(e.lastTemplates) >= e.refresh) {
		// Until a message carrying them is sent. If it fails, templates
		// are due again at the next export, not at the next message:
		// that could loop forever against a writer that always fails.
		e.templatesSent = false
		e.forceTemplates = true
	}
	e.begin(true)
	if optionsDue {
		e.appendOptions(now)
	}
	for ti := range e.compiled {
		ct := &e.compiled[ti]
		for i := range flows {
			f := &flows[i]
			// One pass per template groups records into few sets
			// without reordering (or copying) the caller's slice.
			if f.Key.variant() != ti {
				continue
			}
			e.room(ct.t.ID, ct.recLen)
			e.appendFlow(ct, f)
		}
	}
	e.send()
	if e.res.firstErr != nil {
		return fmt.Errorf("%s export: %d of %d messages not sent: %w", e.wire.name, e.res.failed, e.res.total, e.res.firstErr)
	}
	return nil
}

// setMsgTime sets the time of the messages about to be built: now on the
// wall clock, and the v9 sysUptime from the monotonic clock.
func (e *encoder) setMsgTime(now time.Time) {
	e.msgTime = now
	up := max(e.mono()-e.startMono, 0).Milliseconds()
	// sysUptime is modulo 2^32 ms (RFC 3954 section 5.1).
	e.msgUptime = uint32(up)
	e.msgOrigin = now.UnixMilli() - up
}

// exportResult tallies the messages of one export.
type exportResult struct {
	firstErr      error
	failed, total int
}

// room makes sure a record of template id and length n fits the message,
// sending it and starting the next one if not.
func (e *encoder) room(id uint16, n int) {
	if e.fits(id, n) {
		return
	}
	e.send()
	e.begin(true)
	if !e.fits(id, n) {
		// The templates a refresh put in took the room; the config
		// check guarantees a record fits a message without them.
		e.send()
		e.begin(false)
	}
}

// send sends the message built so far, if it holds anything.
func (e *encoder) send() {
	if e.msgRecords == 0 && !e.msgTemplate {
		return
	}
	e.res.total++
	if e.msgTemplate {
		e.sinceTemplates = 0
	}
	e.sinceTemplates++
	if err := e.flush(); err != nil {
		e.res.failed++
		if e.res.firstErr == nil {
			e.res.firstErr = err
		}
		return
	}
	if e.msgTemplate {
		e.templatesSent = true
		e.lastTemplates = e.msgTime
	}
}

// begin starts a message, with the template block first if it is due and
// allowed.
func (e *encoder) begin(allowTemplates bool) {
	e.buf = e.buf[:e.wire.headerLen]
	e.msgRecords, e.msgFlows = 0, 0
	e.setStart = -1
	t := false
	if allowTemplates {
		// Swap first: a resend asked for (e.g. by a new connection's
		// hook) is satisfied by this message even when the templates
		// are due anyway; short-circuited, it stayed set and the next
		// message repeated them.
		resend := e.resend.Swap(false)
		t = e.forceTemplates || resend ||
			(e.refreshMessages > 0 && e.sinceTemplates >= e.refreshMessages)
		e.forceTemplates = false
	}
	e.msgTemplate = t
	if t {
		e.buf = append(e.buf, e.templateBlock...)
	}
}

// fits reports whether a record of set id and length n fits in the
// message, with a set header if it needs a new set and padding if the
// protocol pads.
func (e *encoder) fits(id uint16, n int) bool {
	need := n
	if e.setStart < 0 || e.setID != id {
		need += setHeaderLen
	}
	return align(len(e.buf)+need, e.wire.pad) <= e.max
}

// openSet makes sure the open set is id's.
func (e *encoder) openSet(id uint16) {
	if e.setStart >= 0 && e.setID == id {
		return
	}
	e.closeSet()
	e.setStart = len(e.buf)
	e.setID = id
	e.buf = binary.BigEndian.AppendUint16(e.buf, id)
	e.buf = append(e.buf, 0, 0) // length, set by closeSet
}

func (e *encoder) appendFlow(ct *compiledTemplate, f *Flow) {
	e.openSet(ct.t.ID)
	n := len(e.buf)
	e.buf = e.buf[:n+ct.recLen]
	rec := e.buf[n:]
	for i := range ct.fields {
		cf := &ct.fields[i]
		cf.put(rec[cf.off:cf.end], f, e.msgOrigin)
	}
	e.msgRecords++
	e.msgFlows++
}

func (e *encoder) closeSet() {
	if e.setStart < 0 {
		return
	}
	for e.wire.pad && (len(e.buf)-e.setStart)%4 != 0 {
		e.buf = append(e.buf, 0)
	}
	binary.BigEndian.PutUint16(e.buf[e.setStart+2:], uint16(len(e.buf)-e.setStart))
	e.setStart = -1
}

// flush completes the message header and writes the message.
func (e *encoder) flush() error {
	e.closeSet()
	b := e.buf
	count := e.msgRecords
	if e.msgTemplate {
		count += uint32(e.templateRecords)
	}
	e.putHeader(b, e.msgTime, e.msgUptime, count, e.seq)
	e.flushing, e.flushSeq = true, e.seq
	if e.wire == &v9Wire {
		// v9 numbers packets.
		e.seq++
	} else {
		// IPFIX numbers data records; uint32 arithmetic wraps: the
		// sequence number is modulo 2^32.
		e.seq += e.msgRecords
	}
	n := e.msgFlows
	e.msgRecords, e.msgFlows = 0, 0
	err := e.w.WriteMessage(b)
	e.flushing = false
	if err != nil {
		e.sendErrors.Add(1)
		e.recordsLost.Add(uint64(n))
		if !e.failing {
			// Log the change of state, not every failure: a collector
			// that is down fails every message.
			e.failing = true
			e.log.Warn(e.wire.name+" send failing; records are lost until it recovers", "err", err)
		}
		return err
	}
	if e.failing {
		e.failing = false
		e.log.Info(e.wire.name+" send recovered", "records_lost_total", e.recordsLost.Load())
	}
	e.messages.Add(1)
	e.records.Add(uint64(n))
	return nil
}

// putHeader writes the message header of b: v9 counts records and has a
// sysUptime, IPFIX has the message length.
func (e *encoder) putHeader(b []byte, t time.Time, uptime, count, seq uint32) {
	be := binary.BigEndian
	be.PutUint16(b[0:], e.wire.version)
	if e.wire == &v9Wire {
		be.PutUint16(b[2:], uint16(count))
		be.PutUint32(b[4:], uptime)
		be.PutUint32(b[8:], uint32(t.Unix()))
		be.PutUint32(b[12:], seq)
		be.PutUint32(b[16:], e.domain)
		return
	}
	be.PutUint16(b[2:], uint16(len(b)))
	be.PutUint32(b[4:], uint32(t.Unix()))
	be.PutUint32(b[8:], seq)
	be.PutUint32(b[12:], e.domain)
}

// WriteTemplates writes a message of the templates (and options templates)
// alone, at once, from a buffer of its own. It is the OnConnect hook of a
// TCP or TLS transport (StreamTransport.SetOnConnect): the hook runs on the
// goroutine that exports, inside the writer when a write had to reconnect,
// and what it writes goes before the message that write carries, so every
// connection starts with the templates (RFC 7011 section 8), never with
// data. If it fails, the transport drops the new connection, and the
// message in flight fails with it: data never goes out on a connection
// without its templates.
//
// Unlike SendTemplates it may be called from inside the writer; like
// Export it must not be called concurrently with Export otherwise.
func (e *encoder) WriteTemplates() error {
	if e.closed {
		return fmt.Errorf("%s write templates: exporter closed", e.wire.name)
	}
	now := e.now()
	up := uint32(max(e.mono()-e.startMono, 0).Milliseconds())
	b := append(e.tmplBuf[:0], make([]byte, e.wire.headerLen)...)
	b = append(b, e.templateBlock...)
	e.tmplBuf = b
	seq := e.seq
	if e.flushing {
		// Inside the writer: the message in flight has its number.
		// IPFIX counts data records, which this message has none of:
		// it takes the same number. v9 counts packets: this one goes
		// first, so it takes the in-flight number and the in-flight
		// packet, not written yet, the next.
		seq = e.flushSeq
		if e.wire == &v9Wire {
			binary.BigEndian.PutUint32(e.buf[12:], seq+1)
			e.seq++
		}
	} else if e.wire == &v9Wire {
		e.seq++
	}
	e.putHeader(b, now, up, uint32(e.templateRecords), seq)
	if err := e.w.WriteMessage(b); err != nil {
		e.sendErrors.Add(1)
		return fmt.Errorf("%s write templates: %w", e.wire.name, err)
	}
	e.messages.Add(1)
	e.templatesSent = true
	e.lastTemplates = now
	return nil
}

// ResendTemplates makes the next message start with the templates (and
// options templates), whatever the refresh timers say. It is safe to call
// from any goroutine, including from inside the writer. It is not the hook
// for a TCP or TLS transport: a message already built when the connection
// is made would go out before the templates; use WriteTemplates. To send
// them at once from the exporting goroutine, call SendTemplates.
func (e *encoder) ResendTemplates() { e.resend.Store(true) }

// SendTemplates writes a message of templates alone, now (with options data
// if options are enabled). Like Export it must not be called concurrently
// with Export or from inside the writer.
func (e *encoder) SendTemplates() error {
	if e.closed {
		return fmt.Errorf("%s send templates: exporter closed", e.wire.name)
	}
	now := e.now()
	e.setMsgTime(now)
	e.res = exportResult{}
	e.forceTemplates = true
	e.begin(true)
	if e.opts != nil {
		e.appendOptions(now)
	}
	e.send()
	if e.res.firstErr != nil {
		return fmt.Errorf("%s send templates: %w", e.wire.name, e.res.firstErr)
	}
	return nil
}

// Stats returns the counters. It is safe to call concurrently with Export.
func (e *encoder) Stats() ExportStats {
	return ExportStats{
		Messages:    e.messages.Load(),
		Records:     e.records.Load(),
		SendErrors:  e.sendErrors.Load(),
		RecordsLost: e.recordsLost.Load(),
	}
}

// Close closes the writer if it is an io.Closer: the exporter is its only
// user. Export fails after Close. Nothing is buffered between Exports, so
// nothing is flushed.
func (e *encoder) Close() error {
	if e.closed {
		return nil
	}
	e.closed = true
	if c, ok := e.w.(io.Closer); ok {
		if err := c.Close(); err != nil {
			return fmt.Errorf("%s close: %w", e.wire.name, err)
		}
	}
	return nil
}

// Router mode elements (templates/router.go): the exporter.Flow fields
// router.Enricher fills. Every put writes all of its bytes, zeros for an
// unknown value: the record buffer is reused.

// routerPut returns the encode function of a router element at its table
// length; other lengths of the unsigned ones take the generic path.
func routerPut(f templates.Field) (putFunc, bool) {
	switch {
	case f.Value == templates.NextHopIPv4 && f.Length == 4:
		return func(d []byte, fl *Flow, _ int64) { putAddr4(d, fl.NextHop) }, true
	case f.Value == templates.NextHopIPv6 && f.Length == 16:
		return func(d []byte, fl *Flow, _ int64) { putAddr16(d, fl.NextHop) }, true
	case f.Value == templates.PostNATSrcIPv4 && f.Length == 4:
		return func(d []byte, fl *Flow, _ int64) { putAddr4(d, fl.PostNATSrc) }, true
	case f.Value == templates.PostNATDstIPv4 && f.Length == 4:
		return func(d []byte, fl *Flow, _ int64) { putAddr4(d, fl.PostNATDst) }, true
	case f.Value == templates.PostNATSrcIPv6 && f.Length == 16:
		return func(d []byte, fl *Flow, _ int64) { putAddr16(d, fl.PostNATSrc) }, true
	case f.Value == templates.PostNATDstIPv6 && f.Length == 16:
		return func(d []byte, fl *Flow, _ int64) { putAddr16(d, fl.PostNATDst) }, true
	case f.Value == templates.SrcPrefixLen && f.Length == 1:
		return func(d []byte, fl *Flow, _ int64) { d[0] = fl.SrcPrefixLen }, true
	case f.Value == templates.DstPrefixLen && f.Length == 1:
		return func(d []byte, fl *Flow, _ int64) { d[0] = fl.DstPrefixLen }, true
	case f.Value == templates.ForwardingStatus && f.Length == 1:
		return func(d []byte, fl *Flow, _ int64) { d[0] = fl.ForwardingStatus }, true
	case f.Value == templates.PostNATSrcPort && f.Length == 2:
		return func(d []byte, fl *Flow, _ int64) { binary.BigEndian.PutUint16(d, fl.PostNATSrcPort) }, true
	case f.Value == templates.PostNATDstPort && f.Length == 2:
		return func(d []byte, fl *Flow, _ int64) { binary.BigEndian.PutUint16(d, fl.PostNATDstPort) }, true
	case f.Value == templates.InInterface && f.Length == 4:
		return func(d []byte, fl *Flow, _ int64) { binary.BigEndian.PutUint32(d, inInterface(fl)) }, true
	case f.Value == templates.OutInterface && f.Length == 4:
		return func(d []byte, fl *Flow, _ int64) { binary.BigEndian.PutUint32(d, outInterface(fl)) }, true
	}
	// An address element of another length has no getter either: putFor
	// fails on it.
	return nil, false
}

// putAddr4 writes a as 4 bytes: an IPv4 (or IPv4-mapped) address, else
// 0.0.0.0 (unknown).
func putAddr4(d []byte, a netip.Addr) {
	if a.Is4() || a.Is4In6() {
		b := a.Unmap().As4()
		copy(d, b[:])
		return
	}
	clear(d[:4])
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

// putAddr16 writes a as 16 bytes: an IPv6 address, else :: (unknown).
func putAddr16(d []byte, a netip.Addr) {
	if a.Is6() && !a.Is4In6() {
		b := a.As16()
		copy(d, b[:])
		return
	}
	clear(d[:16])
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

// interfacePut returns the encode function of the interface name, and of
// the interface indexes when ifs overrides some; without overrides the
// indexes take the direct path.
func interfacePut(f templates.Field, ifs *Interfaces) (putFunc, bool) {
	if f.Value == templates.IfName && f.Length != templates.VariableLength {
		return func(d []byte, fl *Flow, _ int64) { putName(d, ifs.Name(fl.Key.IfIndex)) }, true
	}
	if !ifs.Overridden() || f.Length != 4 {
		return nil, false
	}
	switch f.Value {
	case templates.Interface:
		return func(d []byte, fl *Flow, _ int64) { binary.BigEndian.PutUint32(d, ifs.Index(fl.Key.IfIndex)) }, true
	case templates.InInterface:
		return func(d []byte, fl *Flow, _ int64) { binary.BigEndian.PutUint32(d, ifs.Index(inInterface(fl))) }, true
	case templates.OutInterface:
		return func(d []byte, fl *Flow, _ int64) { binary.BigEndian.PutUint32(d, ifs.Index(outInterface(fl))) }, true
	}
	return nil, false
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
