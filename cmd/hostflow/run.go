package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/exporter"
)

// run is the whole daemon: it returns when ctx is cancelled, after every
// cached flow has been exported.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel}))

	sink, err := newSink(cfg, stdout, log)
	if err != nil {
		return err
	}
	defer sink.Close()

	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("remove memlock limit: %w", err)
	}
	fetcher, err := bpf.NewFlowFetcher(cfg.sampling, cfg.mapSize,
		cfg.direction != "egress", cfg.direction != "ingress", bpf.WithAttachMode(cfg.attachMode))
	if err != nil {
		return fmt.Errorf("load eBPF programs: %w", err)
	}
	defer fetcher.Close()

	ifaces, err := selectInterfaces(cfg.interfaces)
	if err != nil {
		return err
	}
	for _, i := range ifaces {
		if err := fetcher.Attach(i.index, i.name); err != nil {
			return err
		}
		log.Info("attached", "interface", i.name, "ifindex", i.index, "mode", fetcher.Mode())
	}

	cache, err := exporter.NewCache(cfg.cache, exporter.SystemClock{})
	if err != nil {
		return err
	}
	p := &pipeline{fetcher: fetcher, cache: cache, sink: sink, log: log}
	return p.run(ctx, cfg.pollInterval)
}

// pipeline moves flows from the kernel through the cache to the sink. One
// goroutine owns the cache; the ring-buffer reader feeds it through a
// bounded channel and blocks when it is full (the kernel then counts what
// the ring buffer cannot hold, so nothing is lost silently).
type pipeline struct {
	fetcher *bpf.FlowFetcher
	cache   *exporter.Cache
	sink    exporter.Sink
	log     *slog.Logger
	out     []exporter.Flow
	stats   pipelineStats
}

type pipelineStats struct {
	drainErrors  uint64
	exportErrors uint64
	direct       uint64
}

func (p *pipeline) run(ctx context.Context, poll time.Duration) error {
	direct := make(chan bpf.Record, 4096)
	go p.readRingBuf(direct)

	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		select {
		case r := <-direct:
			p.stats.direct++
			p.cache.AddOne(r.Id, &r.Metrics)
		case <-tick.C:
			p.drain()
			p.export(p.cache.Expire(p.out[:0]))
		case <-ctx.Done():
			return p.shutdown(direct)
		}
	}
}

// shutdown detaches first so the counts stop moving, then takes everything
// left in the map and the ring buffer, and exports it as forced end.
func (p *pipeline) shutdown(direct chan bpf.Record) error {
	var errs []error
	for idx, name := range p.fetcher.Attached() {
		if err := p.fetcher.Detach(idx); err != nil {
			errs = append(errs, err)
		} else {
			p.log.Info("detached", "interface", name, "ifindex", idx)
		}
	}
	p.drain()
	if err := p.fetcher.FlushRingBuf(); err != nil {
		errs = append(errs, fmt.Errorf("flush ring buffer: %w", err))
	} else {
		for r := range direct { // closed by readRingBuf after the flush
			p.stats.direct++
			p.cache.AddOne(r.Id, &r.Metrics)
		}
	}
	flows := p.cache.Flush(p.out[:0])
	p.export(flows)
	k, err := p.fetcher.ReadCounters()
	if err != nil {
		errs = append(errs, err)
	}
	st := p.cache.Stats()
	p.log.Info("stopped", "flows_exported", st.Exported[1:], "direct_records", p.stats.direct,
		"kernel_map_full", k.MapFull, "kernel_ringbuf_full", k.RingBufFull, "kernel_not_ip", k.NotIP,
		"kernel_malformed", k.Malformed, "drain_errors", p.stats.drainErrors, "export_errors", p.stats.exportErrors)
	return errors.Join(errs...)
}

func (p *pipeline) drain() {
	err := p.fetcher.Drain(p.cache.Add)
	if err != nil {
		p.stats.drainErrors++
		p.log.Error("read kernel flows", "err", err)
	}
}

func (p *pipeline) export(flows []exporter.Flow) {
	p.out = flows
	if len(flows) == 0 {
		return
	}
	if err := p.sink.Export(flows); err != nil {
		p.stats.exportErrors++
		p.log.Warn("export flows", "flows", len(flows), "err", err)
	}
}

func (p *pipeline) readRingBuf(out chan<- bpf.Record) {
	defer close(out)
	for {
		raw, err := p.fetcher.ReadRingBuf()
		if err != nil {
			if !errors.Is(err, ringbuf.ErrFlushed) && !errors.Is(err, os.ErrClosed) {
				p.log.Error("read ring buffer", "err", err)
			}
			return
		}
		r, err := bpf.DecodeRecord(raw.RawSample)
		if err != nil {
			p.log.Error("decode ring buffer record", "err", err)
			continue
		}
		out <- r
	}
}
