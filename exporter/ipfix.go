package exporter

import (
	"log/slog"
	"time"

	"github.com/hostflow/hostflow/templates"
)

// MessageWriter sends one IPFIX or NetFlow v9 message. It must not keep msg
// after it returns: the exporter reuses the buffer for the next message.
type MessageWriter interface {
	WriteMessage(msg []byte) error
}

// RecordWriter is a MessageWriter that may accept a message and lose it
// later (a batching UDPWriter): the encoder tells it how many flow records
// each message holds, so that it can count the records of the messages it
// loses after accepting them (TransportStats.RecordsLost).
type RecordWriter interface {
	MessageWriter
	// WriteMessageRecords is WriteMessage of a message holding records
	// flow records.
	WriteMessageRecords(msg []byte, records int) error
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
	// DefaultTemplateRefresh; negative turns it off.
	TemplateRefresh time.Duration
	// TemplateRefreshMessages resends templates every this many messages
	// too. Default DefaultTemplateRefreshMessages; negative turns it off.
	// Over TCP or TLS, turn both off: templates are sent once per
	// connection (RFC 7011 section 8), when the transport's OnConnect
	// hook calls WriteTemplates, and a refresh on a stream is a waste
	// that a strict collector may even reject.
	TemplateRefreshMessages int
	// Templates is the record layout, from templates.FromNames. Default
	// templates.DefaultSet(templates.IPFIX).
	Templates *templates.Set
	// Interfaces, if set, names interfaces for interfaceName (82) and
	// overrides the ifIndex exported in data and options records. Nil:
	// names are empty, indexes the kernel's.
	Interfaces *Interfaces
	// Options, if set, enables options records (interface table,
	// sampling, reliability statistics).
	Options *OptionsConfig
	// PadForGSO makes every message of an export but the last exactly
	// MaxMessageSize long when Writer is a UDPWriter using GSO, so that
	// every export goes out as one GSO send whatever its mix of
	// templates: exact fill (fill.go, on without this option whenever
	// the writer uses GSO, with messages of the longest length the
	// export's mix can fill) aims at MaxMessageSize, and set padding
	// makes up what it leaves short (see exporter/pad.go). That padding
	// is RFC 7011 section 3.3.1 set padding, but not every collector
	// takes it: nfcapd (nfdump 1.7.1) tries to read padding of 4 octets
	// or more as another record and logs an error for every such set
	// (it still stores every record). goflow2, pmacct's nfacctd,
	// libfixbuf and Wireshark decode it. Default off.
	PadForGSO bool
	// Now is the clock, injected for tests. Default time.Now.
	Now func() time.Time
	// Logger reports send failures and recoveries. Default: discard.
	Logger *slog.Logger
}

// IPFIXStats are the IPFIX exporter's counters.
type IPFIXStats = ExportStats

// IPFIX is a Sink that encodes flows as IPFIX messages (RFC 7011), driven by
// the template tables of package templates. Encoding allocates nothing per
// record: each message is built in one buffer allocated up front.
//
// Export, SendTemplates and Close are called from one goroutine; Stats
// may be called from any.
type IPFIX struct {
	encoder
}

var _ Sink = (*IPFIX)(nil)

// NewIPFIX returns an IPFIX exporter writing to cfg.Writer.
func NewIPFIX(cfg IPFIXConfig) (*IPFIX, error) {
	e := &IPFIX{}
	if err := e.init(encoderConfig{
		wire:            ipfixWire{},
		w:               cfg.Writer,
		domain:          cfg.ObservationDomainID,
		max:             cfg.MaxMessageSize,
		refresh:         cfg.TemplateRefresh,
		refreshMessages: cfg.TemplateRefreshMessages,
		set:             cfg.Templates,
		options:         cfg.Options,
		ifs:             cfg.Interfaces,
		now:             cfg.Now,
		log:             cfg.Logger,
		exactFill:       true,
		padFull:         cfg.PadForGSO,
	}); err != nil {
		return nil, err
	}
	return e, nil
}

// Export encodes flows into as few messages as fit MaxMessageSize and sends
// them; see encoder.export for the layout and error handling.
func (e *IPFIX) Export(flows []Flow) error { return e.export(flows) }
