package exporter

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/templates"
)

// DefaultOptionsInterval is how often options data (interface table,
// sampling, exporter statistics) are sent. Options do not gate decoding
// the way templates do, but a restarted collector shows bare interface
// indexes until it gets them, so they follow the same bound as templates;
// they are a handful of small records per minute.
const DefaultOptionsInterval = DefaultTemplateRefresh

// InterfaceInfo is one row of the interface table options records carry:
// the index flows report as ingressInterface/egressInterface, named.
//
// Name goes in interfaceName (IPFIX 82, v9 IF_NAME), Description in
// interfaceDescription (83, IF_DESC), each in a fixed-length, zero-padded
// field cut at a UTF-8 boundary (templates.InterfaceNameLen,
// templates.InterfaceDescriptionLen). A Description that is empty (an
// interface with no alias) is sent as Name: nfdump shows field 83 as the
// interface's name and ignores 82, so an empty 83 would show nothing.
type InterfaceInfo struct {
	Index uint32
	// Name is the Linux interface name (eth0).
	Name string
	// Description is the interface alias (ip link set DEV alias TEXT),
	// empty if none.
	Description string
}

// OptionsCounters are the daemon's loss counters the reliability options
// record reports.
type OptionsCounters struct {
	// IgnoredPackets is packets the probe saw but did not account to a
	// flow (ignoredPacketTotalCount, 164), e.g. a full kernel map.
	IgnoredPackets uint64
	// NotSentFlows is flow records dropped before export
	// (notSentFlowTotalCount, 166).
	NotSentFlows uint64
}

// OptionsConfig enables options records: the exporter sends the options
// templates with the templates, and options data at start and every
// Interval.
type OptionsConfig struct {
	// Interval between options data. Default DefaultOptionsInterval.
	Interval time.Duration
	// Interfaces returns the interface table; nil sends none.
	Interfaces func() []InterfaceInfo
	// Counters returns the loss counters; nil reports zeros.
	Counters func() OptionsCounters
	// SamplingInterval is N of 1-in-N packet sampling; 0 or 1 is
	// unsampled (every packet counted).
	SamplingInterval uint32
	// SamplingAlgorithm is how the N are picked: bpf.SamplingRandom (the
	// zero value) or bpf.SamplingCount. See templates.Options for what
	// the sampling options record says of each, and why.
	SamplingAlgorithm bpf.SamplingAlgorithm
}

type options struct {
	OptionsConfig
	interval  time.Duration
	templates []templates.OptionsTemplate
	maxRecord int
}

func newOptions(cfg OptionsConfig, p templates.ExportProtocol) (*options, error) {
	if cfg.Interval < 0 {
		return nil, fmt.Errorf("options: negative interval %v", cfg.Interval)
	}
	sampling := templates.SamplingRandom
	switch cfg.SamplingAlgorithm {
	case bpf.SamplingRandom:
	case bpf.SamplingCount:
		sampling = templates.SamplingCount
	default:
		return nil, fmt.Errorf("options: unknown sampling algorithm %d", cfg.SamplingAlgorithm)
	}
	o := &options{OptionsConfig: cfg, interval: cfg.Interval, templates: templates.Options(p, sampling)}
	if o.interval == 0 {
		o.interval = DefaultOptionsInterval
	}
	if o.SamplingInterval == 0 {
		o.SamplingInterval = 1
	}
	for _, t := range o.templates {
		n := 0
		for _, f := range append(append([]templates.Field(nil), t.Scope...), t.Fields...) {
			if f.Length == templates.VariableLength {
				n += 1 + maxVariableString
			} else {
				n += int(f.Length)
			}
		}
		o.maxRecord = max(o.maxRecord, n)
	}
	return o, nil
}

// maxVariableString is the most bytes of a variable-length string option
// (RFC 7011 section 7) the encoder sends, so that one record always fits a
// message. The default options templates use fixed lengths only (see
// templates.InterfaceNameLen); variable-length strings remain supported
// for templates that use them.
const maxVariableString = 128

// optionsRow is the data one options record is filled from.
type optionsRow struct {
	iface    *InterfaceInfo
	counters OptionsCounters
	stats    ExportStats
}

// appendOptions appends one record of each options template, and one per
// interface of the interface table, to the message, rolling over to new
// messages as needed. Options data are rare, so a switch per field is fine
// here.
func (e *encoder) appendOptions(now time.Time) {
	row := optionsRow{stats: e.Stats()}
	if e.opts.Counters != nil {
		row.counters = e.opts.Counters()
	}
	for i := range e.opts.templates {
		t := &e.opts.templates[i]
		if t.ID == templates.OptionsInterfaces {
			if e.opts.Interfaces == nil {
				continue
			}
			for _, ifc := range e.opts.Interfaces() {
				row.iface = &ifc
				e.appendOptionsRecord(t, &row)
			}
			row.iface = nil
			continue
		}
		e.appendOptionsRecord(t, &row)
	}
	e.optionsSent = true
	e.lastOptions = now
}

func (e *encoder) appendOptionsRecord(t *templates.OptionsTemplate, row *optionsRow) {
	n := 0
	for _, fs := range [2][]templates.Field{t.Scope, t.Fields} {
		for _, f := range fs {
			n += e.optionLength(f, row)
		}
	}
	if t.ID == templates.OptionsInterfaces {
		// One interface per data set: nfdump 1.7.1 steps through an
		// interface-name options set by a record length it miscomputes
		// (interfaceDescription's length plus 8, whatever else the
		// template holds: 72 for the 88-byte records), so it reads the
		// first record of a set right and the ones after it at the
		// wrong offset. It costs a 4-byte set header per interface.
		e.closeSet()
	}
	e.room(t.ID, n)
	e.openSet(t.ID)
	for _, fs := range [2][]templates.Field{t.Scope, t.Fields} {
		for _, f := range fs {
			e.buf = e.appendOption(e.buf, f, row)
		}
	}
	e.msgRecords++
}

// optionString returns the string value of f, cut to what the field can
// carry, at a UTF-8 boundary.
func optionString(f templates.Field, row *optionsRow) string {
	var s string
	if row.iface != nil {
		switch f.Value {
		case templates.OptInterfaceName:
			s = row.iface.Name
		case templates.OptInterfaceDescription:
			// Alias, else name: see InterfaceInfo.
			s = row.iface.Description
			if s == "" {
				s = row.iface.Name
			}
		}
	}
	n := int(f.Length)
	if f.Length == templates.VariableLength {
		n = maxVariableString
	}
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func isString(v templates.Value) bool {
	return v == templates.OptInterfaceName || v == templates.OptInterfaceDescription
}

// optionLength is the bytes f takes in the record: its length, or for a
// variable-length string the string and its 1-byte length prefix (RFC 7011
// section 7; maxVariableString < 255 keeps the prefix one byte).
func (e *encoder) optionLength(f templates.Field, row *optionsRow) int {
	if f.Length == templates.VariableLength {
		return 1 + len(optionString(f, row))
	}
	return int(f.Length)
}

func (e *encoder) appendOption(b []byte, f templates.Field, row *optionsRow) []byte {
	if isString(f.Value) {
		s := optionString(f, row)
		if f.Length == templates.VariableLength {
			b = append(b, byte(len(s)))
			return append(b, s...)
		}
		// Fixed length: NUL-padded, as v9 collectors expect.
		b = append(b, s...)
		for range int(f.Length) - len(s) {
			b = append(b, 0)
		}
		return b
	}
	var v uint64
	switch f.Value {
	case templates.OptInterfaceIndex:
		if row.iface != nil {
			v = uint64(e.ifs.Index(row.iface.Index))
		}
	case templates.OptDomain:
		v = uint64(e.domain)
	case templates.OptSelectorAlgorithm:
		// IANA selectorAlgorithm (RFC 5475): 1 systematic count-based,
		// 4 uniform probabilistic.
		v = 4
		if e.opts.SamplingAlgorithm == bpf.SamplingCount {
			v = 1
		}
	case templates.OptSamplingProbability:
		v = math.Float64bits(1 / float64(e.opts.SamplingInterval))
	case templates.OptSamplingInterval:
		v = uint64(e.opts.SamplingInterval)
	case templates.OptSamplingAlgorithm:
		// v9 FLOW_SAMPLER_MODE, coded as RFC 3954 SAMPLING_ALGORITHM:
		// 1 deterministic, 2 random.
		v = 2
		if e.opts.SamplingAlgorithm == bpf.SamplingCount {
			v = 1
		}
	case templates.OptExportedMessages:
		v = row.stats.Messages
	case templates.OptExportedRecords:
		v = row.stats.Records
	case templates.OptIgnoredPackets:
		v = row.counters.IgnoredPackets
	case templates.OptNotSentFlows:
		v = row.counters.NotSentFlows
	case templates.OptSystemInitMillis:
		v = epochMillis(e.start)
	}
	be := binary.BigEndian
	switch f.Length {
	case 1:
		return append(b, byte(v))
	case 2:
		return be.AppendUint16(b, uint16(v))
	case 4:
		return be.AppendUint32(b, uint32(v))
	default:
		return be.AppendUint64(b, v)
	}
}
