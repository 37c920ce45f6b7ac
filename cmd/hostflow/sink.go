package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"

	"github.com/hostflow/hostflow/exporter"
	"github.com/hostflow/hostflow/internal/config"
)

// collectorSink is one destination of flow records: a collector, or the
// JSON-lines writer on stdout when there is none.
type collectorSink struct {
	key   string // what it was built from; equal keys are reused on reload
	url   string // "" for stdout
	sink  exporter.Sink
	stats func() exporter.IPFIXStats // nil when it keeps none
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
func buildSinks(cfg *config.Config, old sinkSet, stdout io.Writer, log *slog.Logger) (next, unused, created sinkSet, err error) {
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
	if len(cfg.Collectors) == 0 {
		err = take("stdout", func() (*collectorSink, error) {
			return &collectorSink{sink: exporter.NewJSONLines(stdout)}, nil
		})
	}
	for _, col := range cfg.Collectors {
		key := col.URL + " " + strconv.FormatUint(uint64(cfg.ObservationDomain), 10) + " " + strconv.Itoa(cfg.MaxMessageSize)
		err = take(key, func() (*collectorSink, error) { return newCollectorSink(cfg, col, log) })
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

// newCollectorSink builds the exporter for one collector URL. New schemes
// (config.Schemes) are wired here.
func newCollectorSink(cfg *config.Config, col config.Collector, log *slog.Logger) (*collectorSink, error) {
	switch {
	case col.Protocol == "ipfix" && col.Transport == "udp":
		w, err := exporter.DialUDP(col.Address)
		if err != nil {
			return nil, fmt.Errorf("collector %s: %w", col, err)
		}
		s, err := exporter.NewIPFIX(exporter.IPFIXConfig{
			Writer:              w,
			ObservationDomainID: cfg.ObservationDomain,
			MaxMessageSize:      cfg.MaxMessageSize,
			Now:                 time.Now,
			Logger:              log.With("collector", col.URL),
		})
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("collector %s: %w", col, err)
		}
		return &collectorSink{url: col.URL, sink: s, stats: s.Stats}, nil
	}
	return nil, fmt.Errorf("collector %s: scheme %s+%s not wired", col, col.Protocol, col.Transport)
}
