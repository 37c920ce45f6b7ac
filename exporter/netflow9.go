package exporter

import (
	"log/slog"
	"time"

	"github.com/hostflow/hostflow/templates"
)

// NetFlow9Config configures a NetFlow v9 exporter. Zero values take the
// defaults, which are those of IPFIX.
type NetFlow9Config struct {
	// Writer sends each export packet, e.g. a *UDPWriter. Required.
	Writer MessageWriter
	// SourceID is the header's Source ID (RFC 3954 section 5.1): with the
	// exporter's address, it tells the collector whose templates apply.
	SourceID uint32
	// MaxMessageSize bounds every packet, headers included. Default
	// DefaultMaxMessageSize.
	MaxMessageSize int
	// TemplateRefresh and TemplateRefreshMessages: templates are sent
	// again after this time or this many packets, whichever comes first
	// (RFC 3954 section 9). Defaults DefaultTemplateRefresh and
	// DefaultTemplateRefreshMessages; negative turns either off (over TCP
	// or TLS both are off: see IPFIXConfig).
	TemplateRefresh         time.Duration
	TemplateRefreshMessages int
	// Templates is the record layout, from templates.FromNames with
	// templates.NetFlowV9. Default templates.DefaultSet(templates.NetFlowV9).
	Templates *templates.Set
	// Interfaces, if set, names interfaces for interfaceName (82) and
	// overrides the ifIndex exported in data and options records. Nil:
	// names are empty, indexes the kernel's.
	Interfaces *Interfaces
	// Options, if set, enables options records.
	Options *OptionsConfig
	// Clock, if set, is the clock (and Now is ignored): its wall time
	// goes in the header's unix_secs, and the header's sysUptime is
	// milliseconds on its monotonic clock since NewNetFlow9, so a step of
	// the wall clock does not make sysUptime jump or go backwards.
	// FIRST_SWITCHED/LAST_SWITCHED are the flow times less the wall time
	// of sysUptime 0 as of the packet, so that a collector adding them to
	// unix_secs - sysUptime gets the flow times back.
	Clock Clock
	// Now is the wall clock when Clock is nil, injected for tests; the
	// monotonic clock is then elapsed time on Now. Default: both are
	// SystemClock's.
	Now func() time.Time
	// Logger reports send failures and recoveries. Default: discard.
	Logger *slog.Logger
}

// NetFlow9 is a Sink that encodes flows as NetFlow v9 export packets (RFC
// 3954), with the same machinery, and the same zero allocations per
// record, as IPFIX. The header count is every record in the packet
// (template, options template, options data and flow records), the
// sequence number counts packets, and each flowset is padded to 4 bytes.
//
// Export, SendTemplates and Close are called from one goroutine; Stats
// may be called from any.
type NetFlow9 struct {
	encoder
}

var _ Sink = (*NetFlow9)(nil)

// NewNetFlow9 returns a NetFlow v9 exporter writing to cfg.Writer.
func NewNetFlow9(cfg NetFlow9Config) (*NetFlow9, error) {
	e := &NetFlow9{}
	var mono func() time.Duration
	if cfg.Clock != nil {
		cfg.Now, mono = cfg.Clock.Now, cfg.Clock.Monotonic
	}
	if err := e.init(encoderConfig{
		wire:            v9Wire{},
		w:               cfg.Writer,
		domain:          cfg.SourceID,
		max:             cfg.MaxMessageSize,
		refresh:         cfg.TemplateRefresh,
		refreshMessages: cfg.TemplateRefreshMessages,
		set:             cfg.Templates,
		options:         cfg.Options,
		ifs:             cfg.Interfaces,
		now:             cfg.Now,
		mono:            mono,
		log:             cfg.Logger,
	}); err != nil {
		return nil, err
	}
	return e, nil
}

// Export encodes flows into as few packets as fit MaxMessageSize and sends
// them; see encoder.export for the layout and error handling.
func (e *NetFlow9) Export(flows []Flow) error { return e.export(flows) }
