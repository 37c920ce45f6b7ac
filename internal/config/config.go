// Package config loads hostflow's configuration from a YAML file,
// HOSTFLOW_* environment variables and command-line flags through one viper
// instance, and validates it. Precedence: flag > environment > file >
// default. Unknown keys and bad values are errors that name the key.
package config

import (
	"log/slog"
	"net/netip"
	"time"

	"github.com/hostflow/hostflow/exporter"
	"github.com/hostflow/hostflow/ifaces"
)

// DefaultPath is the file read when no --config is given. A missing file
// at the default path is not an error: the defaults apply.
const DefaultPath = "/etc/hostflow/hostflow.yaml"

// EnvPrefix starts every environment variable hostflow reads:
// HOSTFLOW_<KEY> with dots and dashes as underscores, e.g.
// HOSTFLOW_ACTIVE_TIMEOUT, HOSTFLOW_METRICS_LISTEN. HOSTFLOW_CONFIG names
// the config file.
const EnvPrefix = "HOSTFLOW"

// DefaultRingBufferSize is ring_buffer_size by default: 1 MiB, room for
// about 10,900 packets between two reads of the ring buffer. The reader
// maps the ring's pages twice, so it costs twice its size in resident
// memory: 2 MiB, where the 4 MiB of bpf.DefaultRingBufSize cost 8.
const DefaultRingBufferSize = 1 << 20

// Config is the daemon's effective configuration.
type Config struct {
	// Interfaces are exact names, /regex/ patterns and the keywords
	// default and all (see ifaces.ParseRules); empty is the default
	// selection, the host's edge (ifaces.Edge). ExcludeInterfaces are never
	// selected.
	Interfaces        []string
	ExcludeInterfaces []string
	// Collectors receive the flow records; none prints JSON lines.
	Collectors []Collector

	ActiveTimeout time.Duration
	IdleTimeout   time.Duration
	MaxFlows      int
	PollInterval  time.Duration
	KernelMapSize int
	// RingBufferSize is the size in bytes of the ring buffer that takes
	// packets one by one when the kernel map is full.
	RingBufferSize    int
	Sampling          int
	SamplingAlgorithm SamplingAlgorithm
	StateDir          string
	// ControlSocket is the path of the control socket; empty: none.
	ControlSocket     string
	Attach            Attach
	Direction         Direction
	ObservationDomain uint32
	MaxMessageSize    int
	// TemplateRefresh and TemplateRefreshMessages: UDP template resends
	// by time and by message count (0 messages: by time only).
	TemplateRefresh         time.Duration
	TemplateRefreshMessages int
	// Fields are the IANA element names of the records; empty is the
	// default layout.
	Fields []string
	// TCPEndGrace delays the export of a TCP flow after FIN or RST.
	TCPEndGrace time.Duration
	// Capture is how packets are seen.
	Capture Capture
	// Timestamps is the kernel clock of flow times.
	Timestamps Timestamps
	// Mode is host or router; Conntrack is router mode's NAT lookup.
	Mode      Mode
	Conntrack Conntrack
	// CollectorQueue is each collector's queue length, in batches.
	CollectorQueue int
	// TLS is for ipfix+tls collectors.
	TLS exporter.TLSConfig
	// SourceAddress, if valid, is the source of every export socket;
	// VRF, if set, the device they are bound to (SO_BINDTODEVICE).
	SourceAddress netip.Addr
	VRF           string
	// InterfaceIndex maps interface names to the ifIndex exported for
	// them instead of the kernel's.
	InterfaceIndex map[string]uint32

	LogLevel  slog.Level
	LogFormat LogFormat

	MetricsEnabled bool
	MetricsListen  string // host:port
	// MetricsPprof serves net/http/pprof on the metrics listener.
	MetricsPprof bool

	// File is the config file that was read, "" when none.
	File string

	rules ifaces.Rules
}

// Rules returns the compiled interface rules, for the mode in force (the
// default selection differs in router mode; a reload keeps the mode).
func (c *Config) Rules() ifaces.Rules { return c.rules.ForMode(c.Router()) }

// Cache returns the flow cache settings.
func (c *Config) Cache() exporter.CacheConfig {
	return exporter.CacheConfig{ActiveTimeout: c.ActiveTimeout, IdleTimeout: c.IdleTimeout, MaxFlows: c.MaxFlows, TCPEndGrace: c.TCPEndGrace}
}

// Ingress and Egress say which TC hooks to capture on. auto is both in
// host mode and ingress in router mode, where a forwarded packet crosses
// an ingress and an egress hook and must be counted once.
func (c *Config) Ingress() bool { return c.Direction != DirectionEgress }
func (c *Config) Egress() bool {
	if c.Direction == DirectionAuto {
		return c.Mode != ModeRouter
	}
	return c.Direction != DirectionIngress
}

// Bind returns where the export sockets send from.
func (c *Config) Bind() exporter.Bind {
	return exporter.Bind{SourceAddress: c.SourceAddress, Device: c.VRF}
}

// Router reports whether hostflow runs in router mode.
func (c *Config) Router() bool { return c.Mode == ModeRouter }
