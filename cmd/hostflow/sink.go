package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/hostflow/hostflow/exporter"
	"github.com/hostflow/hostflow/internal/config"
	"github.com/hostflow/hostflow/metrics"
	"github.com/hostflow/hostflow/templates"
)

// collectorSink is one destination of flow records: a collector, or the
// JSON-lines writer on stdout when there is none.
type collectorSink struct {
	key   string // what it was built from; equal keys are reused on reload
	url   string // "" for stdout
	sink  exporter.Sink
	stats func() metrics.CollectorStats // nil when it keeps none
}

// sinkEnv is what sinks need from the daemon besides the config: where
// JSON goes, the logger, and the live data of the options templates.
type sinkEnv struct {
	stdout     io.Writer
	log        *slog.Logger
	interfaces func() []exporter.InterfaceInfo
	// ifname names the interface of a flow in the JSON lines; nil
	// writes no names.
	ifname func(ifindex uint32) string
	// counters are the options' counters every collector shares; each
	// fills in its own NotSentFlows (collectorLosses).
	counters func() exporter.OptionsCounters
}

// sinkSet sends every flow to each sink; one failing does not stop the
// others.
type sinkSet []*collectorSink

func (s sinkSet) Export(flows []exporter.Flow) error {
	var errs []error
	for _, c := range s {
		if err := c.sink.Export(flows); err != nil {
			errs = append(errs, fmt.Errorf("collector %s: %w", c.name(), err))
		}
	}
	return errors.Join(errs...)
}

func (s sinkSet) Close() error {
	var errs []error
	for _, c := range s {
		errs = append(errs, c.sink.Close())
	}
	return errors.Join(errs...)
}

func (c *collectorSink) name() string {
	if c.url == "" {
		return "stdout"
	}
	return c.url
}

// buildSinks returns the sinks cfg asks for, reusing those of old that are
// built from the same settings (their counters and sequence numbers go on),
// and the sinks of old that are no longer wanted, to close once nothing
// exports to them.
func buildSinks(cfg *config.Config, old sinkSet, env sinkEnv) (next, unused, created sinkSet, err error) {
	reuse := map[string]*collectorSink{}
	for _, c := range old {
		reuse[c.key] = c
	}
	take := func(key string, build func() (*collectorSink, error)) error {
		if c, ok := reuse[key]; ok {
			delete(reuse, key)
			next = append(next, c)
			return nil
		}
		c, err := build()
		if err != nil {
			return err
		}
		c.key = key
		next = append(next, c)
		created = append(created, c)
		return nil
	}
	if len(cfg.Collectors) > 0 {
		// A VRF that does not exist fails the start or the reload,
		// naming it, before any collector is built.
		if err := cfg.Bind().Check(); err != nil {
			return nil, nil, nil, fmt.Errorf("vrf: %w", err)
		}
	}
	if len(cfg.Collectors) == 0 {
		err = take("stdout", func() (*collectorSink, error) {
			return &collectorSink{sink: exporter.NewJSONLinesWith(env.stdout, exporter.JSONOptions{InterfaceName: env.ifname})}, nil
		})
	}
	for _, col := range cfg.Collectors {
		// Everything the exporter is built from: a change rebuilds it.
		// The URL holds the collector's own options (gso_padding).
		// source_address and vrf rebuild the sockets: a reload
		// that changes them moves every collector at once.
		key := fmt.Sprint(col.URL, cfg.ObservationDomain, cfg.MaxMessageSize, cfg.Sampling, cfg.Fields,
			cfg.CollectorQueue, cfg.TLS, cfg.Mode, cfg.TemplateRefresh, cfg.TemplateRefreshMessages,
			cfg.Bind(), cfg.InterfaceIndex)
		if col.Transport == config.TransportTLS {
			// Certificates renewed at the same paths: a reload
			// reconnects with them.
			key += " " + cfg.TLS.Fingerprint()
		}
		err = take(key, func() (*collectorSink, error) { return newCollectorSink(cfg, col, env) })
		if err != nil {
			break
		}
	}
	if err != nil {
		created.Close()
		return nil, nil, nil, err
	}
	for _, c := range old {
		if _, ok := reuse[c.key]; ok {
			unused = append(unused, c)
		}
	}
	return next, unused, created, nil
}

// newCollectorSink builds the exporter for one collector URL: an encoder
// (IPFIX or NetFlow v9) writing to a transport (UDP, TCP or TLS), behind a
// bounded queue with its own goroutine. New schemes (config.Schemes) are
// wired here.
func newCollectorSink(cfg *config.Config, col config.Collector, env sinkEnv) (*collectorSink, error) {
	log := env.log.With("collector", col.URL)
	losses := new(collectorLosses)
	var tr exporter.Transport
	var stream *exporter.StreamTransport
	switch col.Transport {
	case config.TransportUDP:
		// Messages go out in batches, one sendmmsg per export (and
		// the exports queued behind it); the Collector flushes when
		// its queue is empty.
		w, err := exporter.NewUDPWriter(exporter.UDPConfig{Address: col.Address, Batch: exporter.DefaultUDPBatch, Bind: cfg.Bind()})
		if err != nil {
			return nil, fmt.Errorf("collector %s: %w", col, err)
		}
		tr = w
	case config.TransportTCP, config.TransportTLS:
		sc := exporter.StreamConfig{Address: col.Address, Logger: log, Bind: cfg.Bind()}
		if col.Transport == config.TransportTLS {
			tc, err := cfg.TLS.Load()
			if err != nil {
				return nil, fmt.Errorf("collector %s: %w", col, err)
			}
			sc.TLS = tc
		}
		var err error
		if stream, err = exporter.NewStreamTransport(sc); err != nil {
			return nil, fmt.Errorf("collector %s: %w", col, err)
		}
		tr = stream
	default:
		return nil, fmt.Errorf("collector %s: transport %s not wired", col, col.Transport)
	}

	enc, err := newEncoder(cfg, col, tr, env, losses, log)
	if err != nil {
		tr.Close()
		return nil, fmt.Errorf("collector %s: %w", col, err)
	}
	if stream != nil {
		// Every new connection starts with the templates (RFC 7011
		// section 8.1): the collector knows none. They are written at
		// once, before the message whose write (re)connected.
		stream.SetOnConnect(func() {
			if err := enc.WriteTemplates(); err != nil {
				log.Warn("send templates on new connection", "err", err)
			}
		})
	} else {
		// Over UDP, templates and options go out at once, before any
		// flow: nfdump does not count options records in its IPFIX
		// sequence check, but it resynchronises silently until the
		// first flow record. A collector not up yet gets them at the
		// next refresh.
		err := enc.SendTemplates()
		if f, ok := tr.(exporter.Flusher); ok {
			err = errors.Join(err, f.Flush())
		}
		if err != nil {
			log.Warn("send templates", "err", err)
		}
	}
	c, err := exporter.NewCollector(exporter.CollectorConfig{Name: col.URL, Sink: enc, Transport: tr,
		QueueLength: cfg.CollectorQueue, Logger: log})
	if err != nil {
		enc.Close()
		return nil, fmt.Errorf("collector %s: %w", col, err)
	}
	stats := func() metrics.CollectorStats {
		return collectorStats(col.URL, enc.Stats(), c.Stats(), stream == nil)
	}
	losses.set(stats)
	return &collectorSink{url: col.URL, sink: c, stats: stats}, nil
}

// collectorStats are one collector's counters: its encoder's e, its queue's
// and transport's q. udp says the transport is a UDPWriter, which, when it
// batches, accepts a message before sending it: its own counts are the
// ones that say what went out, and the records of the accepted messages it
// lost, which the encoder counted as sent, move from records to lost
// records.
func collectorStats(url string, e exporter.ExportStats, q exporter.CollectorStats, udp bool) metrics.CollectorStats {
	t := q.Transport
	s := metrics.CollectorStats{URL: url, Messages: e.Messages, Records: e.Records - min(e.Records, t.RecordsLost),
		SendErrors: e.SendErrors, RecordsLost: e.RecordsLost + t.RecordsLost,
		DroppedRecords: q.DroppedRecords, Reconnects: q.Reconnects, Stalls: q.ExportWaitTimeouts, Unreachable: t.Unreachable,
		Connected: t.Connected, QueuedRecords: q.QueuedRecords}
	if udp {
		s.Messages, s.SendErrors = t.Messages, t.Lost
	}
	return s
}

// collectorEncoder is the encoder of one collector: IPFIX or NetFlow v9.
type collectorEncoder interface {
	exporter.Sink
	Stats() exporter.ExportStats
	WriteTemplates() error
	SendTemplates() error
}

// newEncoder builds the encoder for collector col writing to w: its
// templates (fields, router mode), template refresh and options.
func newEncoder(cfg *config.Config, col config.Collector, w exporter.MessageWriter, env sinkEnv, losses *collectorLosses, log *slog.Logger) (collectorEncoder, error) {
	protocol := templates.IPFIX
	if col.Protocol == config.ProtocolNetFlow9 {
		protocol = templates.NetFlowV9
	}
	set := templates.DefaultSet(protocol)
	if cfg.Router() {
		set = templates.RouterSet(protocol)
	}
	if len(cfg.Fields) > 0 {
		var err error
		if set, err = templates.FromNames(protocol, cfg.Fields); err != nil {
			return nil, fmt.Errorf("fields: %w", err)
		}
	}
	// The encoders read 0 as "the default" and a negative value as "off".
	refresh, refreshMessages := cfg.TemplateRefresh, cfg.TemplateRefreshMessages
	if refreshMessages == 0 {
		refreshMessages = -1
	}
	// Each collector names interfaces and maps their indexes from its
	// own cache of the links, refreshed whenever its options interface
	// table is built.
	ifs, err := exporter.NewInterfaces(exporter.InterfacesConfig{Overrides: cfg.InterfaceIndex, Lookup: env.interfaces, Logger: log})
	if err != nil {
		return nil, err
	}
	if env.interfaces != nil {
		ifs.Update(env.interfaces())
	}
	interfaces := func() []exporter.InterfaceInfo {
		if env.interfaces == nil {
			return nil
		}
		l := env.interfaces()
		ifs.Update(l)
		return l
	}
	if col.Transport != config.TransportUDP {
		// A stream sends templates once per connection (RFC 7011
		// section 8), from the transport's OnConnect hook (newCollectorSink):
		// template_refresh and template_refresh_messages are for UDP.
		refresh, refreshMessages = -1, -1
	}
	opts := &exporter.OptionsConfig{
		Interval:          cfg.TemplateRefresh,
		Interfaces:        interfaces,
		Counters:          losses.counters(env.counters),
		SamplingInterval:  uint32(cfg.Sampling),
		SamplingAlgorithm: cfg.SamplingAlgorithm.BPF(),
	}

	var enc collectorEncoder
	switch col.Protocol {
	case config.ProtocolIPFIX:
		enc, err = exporter.NewIPFIX(exporter.IPFIXConfig{Writer: w, ObservationDomainID: cfg.ObservationDomain,
			MaxMessageSize: cfg.MaxMessageSize, TemplateRefresh: refresh,
			TemplateRefreshMessages: refreshMessages, Templates: set, Options: opts, Interfaces: ifs, Logger: log,
			PadForGSO: col.GSOPadding})
	case config.ProtocolNetFlow9:
		enc, err = exporter.NewNetFlow9(exporter.NetFlow9Config{Writer: w, SourceID: cfg.ObservationDomain,
			MaxMessageSize: cfg.MaxMessageSize, TemplateRefresh: refresh,
			TemplateRefreshMessages: refreshMessages, Templates: set, Options: opts, Interfaces: ifs, Logger: log})
	default:
		err = fmt.Errorf("protocol %s not wired", col.Protocol)
	}
	return enc, err
}

// checkEncoders builds each collector's encoder as the daemon would, writing
// nowhere, so that what only an encoder can judge (a max_message_size that
// its templates do not fit) fails check-config, the start and a reload as a
// config error naming the collector, before anything is loaded or changed.
func checkEncoders(cfg *config.Config) error {
	env := sinkEnv{log: slog.New(slog.DiscardHandler), counters: func() exporter.OptionsCounters { return exporter.OptionsCounters{} }}
	discard := exporter.MessageWriterFunc(func([]byte) error { return nil })
	for _, col := range cfg.Collectors {
		enc, err := newEncoder(cfg, col, discard, env, new(collectorLosses), env.log)
		if err != nil {
			return &config.Error{Err: fmt.Errorf("collector %s: %w", col, err)}
		}
		enc.Close()
	}
	return nil
}
