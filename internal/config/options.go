package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/hostflow/hostflow/exporter"
	"github.com/hostflow/hostflow/templates"
)

// kind is how an option is written on the command line.
type kind int

const (
	kindString kind = iota
	kindList        // comma-separated, or a repeatable flag
	kindDuration
	kindInt
	kindBool
)

// option is one configuration key: its file key (dots nest), flag, default
// and how it is decoded into a Config and printed back.
type option struct {
	key        string
	flag       string
	repeatable bool // the flag may be given more than once (lists only)
	// caseSensitive takes the value from the file as written: viper
	// lowercases the keys of a map, and interface names keep their case.
	caseSensitive bool
	kind          kind
	def           any
	usage         string
	// values are an enum's allowed values: Load rejects any other before
	// set, and the man page and shell completions offer them.
	values []string
	// path marks a value naming a file, which shells complete as one.
	path bool
	// restart marks a key a reload cannot change: the running value
	// stays (KeepRestartOnly), and the usage says "(restart to change)".
	restart bool
	set     func(c *Config, v any) error
	get     func(c *Config) any
}

// options lists every key, in the order check-config prints them.
var options = []option{
	{
		key: "interfaces", flag: "interfaces", kind: kindList, def: []string{},
		usage: "interfaces to capture on: comma-separated names and /regex/ patterns and the keywords default (the host's edge, each packet counted once) and all (every interface that is up, except loopback); check-config lists the interfaces captured now",
		set: func(c *Config, v any) error {
			l, err := toIfaceList(v)
			if err != nil {
				return err
			}
			c.Interfaces = l
			return nil
		},
		get: func(c *Config) any { return c.Interfaces },
	},
	{
		key: "exclude_interfaces", flag: "exclude-interfaces", kind: kindList, def: []string{},
		usage: "interfaces never to capture on: comma-separated names and /regex/ patterns",
		set: func(c *Config, v any) error {
			l, err := toIfaceList(v)
			if err != nil {
				return err
			}
			c.ExcludeInterfaces = l
			return nil
		},
		get: func(c *Config) any { return c.ExcludeInterfaces },
	},
	{
		key: "collectors", flag: "collector", repeatable: true, kind: kindList, def: []string{},
		usage: "send flow records to this collector, e.g. ipfix+udp://127.0.0.1:4739 (repeatable; none: print JSON lines on stdout; ipfix+udp://host:port?gso_padding=true pads IPFIX messages to max_message_size so each export is one UDP GSO send whatever its mix: not for nfdump)",
		set: func(c *Config, v any) error {
			l, err := toList(v)
			if err != nil {
				return err
			}
			c.Collectors = nil
			for _, s := range l {
				col, err := ParseCollector(s)
				if err != nil {
					return fmt.Errorf("collector %q: %w", s, err)
				}
				// The same destination with other options
				// (?gso_padding) is listed twice too.
				if i := slices.IndexFunc(c.Collectors, func(o Collector) bool {
					return o.Protocol == col.Protocol && o.Transport == col.Transport && o.Address == col.Address
				}); i >= 0 {
					if c.Collectors[i].URL == s {
						return fmt.Errorf("collector %q: listed twice", s)
					}
					return fmt.Errorf("collector %q: listed twice (also as %q)", s, c.Collectors[i].URL)
				}
				c.Collectors = append(c.Collectors, col)
			}
			return nil
		},
		get: func(c *Config) any {
			out := []string{}
			for _, col := range c.Collectors {
				out = append(out, col.URL)
			}
			return out
		},
	},
	{
		key: "active_timeout", flag: "active-timeout", kind: kindDuration, def: exporter.DefaultActiveTimeout,
		usage: "export a long-lived flow this often",
		set:   durationSetter(func(c *Config) *time.Duration { return &c.ActiveTimeout }),
		get:   func(c *Config) any { return c.ActiveTimeout.String() },
	},
	{
		key: "idle_timeout", flag: "idle-timeout", kind: kindDuration, def: exporter.DefaultIdleTimeout,
		usage: "end a flow after this long without packets",
		set:   durationSetter(func(c *Config) *time.Duration { return &c.IdleTimeout }),
		get:   func(c *Config) any { return c.IdleTimeout.String() },
	},
	{
		key: "max_flows", flag: "max-flows", kind: kindInt, def: exporter.DefaultMaxFlows,
		usage: "flows the user-space cache holds; a new flow beyond that pushes out the least recently seen one, exported with flowEndReason 5 (lack of resources)",
		set:   intSetter(1, 1<<30, func(c *Config) *int { return &c.MaxFlows }),
		get:   func(c *Config) any { return c.MaxFlows },
	},
	{
		key: "poll_interval", flag: "poll-interval", kind: kindDuration, def: time.Second,
		usage: "how often flows are read from the kernel",
		set:   durationSetter(func(c *Config) *time.Duration { return &c.PollInterval }),
		get:   func(c *Config) any { return c.PollInterval.String() },
	},
	{
		key: "kernel_map_size", flag: "kernel-map-size", kind: kindInt, def: 1 << 17, restart: true,
		usage: "flows each kernel map holds, IPv4 and IPv6 each (swapped for an empty one when 7/8 full or 60 s old) before diverting packets to the ring buffer",
		set:   intSetter(1, 1<<26, func(c *Config) *int { return &c.KernelMapSize }),
		get:   func(c *Config) any { return c.KernelMapSize },
	},
	{
		key: "ring_buffer_size", flag: "ring-buffer-size", kind: kindInt, def: DefaultRingBufferSize, restart: true,
		usage: "bytes of the ring buffer that takes packets one by one when the kernel map is full, a power of two from 4096 (about 96 bytes a packet; resident twice in hostflow's memory)",
		set: func(c *Config, v any) error {
			var n int
			if err := intSetter(4096, 1<<30, func(*Config) *int { return &n })(c, v); err != nil {
				return err
			}
			if n&(n-1) != 0 {
				return fmt.Errorf("want a power of two")
			}
			c.RingBufferSize = n
			return nil
		},
		get: func(c *Config) any { return c.RingBufferSize },
	},
	{
		key: "sampling", flag: "sampling", kind: kindInt, def: 0,
		usage: "count a random 1-in-N packets (0 or 1: every packet)",
		set:   intSetter(0, 1<<31-1, func(c *Config) *int { return &c.Sampling }),
		get:   func(c *Config) any { return c.Sampling },
	},
	enumOption(option{
		key: "sampling_algorithm", flag: "sampling-algorithm", restart: true,
		usage: "how 1-in-N packets are picked: random, or count (every Nth packet per CPU)",
	}, SamplingRandom, samplingAlgorithmNames, func(c *Config) *SamplingAlgorithm { return &c.SamplingAlgorithm }),
	enumOption(option{
		key: "attach", flag: "attach", restart: true,
		usage: "how to attach to TC hooks: auto, tcx or clsact",
	}, AttachAuto, attachNames, func(c *Config) *Attach { return &c.Attach }),
	enumOption(option{
		key: "direction", flag: "direction", restart: true,
		usage: "hooks to capture on: ingress, egress, both, or auto (both in host mode, ingress in router mode)",
	}, DirectionAuto, directionNames, func(c *Config) *Direction { return &c.Direction }),
	{
		key: "state_dir", flag: "state-dir", kind: kindString, def: "/run/hostflow", path: true, restart: true,
		usage: "directory recording the clsact qdiscs hostflow created, so a restart after a crash removes them",
		set: func(c *Config, v any) error {
			s, err := toString(v)
			if err != nil {
				return err
			}
			if s != "" && !strings.HasPrefix(s, "/") {
				return fmt.Errorf("want an absolute path")
			}
			c.StateDir = s
			return nil
		},
		get: func(c *Config) any { return c.StateDir },
	},
	{
		key: "control_socket", flag: "control-socket", kind: kindString, def: "/run/hostflow/control.sock", restart: true,
		usage: "unix socket the commands flows, stats and expire ask the daemon through, mode 0660 (the daemon's user and group); empty: none",
		set: func(c *Config, v any) error {
			s, err := toString(v)
			if err != nil {
				return err
			}
			if s != "" && !strings.HasPrefix(s, "/") {
				return fmt.Errorf("want an absolute path")
			}
			// sockaddr_un holds 108 bytes, the terminating NUL included.
			if len(s) > 107 {
				return fmt.Errorf("longer than the 107 bytes a unix socket path may have")
			}
			c.ControlSocket = s
			return nil
		},
		get: func(c *Config) any { return c.ControlSocket },
	},
	{
		key: "observation_domain", flag: "observation-domain", kind: kindInt, def: 0,
		usage: "IPFIX observation domain id",
		set: func(c *Config, v any) error {
			var n int
			if err := intSetter(0, 1<<32-1, func(*Config) *int { return &n })(c, v); err != nil {
				return err
			}
			c.ObservationDomain = uint32(n)
			return nil
		},
		get: func(c *Config) any { return c.ObservationDomain },
	},
	{
		key: "max_message_size", flag: "max-message-size", kind: kindInt, def: exporter.DefaultMaxMessageSize,
		usage: "largest IPFIX message in bytes (keep it under the path MTU minus IP and UDP headers)",
		set:   intSetter(256, 65535, func(c *Config) *int { return &c.MaxMessageSize }),
		get:   func(c *Config) any { return c.MaxMessageSize },
	},
	enumOption(option{
		key: "timestamps", flag: "timestamps", restart: true,
		usage: "flow start/end clock in the kernel: coarse (the last timer tick, 1-4 ms resolution, cheapest) or precise (reads the clock source on every packet)",
	}, TimestampsCoarse, timestampsNames, func(c *Config) *Timestamps { return &c.Timestamps }),
	enumOption(option{
		key: "mode", flag: "mode", restart: true,
		usage: "host: count what this host sends and receives; router: count each packet once as it arrives and export, like a router's NetFlow, one record per fate with its forwarding status: forwarded (egress interface, next hop), dropped with the kernel's reason (firewall, no route, TTL, reverse path...), or consumed by the router; with prefix lengths and NAT translations (fates need Linux 6.3; on older kernels the status is a route lookup at export time)",
	}, ModeHost, modeNames, func(c *Config) *Mode { return &c.Mode }),
	enumOption(option{
		key: "conntrack", flag: "conntrack", restart: true,
		usage: "router mode: how NAT translations are read from conntrack: auto, dump (whole table per export), get (one lookup per flow) or off",
	}, ConntrackAuto, conntrackNames, func(c *Config) *Conntrack { return &c.Conntrack }),
	{
		key: "template_refresh", flag: "template-refresh", kind: kindDuration, def: exporter.DefaultTemplateRefresh,
		usage: "resend templates and options over UDP this often, so a restarted collector decodes again (RFC 7011 section 8.4)",
		set:   durationSetter(func(c *Config) *time.Duration { return &c.TemplateRefresh }),
		get:   func(c *Config) any { return c.TemplateRefresh.String() },
	},
	{
		key: "template_refresh_messages", flag: "template-refresh-messages", kind: kindInt, def: exporter.DefaultTemplateRefreshMessages,
		usage: "also resend templates over UDP every this many messages (0: by time only)",
		set:   intSetter(0, 1<<20, func(c *Config) *int { return &c.TemplateRefreshMessages }),
		get:   func(c *Config) any { return c.TemplateRefreshMessages },
	},
	{
		key: "fields", flag: "fields", kind: kindList, def: []string{},
		usage: "IANA information element names of the flow records, e.g. sourceIPv4Address,octetDeltaCount (default: hostflow's standard layout; IPv4/IPv6 and ingress/egress variants are chosen per template)",
		set: func(c *Config, v any) error {
			l, err := toList(v)
			if err != nil {
				return err
			}
			if len(l) > 0 {
				if _, err := templates.FromNames(templates.IPFIX, l); err != nil {
					return err
				}
			}
			c.Fields = l
			return nil
		},
		get: func(c *Config) any { return c.Fields },
	},
	{
		key: "tcp_end_grace", flag: "tcp-end-grace", kind: kindDuration, def: exporter.DefaultTCPEndGrace,
		usage: "after a TCP FIN or RST, export the flow once it has been quiet this long (flowEndReason 3)",
		set:   durationSetter(func(c *Config) *time.Duration { return &c.TCPEndGrace }),
		get:   func(c *Config) any { return c.TCPEndGrace.String() },
	},
	enumOption(option{
		key: "capture", flag: "capture", restart: true,
		usage: "how packets are seen: tc (TC hooks, the default) or socket (an AF_PACKET socket filter per interface, for hosts where TC cannot be used)",
	}, CaptureTC, captureNames, func(c *Config) *Capture { return &c.Capture }),
	{
		key: "collector_queue", flag: "collector-queue", kind: kindInt, def: exporter.DefaultQueueLength,
		usage: "flow batches (one per poll interval, of at most 4096 records) queued per collector while it is slow or down; beyond, new batches are dropped and counted",
		set:   intSetter(1, 1<<16, func(c *Config) *int { return &c.CollectorQueue }),
		get:   func(c *Config) any { return c.CollectorQueue },
	},
	{
		key: "source_address", flag: "source-address", kind: kindString, def: "",
		usage: "send every export datagram and connection from this local address, so collectors that identify an exporter by its address always see the same one; of the collectors' address family (default: the kernel picks, per route)",
		set: func(c *Config, v any) error {
			s, err := toString(v)
			if err != nil || s == "" {
				c.SourceAddress = netip.Addr{}
				return err
			}
			a, err := netip.ParseAddr(s)
			if err != nil || a.Zone() != "" {
				return fmt.Errorf("want an IPv4 or IPv6 address")
			}
			if a.IsUnspecified() || a.IsMulticast() {
				return fmt.Errorf("want a unicast address of this host")
			}
			c.SourceAddress = a.Unmap()
			return nil
		},
		get: func(c *Config) any {
			if !c.SourceAddress.IsValid() {
				return ""
			}
			return c.SourceAddress.String()
		},
	},
	{
		key: "vrf", flag: "vrf", kind: kindString, def: "",
		usage: "send exports through this VRF device (SO_BINDTODEVICE): its routing table reaches the collectors; it must exist at start and reload",
		set: func(c *Config, v any) error {
			s, err := toString(v)
			if err != nil {
				return err
			}
			if s != "" {
				if err := checkIfName(s); err != nil {
					return err
				}
			}
			c.VRF = s
			return nil
		},
		get: func(c *Config) any { return c.VRF },
	},
	{
		key: "interface_index", flag: "interface-index", kind: kindString, def: "", caseSensitive: true,
		usage: "ifIndex to export for these interfaces instead of the kernel's, for collectors that key on SNMP ifIndex: name=index pairs, e.g. eth0=3,eth1=4 (in the file, a map {eth0: 3}); indexes unique, 1 to 4294967295",
		set: func(c *Config, v any) error {
			m, err := toIndexMap(v)
			c.InterfaceIndex = m
			return err
		},
		get: func(c *Config) any { return c.InterfaceIndex },
	},
	{
		key: "tls.ca_file", flag: "tls-ca-file", kind: kindString, def: "", path: true,
		usage: "PEM file of the CAs that sign ipfix+tls collectors' certificates (default: the system roots)",
		set:   pathSetter(func(c *Config) *string { return &c.TLS.CAFile }),
		get:   func(c *Config) any { return c.TLS.CAFile },
	},
	{
		key: "tls.cert_file", flag: "tls-cert-file", kind: kindString, def: "", path: true,
		usage: "PEM client certificate for ipfix+tls collectors that require mutual authentication",
		set:   pathSetter(func(c *Config) *string { return &c.TLS.CertFile }),
		get:   func(c *Config) any { return c.TLS.CertFile },
	},
	{
		key: "tls.key_file", flag: "tls-key-file", kind: kindString, def: "", path: true,
		usage: "PEM private key of tls.cert_file",
		set:   pathSetter(func(c *Config) *string { return &c.TLS.KeyFile }),
		get:   func(c *Config) any { return c.TLS.KeyFile },
	},
	{
		key: "tls.server_name", flag: "tls-server-name", kind: kindString, def: "",
		usage: "name to verify in ipfix+tls collectors' certificates (default: the host of the collector URL)",
		set: func(c *Config, v any) error {
			s, err := toString(v)
			c.TLS.ServerName = s
			return err
		},
		get: func(c *Config) any { return c.TLS.ServerName },
	},
	{
		key: "log.level", flag: "log-level", kind: kindString, def: "info",
		usage:  "debug, info, warn or error",
		values: []string{"debug", "info", "warn", "error"},
		set: func(c *Config, v any) error {
			s, err := toString(v)
			if err != nil {
				return err
			}
			return c.LogLevel.UnmarshalText([]byte(s))
		},
		get: func(c *Config) any { return strings.ToLower(c.LogLevel.String()) },
	},
	enumOption(option{
		key: "log.format", flag: "log-format", restart: true,
		usage: "log format: text or json",
	}, LogText, logFormatNames, func(c *Config) *LogFormat { return &c.LogFormat }),
	{
		key: "metrics.enabled", flag: "metrics-enabled", kind: kindBool, def: true, restart: true,
		usage: "serve Prometheus metrics on metrics.listen",
		set: func(c *Config, v any) error {
			b, err := toBool(v)
			c.MetricsEnabled = b
			return err
		},
		get: func(c *Config) any { return c.MetricsEnabled },
	},
	{
		key: "metrics.listen", flag: "metrics-listen", kind: kindString, def: "127.0.0.1:9740", restart: true,
		usage: "address of the /metrics endpoint, host:port",
		set: func(c *Config, v any) error {
			s, err := toString(v)
			if err != nil {
				return err
			}
			if err := checkHostPort(s); err != nil {
				return err
			}
			c.MetricsListen = s
			return nil
		},
		get: func(c *Config) any { return c.MetricsListen },
	},
	{
		key: "metrics.pprof", flag: "metrics-pprof", kind: kindBool, def: false, restart: true,
		usage: "also serve Go runtime profiles (heap, CPU, goroutines) under /debug/pprof/ on metrics.listen, for debugging",
		set: func(c *Config, v any) error {
			b, err := toBool(v)
			c.MetricsPprof = b
			return err
		},
		get: func(c *Config) any { return c.MetricsPprof },
	},
}

// Keys returns every configuration key, nested keys with dots.
func Keys() []string {
	out := make([]string, len(options))
	for i, o := range options {
		out[i] = o.key
	}
	return out
}

// EnvName returns the environment variable of a key.
func EnvName(key string) string {
	return EnvPrefix + "_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(key))
}
