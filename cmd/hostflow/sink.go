package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/hostflow/hostflow/exporter"
)

// newSink builds one sink per collector, or a JSON-lines writer on stdout
// when there is none.
func newSink(cfg config, stdout io.Writer, log *slog.Logger) (exporter.Sink, error) {
	if len(cfg.collectors) == 0 {
		return exporter.NewJSONLines(stdout), nil
	}
	var sinks multiSink
	for _, c := range cfg.collectors {
		w, err := exporter.DialUDP(c.address)
		if err != nil {
			sinks.Close()
			return nil, fmt.Errorf("collector %s: %w", c, err)
		}
		s, err := exporter.NewIPFIX(exporter.IPFIXConfig{
			Writer:              w,
			ObservationDomainID: cfg.obsDomain,
			MaxMessageSize:      cfg.maxMessage,
			Now:                 time.Now,
			Logger:              log.With("collector", c.String()),
		})
		if err != nil {
			w.Close()
			sinks.Close()
			return nil, fmt.Errorf("collector %s: %w", c, err)
		}
		sinks = append(sinks, s)
		log.Info("exporting", "collector", c.String())
	}
	return sinks, nil
}

// multiSink sends every flow to each sink; one failing does not stop the
// others.
type multiSink []exporter.Sink

func (m multiSink) Export(flows []exporter.Flow) error {
	var errs []error
	for _, s := range m {
		errs = append(errs, s.Export(flows))
	}
	return errors.Join(errs...)
}

func (m multiSink) Close() error {
	var errs []error
	for _, s := range m {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}
