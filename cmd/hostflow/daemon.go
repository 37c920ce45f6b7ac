package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/exporter"
	"github.com/hostflow/hostflow/ifaces"
	"github.com/hostflow/hostflow/internal/config"
	"github.com/hostflow/hostflow/internal/control"
	"github.com/hostflow/hostflow/metrics"
	"github.com/hostflow/hostflow/router"
	"github.com/vishvananda/netlink"
)

// daemon moves flows from the kernel through the cache to the sinks, in
// the stages pipeline.go describes. One goroutine (loop) owns the cache,
// the configuration and every change to attachments and sinks; the
// ring-buffer reader feeds it through a bounded channel and blocks when it
// is full (the kernel then counts what the ring buffer cannot hold, so
// nothing is lost silently); in router mode the enrich stage, which owns
// the enricher, takes its batches without ever making it wait. The fields
// under mu are also read by /metrics scrapes.
type daemon struct {
	args    []string // the command line, loaded again on SIGHUP
	stdout  io.Writer
	log     *slog.Logger
	level   *slog.LevelVar
	notify  notifier
	fetcher flowSource

	cfg   *config.Config
	cache *exporter.Cache
	out   []exporter.Flow
	tick  *time.Ticker
	// full receives a value (without blocking the ring-buffer reader)
	// when the kernel map programs count into is full; the loop then
	// drains early, at most every earlyDrainInterval (lastDrain).
	full      chan struct{}
	lastDrain time.Time
	// lastRead is when the last drain that succeeded began, on the
	// monotonic clock (mono, or CLOCK_MONOTONIC if nil): every packet
	// counted before it is in the cache (see poll).
	lastRead time.Duration
	// tcpEndsAtRead is the kernel's count of TCP packets with FIN or
	// RST (bpf TCPEnds) read just before that drain began; tcpEndsKnown
	// is false when it could not be read.
	tcpEndsAtRead uint64
	tcpEndsKnown  bool
	mono          func() time.Duration
	// startDone is set after the first poll, which drops the pages of
	// the executable the start touched a second time.
	startDone bool
	// readEveryPoll makes every poll read (tests that step the loop by
	// its drains).
	readEveryPoll bool

	// fates is set in router mode when the fetcher counts each packet's
	// fate: the cache derives consumed packets and the enricher keeps
	// the kernel's forwarding status (see the router package).
	fates bool
	// sampledNoFates is set in router mode when fates are not counted
	// because packets are sampled (see routerFates): a reload may not
	// stop the sampling, nor start it while fates are counted.
	sampledNoFates bool
	// enricher adds forwarding and NAT information in router mode; nil
	// in host mode. Only the enrich stage calls Enrich.
	enricher flowEnricher
	// enrich is the stage that runs enricher, started by loop; nil in
	// host mode, where the loop hands batches to the sinks itself.
	enrich *enrichStage

	links     *ifaces.Manager
	stopLinks context.CancelFunc // stops following link updates
	linksDone chan struct{}

	// direct carries the ring buffer's records from readRingBuf to the
	// loop; nil before the loop starts.
	direct chan bpf.Record

	// closer closes the sinks reloads removed, off the loop.
	closer sinkCloser

	// The control socket (control.go): its goroutines send commands
	// on ctlReq for the loop to run; ctlDone closes when the loop no
	// longer answers.
	ctl     *control.Server
	ctlReq  chan ctlRequest
	ctlDone chan struct{}

	// What release frees, nil if not acquired.
	srv      *metrics.Server
	unlock   func()
	released sync.Once

	mu sync.Mutex
	// ringStopped is set when readRingBuf ended on a read error.
	ringStopped bool
	sinks       sinkSet
	counts      flowCounts
	reloads     metrics.ReloadStats

	// observed sums what every drain and ring-buffer record handed out:
	// the packets and bytes the kernel counted, up to the last poll.
	// Atomic, so the drain adds without taking mu once per flow.
	observedPackets, observedBytes atomic.Uint64
	// readerWaits counts the times readRingBuf found direct full.
	readerWaits atomic.Uint64
}

// flowSource is what the daemon needs of a fetcher: bpf.FlowFetcher (TC
// hooks) and bpf.SockFlowFetcher (socket filters) both are one.
type flowSource interface {
	ifaces.Attacher
	Attached() map[int]string
	Mode() bpf.AttachMode
	PreciseClock() (precise, fallback bool)
	Drain(fn func(bpf.NetFlowId, []bpf.NetFlowMetrics)) error
	ReadRingBuf() (ringbuf.Record, error)
	Diverted(r *bpf.Record) bool
	Full() (bool, error)
	FlushRingBuf() error
	DoneReading() error
	TCPEnds() (uint64, error)
	ReadCounters() (bpf.KernelCounters, error)
	SetSampling(n int) error
	Close() error
}

// flowCounts sum what was exported, across cache replacements.
type flowCounts struct {
	packets, bytes uint64
	byReason       [6]uint64
	active         int
	direct         uint64
	drainErrors    uint64
	exportErrors   uint64
	// unmatchedFates is the cache's UnmatchedFatePackets (it follows
	// the fate bookkeeping across cache replacements).
	unmatchedFates uint64
	earlySettled   uint64
}

// runDaemon starts everything cfg asks for, runs until ctx is cancelled,
// then stops in the order shutdown states. What it acquires goes into d
// and is released by d.release only, on every path.
func runDaemon(ctx context.Context, cfg *config.Config, args []string, hup <-chan os.Signal, stdout, stderr io.Writer) error {
	level := new(slog.LevelVar)
	level.Set(cfg.LogLevel)
	log := newLogger(cfg.LogFormat, level, stderr)
	d := &daemon{args: args, stdout: stdout, log: log, level: level, notify: newNotifier(), cfg: cfg}
	defer d.release() // after a shutdown, nothing is left to release
	log.Info("starting", "version", version, "config", cfg.File)

	if err := checkCapabilities(); err != nil {
		return err
	}
	// First of what a second daemon must not do: it would attach
	// programs and greet collectors before finding the first one there.
	// Commands wait for the loop until it runs.
	if err := d.startControl(); err != nil {
		return err
	}
	sinks, _, _, err := buildSinks(cfg, nil, d.sinkEnv())
	if err != nil {
		return err
	}
	d.sinks = sinks
	for _, s := range sinks {
		log.Info("exporting", "collector", s.name())
	}

	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("remove memlock limit: %w", err)
	}
	d.unlock = lockState(cfg.StateDir, log)
	algo := cfg.SamplingAlgorithm.BPF()
	// Why router mode counts no fates, if it does not.
	wantFates, fateErr := routerFates(cfg)
	precise := cfg.Timestamps == config.TimestampsPrecise
	if cfg.Capture == config.CaptureSocket {
		d.fetcher, err = bpf.NewSockFetcher(bpf.SockFetcherOptions{
			Sampling:          cfg.Sampling,
			KernelMapSize:     cfg.KernelMapSize,
			SamplingAlgorithm: algo,
			RingBufSize:       uint32(cfg.RingBufferSize),
			PreciseTimestamps: precise,
		})
	} else {
		var loadErr error
		d.fetcher, loadErr, err = loadFates(bpf.FetcherOptions{
			Sampling:          cfg.Sampling,
			KernelMapSize:     cfg.KernelMapSize,
			Ingress:           cfg.Ingress(),
			Egress:            cfg.Egress(),
			Attach:            cfg.Attach.Mode(),
			SamplingAlgorithm: algo,
			RingBufSize:       uint32(cfg.RingBufferSize),
			PreciseTimestamps: precise,
			StateDir:          cfg.StateDir,
			Fate:              wantFates,
		}, func(o bpf.FetcherOptions) (flowSource, error) { return bpf.NewFetcher(o) })
		if loadErr != nil {
			fateErr = loadErr
		}
	}
	if err != nil {
		d.fetcher = nil // a typed nil: nothing to close
		return fmt.Errorf("load eBPF programs: %w", err)
	}
	if _, fallback := d.fetcher.PreciseClock(); fallback {
		log.Warn("the kernel lacks the coarse clock (bpf_ktime_get_coarse_ns, Linux 5.11): flows are stamped with the precise one",
			"timestamps", "precise")
	}

	if cfg.Router() {
		d.fates = sourceFates(d.fetcher)
		d.sampledNoFates = errors.Is(fateErr, errFatesSampled)
		if !d.fates {
			if fateErr == nil {
				fateErr = fmt.Errorf("capture %s counts no fates", cfg.Capture)
			}
			log.Warn("router mode: packets' fates (forwarded, dropped and why) are not counted: "+
				"the forwarding status is a route lookup at export time, and packets a firewall drops are reported forwarded",
				"needs", "Linux 6.3, the tc capture and no sampling", "err", fateErr)
		}
		if f, ok := d.fetcher.(interface{ FateNAT() bool }); d.fates && ok && !f.FateNAT() {
			log.Warn("router mode: no conntrack in the kernel's BTF at load (nf_conntrack not loaded?): the fates of NATed packets are counted under their translated addresses, their arrivals reported consumed", "fix", "load nf_conntrack before hostflow")
		}
		// Opened here, in the namespace hostflow observes: its route
		// and conntrack lookups stay there.
		if d.enricher, err = router.New(router.Options{Conntrack: conntrackModes[cfg.Conntrack], Fates: d.fates, Log: log}); err != nil {
			d.enricher = nil
			return fmt.Errorf("router mode: %w", err)
		}
	}

	d.links = ifaces.NewManager(d.fetcher, cfg.Rules(), log)
	if err := d.links.Start(); err != nil {
		return err
	}
	d.followLinks()
	if d.cache, err = exporter.NewCache(d.cacheConfig(cfg), exporter.SystemClock{}); err != nil {
		return err
	}
	tuneGC(os.Getenv)
	releaseStartupMemory()

	if cfg.MetricsEnabled {
		reg := metrics.NewRegistry(d, metrics.BuildInfo{Version: version, GoVersion: goVersion()})
		srv, err := metrics.ListenWith(cfg.MetricsListen, reg, log, metrics.ServerOptions{Pprof: cfg.MetricsPprof})
		if err != nil {
			return err
		}
		d.srv = srv
		log.Info("serving metrics", "addr", srv.Addr().String(), "path", "/metrics")
	}
	if err := dropStartupText(); err != nil {
		log.Warn("startup text stays mapped", "err", err)
	}
	return d.loop(ctx, hup)
}

// errFatesSampled is why router mode counts no fates with sampling.
var errFatesSampled = errors.New("fates are counted only without sampling (sampling 0 or 1): " +
	"a sampled arrival and its sampled fate are not the same packets, and drops are counted unsampled")

// routerFates says whether cfg asks the fetcher to count packets' fates:
// in router mode with the tc capture, unless packets are sampled
// (errFatesSampled says why not); else why not. The cache derives consumed packets from arrivals minus fates,
// which holds only if both count every packet.
func routerFates(cfg *config.Config) (bool, error) {
	switch {
	case !cfg.Router():
		return false, nil
	case cfg.Capture == config.CaptureSocket:
		return false, fmt.Errorf("capture %s counts no fates", cfg.Capture)
	case cfg.Sampling > 1:
		return false, fmt.Errorf("sampling 1 in %d: %w", cfg.Sampling, errFatesSampled)
	}
	return true, nil
}

// fateSource is a flow source that says whether it counts each packet's
// fate (bpf.FlowFetcher with bpf.FetcherOptions.Fate).
type fateSource interface{ Fate() bool }

// sourceFates reports whether s counts each packet's fate; a source that
// cannot say (the socket capture) does not.
func sourceFates(s flowSource) bool {
	f, ok := s.(fateSource)
	return ok && f.Fate()
}

// loadFates loads a fetcher with load. If opts asks for fates and that
// load fails (a kernel older than 6.3: bpf.ErrFateNotSupported, or a drop
// program it refuses), it loads one without them and returns why in
// fateErr: router mode then falls back to the export-time FIB status.
func loadFates(opts bpf.FetcherOptions, load func(bpf.FetcherOptions) (flowSource, error)) (src flowSource, fateErr, err error) {
	src, err = load(opts)
	if err == nil || !opts.Fate {
		return src, nil, err
	}
	opts.Fate = false
	src, err2 := load(opts)
	return src, err, err2
}

// cacheConfig is cfg's cache, following fates if the fetcher counts them.
// Arrivals then wait the longer of exporter.DefaultFateHold and two poll
// intervals for their fates: a fate counted just after a drain is read by
// the next one.
func (d *daemon) cacheConfig(cfg *config.Config) exporter.CacheConfig {
	c := cfg.Cache()
	c.Fates = d.fates
	if d.fates {
		c.FateHold = max(exporter.DefaultFateHold, 2*cfg.PollInterval)
	}
	return c
}

// sinkEnv gives the sinks what they need from the daemon. The options
// templates' providers run on the collectors' goroutines: they read
// netlink and the kernel counters, never d.mu. Each collector reports its
// own losses as notSentFlowTotalCount (collectorLosses), not these.
func (d *daemon) sinkEnv() sinkEnv {
	return sinkEnv{
		stdout:     d.stdout,
		log:        d.log,
		interfaces: interfaceTable,
		ifname:     d.ifName,
		counters: func() exporter.OptionsCounters {
			var c exporter.OptionsCounters
			if d.fetcher == nil { // the first templates go out before loading
				return c
			}
			if k, err := d.fetcher.ReadCounters(); err == nil {
				c.IgnoredPackets = k.RingBufFull + k.Malformed
			}
			return c
		},
	}
}

// interfaceTable lists every link of the namespace for the options
// template (ifindex -> name, alias as description), as a router exports
// its whole interface table.
func interfaceTable() []exporter.InterfaceInfo {
	links, err := netlink.LinkList()
	if err != nil {
		return nil
	}
	out := make([]exporter.InterfaceInfo, 0, len(links))
	for _, l := range links {
		a := l.Attrs()
		out = append(out, exporter.InterfaceInfo{Index: uint32(a.Index), Name: a.Name, Description: a.Alias})
	}
	return out
}

// conntrackModes maps each conntrack key value to the enricher's mode.
var conntrackModes = [...]router.ConntrackMode{
	config.ConntrackAuto: router.ConntrackAuto,
	config.ConntrackDump: router.ConntrackDump,
	config.ConntrackGet:  router.ConntrackGet,
	config.ConntrackOff:  router.ConntrackOff,
}

// earlyDrainInterval is the shortest time between two drains when the
// kernel map fills up between polls: a flood of new flows is switched to
// the spare map within this time, instead of waiting for the next poll
// with every new flow going through the ring buffer.
const earlyDrainInterval = 100 * time.Millisecond

// loop is the cache owner's goroutine; see pipeline.go for the stages
// around it.
func (d *daemon) loop(ctx context.Context, hup <-chan os.Signal) error {
	d.full = make(chan struct{}, 1)
	d.startStages()
	// early fires when the map filled up and the drain it calls for is
	// due; nil while none is. full checks the kernel's count of packets
	// that found the map full, in case no record of it reaches the
	// reader (the ring buffer full of older ones).
	var early <-chan time.Time
	full := time.NewTicker(earlyDrainInterval)
	defer full.Stop()

	d.tick = time.NewTicker(d.cfg.PollInterval)
	defer d.tick.Stop()
	// systemd's watchdog is pinged from this loop only: a drain, export or
	// reload stuck here stops the pings, and systemd restarts hostflow.
	watchdog, stopWatchdog := d.notify.watchdogTicker()
	defer stopWatchdog()
	d.log.Info("ready", "interfaces", len(d.fetcher.Attached()), "collectors", len(d.sinks))
	if err := d.notify.ready(d.status()); err != nil {
		d.log.Warn("systemd notify", "err", err)
	}
	// recv is direct until the reader stops on an error: a closed
	// channel is always ready, and receiving from it would spin.
	recv := d.direct
	for {
		select {
		case r, ok := <-recv:
			if !ok {
				recv = nil
				continue
			}
			d.addDirect(r)
		case <-d.full:
			if early == nil {
				early = time.After(max(0, earlyDrainInterval-time.Since(d.lastDrain)))
			}
		case <-early:
			early = nil
			d.drain()
		case <-full.C:
			if early == nil && time.Since(d.lastDrain) >= earlyDrainInterval {
				f, err := d.fetcher.Full()
				if err != nil {
					d.mu.Lock()
					d.counts.drainErrors++
					d.mu.Unlock()
					d.log.Debug("read kernel counters", "err", err)
				}
				if f {
					d.drain()
				}
			}
		case <-d.tick.C:
			d.poll()
			if !d.startDone {
				// The first poll ends the start: the link
				// follower, the stages and the first read ran.
				// What only they ran is read-only data and code
				// to give back again (see dropStartupText).
				d.startDone = true
				if err := dropStartupText(); err != nil {
					d.log.Debug("startup text stays mapped", "err", err)
				}
			}
		case <-hup:
			d.reload()
			if recv != nil {
				// A sampling change restarts the reader.
				recv = d.direct
			}
		case r := <-d.ctlReq:
			d.serveControl(r)
		case <-watchdog:
			if err := d.notify.ping(); err != nil {
				d.log.Warn("systemd watchdog", "err", err)
			}
		case <-ctx.Done():
			return d.shutdown(d.direct)
		}
	}
}

// followLinks attaches links that appear or come up and match the rules,
// and releases those that go, until stopLinks.
func (d *daemon) followLinks() {
	ctx, cancel := context.WithCancel(context.Background())
	d.stopLinks = cancel
	d.linksDone = make(chan struct{})
	go func() {
		defer close(d.linksDone)
		if err := d.links.Run(ctx); err != nil {
			d.log.Error("follow link updates: new links are not attached until a reload", "err", err)
		}
	}()
}

// followLinksAgain starts following link updates again if it stopped (the
// subscription failed or ended): the error said a reload restarts it.
// Called from the loop goroutine only, like followLinks.
func (d *daemon) followLinksAgain() {
	select {
	case <-d.linksDone:
		d.log.Info("following link updates again")
		d.followLinks()
	default:
	}
}

func (d *daemon) status() string {
	return fmt.Sprintf("capturing on %d interfaces, exporting to %d sinks", len(d.fetcher.Attached()), len(d.sinks))
}

func (d *daemon) addDirect(r bpf.Record) {
	if r.Id.Fate == exporter.FateArrival {
		d.observe(r.Metrics.Packets, r.Metrics.Bytes)
	}
	d.cache.AddOne(r.Id, &r.Metrics)
	d.exportPushedOut()
	d.mu.Lock()
	d.counts.direct++
	d.mu.Unlock()
}

func (d *daemon) drain() {
	d.lastDrain = time.Now()
	start := d.monotonic()
	ends, endsErr := d.fetcher.TCPEnds()
	if err := d.fetcher.Drain(d.addFlow); err != nil {
		d.mu.Lock()
		d.counts.drainErrors++
		d.mu.Unlock()
		d.log.Error("read kernel flows", "err", err)
		return
	}
	d.lastRead = start
	d.tcpEndsAtRead, d.tcpEndsKnown = ends, endsErr == nil
}

// tcpEndsSinceRead reports whether a TCP packet with FIN or RST may have
// been counted since the last read: yes when the kernel's count grew, or
// either reading failed.
func (d *daemon) tcpEndsSinceRead() bool {
	if !d.tcpEndsKnown {
		return true
	}
	n, err := d.fetcher.TCPEnds()
	return err != nil || n != d.tcpEndsAtRead
}

// readSlack covers the kernel's coarse clock: a packet counted just after
// a read began may be stamped up to a tick or two (at most 10 ms each)
// before it.
const readSlack = 50 * time.Millisecond

// poll runs at each poll interval: it reads what the kernel counted and
// exports the flows that ended. Reading 100k flows costs about a tenth of
// a CPU-second, so a poll skips it when no record could leave yet: before
// the cache's NextEnd, no cached flow has reached a timeout, and a flow
// counted since the last read reaches none sooner than the idle (or
// active) timeout after it, or the TCP end grace if the kernel counted a
// TCP FIN or RST since (tcpEndsSinceRead), and a poll reads at least every
// exporter.MaxUnread. Records leave at the same polls as if every poll
// read; the observed counts (hostflow_observed_*) lag by up to MaxUnread.
//
// In router mode with fates every poll reads: the poll also ends the
// interval for the cache (exporter.Cache.Poll): the arrivals read at
// least the fate hold (cacheConfig) before settle then, and the arrivals
// read since the last poll start their hold. The other drains (early
// ones, control commands) do not end an interval: their arrivals start
// their hold at the next poll, later than they were read, never earlier.
func (d *daemon) poll() {
	if !d.readEveryPoll && !d.fates && d.monotonic() < d.cache.NextEnd(d.lastRead-readSlack, d.tcpEndsSinceRead()) {
		if d.cache.Pending() > 0 { // pushed out: due now
			d.expire()
		}
		d.updateActive()
		return
	}
	d.drain()
	d.cache.Poll()
	d.exportPushedOut()
	d.expire()
	d.updateActive()
}

// monotonic reads the daemon's monotonic clock.
func (d *daemon) monotonic() time.Duration {
	if d.mono != nil {
		return d.mono()
	}
	return exporter.SystemClock{}.Monotonic()
}

// updateActive publishes the cache's gauges and counters for /metrics.
func (d *daemon) updateActive() {
	st := d.cache.Stats()
	d.mu.Lock()
	d.counts.active = st.Active
	d.counts.unmatchedFates = st.UnmatchedFatePackets
	d.counts.earlySettled = st.EarlySettledArrivals
	d.mu.Unlock()
}
