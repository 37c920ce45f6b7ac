package exporter

import (
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/hostflow/hostflow/templates"
)

// The encoder behind IPFIXExporter and NetFlow9Exporter: its
// configuration and state (this file), the framing of each protocol
// (wire.go), the codec table that fills records from flows (fields.go) and
// the packing of records into messages (pack.go).

const (
	// DefaultTemplateRefreshMessages resends templates every 20 messages
	// as well as every DefaultTemplateRefresh. Time alone bounds the loss
	// after a collector restart in seconds, which at a high export rate
	// is thousands of undecodable messages; counting bounds it in
	// messages. 20 is the Cisco IOS default (template refresh-rate 20
	// packets), so collectors are tuned for it, and the cost is small:
	// the eight default templates are 500 bytes in IPFIX and 468 in v9,
	// 586 and 544 with the three options templates, against 20 full
	// messages of ~1400 bytes (28 KB), about 2%.
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
	wire            wireFormat
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
	// exactFill fills messages to one length for a writer with UDP GSO
	// (IPFIX only; see fill.go). padFull also pads the messages exact
	// fill cannot fill (IPFIX with PadForGSO; see pad.go).
	exactFill, padFull bool
}

// encoder builds and sends messages of either protocol. Encoding allocates
// nothing per record: each message is built in one buffer allocated up
// front, and each template's fields are compiled to encode functions once.
type encoder struct {
	wire            wireFormat
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
	// variants is the template index of each flow of an export.
	variants []uint8

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
	// exactFill is set for IPFIX, padFull for IPFIX with PadForGSO.
	// filling is set for an export whose writer sends equal-length
	// messages in one UDP GSO send (see fill.go), padding if padFull
	// too (see padMessage). padSets are the flow data sets of the
	// message, if padding.
	exactFill, padFull bool
	filling, padding   bool
	fill               fillState
	padSets            [templates.NumTemplates]padSet
	nPadSets           int
	setID              uint16
	res                exportResult

	messages, records, sendErrors, recordsLost atomic.Uint64
}

// init sets up e, which must be new, from cfg.
func (e *encoder) init(cfg encoderConfig) error {
	name := cfg.wire.name()
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
	proto := cfg.wire.protocol()
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
		exactFill:       cfg.exactFill,
		padFull:         cfg.padFull,
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
	least := e.wire.headerLen() + max(len(block), align(rec, e.wire.pad()))
	if cfg.max < least || cfg.max > e.wire.maxMessage() {
		return fmt.Errorf("%s config: max message size %d not in [%d, %d]", name, cfg.max, least, e.wire.maxMessage())
	}
	e.buf = make([]byte, 0, cfg.max)
	e.mono = cfg.mono
	e.start = cfg.now()
	e.startMono = cfg.mono()
	return nil
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
		return fmt.Errorf("%s write templates: exporter closed", e.wire.name())
	}
	now := e.now()
	up := uint32(max(e.mono()-e.startMono, 0).Milliseconds())
	b := append(e.tmplBuf[:0], make([]byte, e.wire.headerLen())...)
	b = append(b, e.templateBlock...)
	e.tmplBuf = b
	seq := e.seq
	if e.flushing {
		// Inside the writer: the message in flight has its number,
		// which this one, going first, takes. The in-flight message,
		// not written yet, takes the number after a message without
		// data records: the same in IPFIX, which counts data records,
		// the next in v9, which counts packets.
		seq = e.flushSeq
		if next := e.wire.nextSeq(seq, 0); next != seq {
			e.wire.putSeq(e.buf, next)
		}
	}
	e.seq = e.wire.nextSeq(e.seq, 0)
	e.wire.putHeader(b, msgHeader{export: now, uptime: up, count: uint32(e.templateRecords), seq: seq, domain: e.domain})
	if err := e.w.WriteMessage(b); err != nil {
		e.sendErrors.Add(1)
		return fmt.Errorf("%s write templates: %w", e.wire.name(), err)
	}
	e.messages.Add(1)
	e.templatesSent = true
	e.lastTemplates = now
	return nil
}

// SendTemplates writes a message of templates alone, now (with options data
// if options are enabled). Like Export it must not be called concurrently
// with Export or from inside the writer.
func (e *encoder) SendTemplates() error {
	if e.closed {
		return fmt.Errorf("%s send templates: exporter closed", e.wire.name())
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
		return fmt.Errorf("%s send templates: %w", e.wire.name(), e.res.firstErr)
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
			return fmt.Errorf("%s close: %w", e.wire.name(), err)
		}
	}
	return nil
}
