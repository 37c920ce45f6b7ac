package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/exporter"
)

// usageError is a bad flag or value: the process exits 2 and starts nothing.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// config is the daemon's effective configuration.
type config struct {
	interfaces   ifaceRules
	collectors   []collector
	cache        exporter.CacheConfig
	pollInterval time.Duration
	mapSize      int
	sampling     int
	attachMode   bpf.AttachMode
	direction    string
	logLevel     slog.Level
	obsDomain    uint32
	maxMessage   int
}

// collector is one --collector URL: scheme protocol+transport, host:port.
type collector struct {
	protocol  string // "ipfix"
	transport string // "udp"
	address   string // host:port
	raw       string
}

func (c collector) String() string { return c.raw }

// parseCollector accepts ipfix+udp://host:port (IPv6 hosts in brackets).
func parseCollector(s string) (collector, error) {
	u, err := url.Parse(s)
	if err != nil {
		return collector{}, fmt.Errorf("collector %q: %w", s, err)
	}
	proto, transport, ok := strings.Cut(u.Scheme, "+")
	if !ok {
		return collector{}, fmt.Errorf("collector %q: scheme must be protocol+transport, e.g. ipfix+udp", s)
	}
	if proto != "ipfix" || transport != "udp" {
		return collector{}, fmt.Errorf("collector %q: unsupported scheme %q (supported: ipfix+udp)", s, u.Scheme)
	}
	if u.Port() == "" || u.Hostname() == "" {
		return collector{}, fmt.Errorf("collector %q: want host:port", s)
	}
	if u.Path != "" || u.RawQuery != "" || u.User != nil {
		return collector{}, fmt.Errorf("collector %q: only scheme://host:port is allowed", s)
	}
	return collector{protocol: proto, transport: transport, address: u.Host, raw: s}, nil
}

// ifaceRules selects interfaces by exact name or /regex/. Empty selects
// every interface that is up, except loopback.
type ifaceRules struct {
	names   []string
	regexps []*regexp.Regexp
}

func parseIfaceRules(s string) (ifaceRules, error) {
	var r ifaceRules
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		switch {
		case part == "":
			continue
		case len(part) >= 2 && strings.HasPrefix(part, "/") && strings.HasSuffix(part, "/"):
			re, err := regexp.Compile(part[1 : len(part)-1])
			if err != nil {
				return r, fmt.Errorf("interface pattern %q: %w", part, err)
			}
			r.regexps = append(r.regexps, re)
		default:
			r.names = append(r.names, part)
		}
	}
	return r, nil
}

func (r ifaceRules) empty() bool { return len(r.names) == 0 && len(r.regexps) == 0 }

func (r ifaceRules) match(name string) bool {
	for _, n := range r.names {
		if n == name {
			return true
		}
	}
	for _, re := range r.regexps {
		if re.MatchString(name) {
			return true
		}
	}
	return false
}

const usageText = `Usage: hostflow [flags]

hostflow counts every packet's flow on this host's interfaces with eBPF and
exports IPFIX flow records. With no --collector, each finished flow is printed
as one JSON line on stdout.

Flags:
`

func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("hostflow", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fs.PrintDefaults()
	}
	var (
		ifaces     = fs.String("interfaces", "", "interfaces to capture on: comma-separated names and /regex/ patterns (default: every interface that is up, except loopback)")
		collectors []string
		active     = fs.Duration("active-timeout", exporter.DefaultActiveTimeout, "export a long-lived flow this often")
		idle       = fs.Duration("idle-timeout", exporter.DefaultIdleTimeout, "end a flow after this long without packets")
		poll       = fs.Duration("poll-interval", time.Second, "how often flows are read from the kernel")
		maxFlows   = fs.Int("max-flows", exporter.DefaultMaxFlows, "flows the user-space cache holds; beyond, new flows are exported at once (flowEndReason 5)")
		mapSize    = fs.Int("kernel-map-size", 1<<17, "flows the kernel aggregates per poll interval before diverting packets to the ring buffer")
		sampling   = fs.Int("sampling", 0, "count a random 1-in-N packets (0 or 1: every packet)")
		attach     = fs.String("attach", "auto", "how to attach to TC hooks: auto, tcx or clsact")
		direction  = fs.String("direction", "both", "hooks to capture on: ingress, egress or both")
		logLevel   = fs.String("log-level", "info", "debug, info, warn or error")
		obsDomain  = fs.Uint("observation-domain", 0, "IPFIX observation domain id")
		maxMessage = fs.Int("max-message-size", 1400, "largest IPFIX message in bytes (keep it under the path MTU minus IP and UDP headers)")
	)
	fs.Func("collector", "send IPFIX to this collector, e.g. ipfix+udp://127.0.0.1:4739 (repeatable)", func(s string) error {
		collectors = append(collectors, s)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return config{}, err
		}
		return config{}, &usageError{err}
	}
	if fs.NArg() > 0 {
		return config{}, &usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}

	var errs []error
	cfg := config{
		cache:        exporter.CacheConfig{ActiveTimeout: *active, IdleTimeout: *idle, MaxFlows: *maxFlows},
		pollInterval: *poll,
		mapSize:      *mapSize,
		sampling:     *sampling,
		direction:    *direction,
		obsDomain:    uint32(*obsDomain),
		maxMessage:   *maxMessage,
	}
	var err error
	if cfg.interfaces, err = parseIfaceRules(*ifaces); err != nil {
		errs = append(errs, err)
	}
	for _, s := range collectors {
		c, err := parseCollector(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		cfg.collectors = append(cfg.collectors, c)
	}
	if err := cfg.cache.Validate(); err != nil {
		errs = append(errs, err)
	}
	if *poll <= 0 {
		errs = append(errs, fmt.Errorf("poll interval %v: must be positive", *poll))
	}
	if *mapSize <= 0 {
		errs = append(errs, fmt.Errorf("kernel map size %d: must be positive", *mapSize))
	}
	if *sampling < 0 {
		errs = append(errs, fmt.Errorf("sampling %d: must be 0 or more", *sampling))
	}
	switch *attach {
	case "auto":
		cfg.attachMode = bpf.AttachAuto
	case "tcx":
		cfg.attachMode = bpf.AttachTCX
	case "clsact":
		cfg.attachMode = bpf.AttachClsact
	default:
		errs = append(errs, fmt.Errorf("attach %q: want auto, tcx or clsact", *attach))
	}
	switch *direction {
	case "ingress", "egress", "both":
	default:
		errs = append(errs, fmt.Errorf("direction %q: want ingress, egress or both", *direction))
	}
	if err := cfg.logLevel.UnmarshalText([]byte(*logLevel)); err != nil {
		errs = append(errs, fmt.Errorf("log level %q: want debug, info, warn or error", *logLevel))
	}
	if *obsDomain > 0xffffffff {
		errs = append(errs, fmt.Errorf("observation domain %d: must fit 32 bits", *obsDomain))
	}
	if *maxMessage < 256 || *maxMessage > 65535 {
		errs = append(errs, fmt.Errorf("max message size %d: want 256 to 65535", *maxMessage))
	}
	if len(errs) > 0 {
		return config{}, &usageError{errors.Join(errs...)}
	}
	return cfg, nil
}
