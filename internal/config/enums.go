package config

import (
	"fmt"
	"slices"
	"strings"

	"github.com/hostflow/hostflow/bpf"
)

// The enumerated keys. Each type's names list is its only definition: a
// constant is its value's index in it, Load accepts exactly these
// values (enumSetter), and the man page and the shell completions offer
// them (option.values).

// Mode is the mode key: what hostflow counts.
type Mode uint8

const (
	// ModeHost counts what this host sends and receives.
	ModeHost Mode = iota
	// ModeRouter counts each forwarded packet once, at ingress, and
	// exports what a router's NetFlow carries.
	ModeRouter
)

var modeNames = []string{"host", "router"}

func (m Mode) String() string { return enumString(modeNames, m) }

// Direction is the direction key: the TC hooks captured on.
type Direction uint8

const (
	// DirectionAuto is both in host mode and ingress in router mode.
	DirectionAuto Direction = iota
	DirectionIngress
	DirectionEgress
	DirectionBoth
)

var directionNames = []string{"auto", "ingress", "egress", "both"}

func (d Direction) String() string { return enumString(directionNames, d) }

// Attach is the attach key: how programs are attached to the TC hooks.
type Attach uint8

const (
	AttachAuto Attach = iota
	AttachTCX
	AttachClsact
)

var attachNames = []string{"auto", "tcx", "clsact"}

func (a Attach) String() string { return enumString(attachNames, a) }

// Mode returns the fetcher's attach mode.
func (a Attach) Mode() bpf.AttachMode {
	return [...]bpf.AttachMode{AttachAuto: bpf.AttachAuto, AttachTCX: bpf.AttachTCX, AttachClsact: bpf.AttachClsact}[a]
}

// Capture is the capture key: how packets are seen.
type Capture uint8

const (
	// CaptureTC attaches to TC hooks.
	CaptureTC Capture = iota
	// CaptureSocket opens an AF_PACKET socket filter per interface.
	CaptureSocket
)

var captureNames = []string{"tc", "socket"}

func (c Capture) String() string { return enumString(captureNames, c) }

// Timestamps is the timestamps key: the kernel clock of flow times.
type Timestamps uint8

const (
	// TimestampsCoarse reads the last timer tick.
	TimestampsCoarse Timestamps = iota
	// TimestampsPrecise reads the clock source on every packet.
	TimestampsPrecise
)

var timestampsNames = []string{"coarse", "precise"}

func (t Timestamps) String() string { return enumString(timestampsNames, t) }

// SamplingAlgorithm is the sampling_algorithm key: how 1-in-N sampling
// picks packets.
type SamplingAlgorithm uint8

const (
	SamplingRandom SamplingAlgorithm = iota
	// SamplingCount picks every Nth packet on each CPU.
	SamplingCount
)

var samplingAlgorithmNames = []string{"random", "count"}

func (s SamplingAlgorithm) String() string { return enumString(samplingAlgorithmNames, s) }

// BPF returns the kernel programs' sampling algorithm.
func (s SamplingAlgorithm) BPF() bpf.SamplingAlgorithm {
	return [...]bpf.SamplingAlgorithm{SamplingRandom: bpf.SamplingRandom, SamplingCount: bpf.SamplingCount}[s]
}

// Conntrack is the conntrack key: how router mode reads NAT translations.
type Conntrack uint8

const (
	ConntrackAuto Conntrack = iota
	ConntrackDump
	ConntrackGet
	ConntrackOff
)

var conntrackNames = []string{"auto", "dump", "get", "off"}

func (c Conntrack) String() string { return enumString(conntrackNames, c) }

// LogFormat is the log.format key.
type LogFormat uint8

const (
	LogText LogFormat = iota
	LogJSON
)

var logFormatNames = []string{"text", "json"}

func (f LogFormat) String() string { return enumString(logFormatNames, f) }

// Protocol is a collector URL's protocol, the scheme before the "+".
type Protocol uint8

const (
	ProtocolIPFIX Protocol = iota
	ProtocolNetFlow9
)

var protocolNames = []string{"ipfix", "netflow9"}

func (p Protocol) String() string { return enumString(protocolNames, p) }

// Transport is a collector URL's transport, the scheme after the "+".
type Transport uint8

const (
	TransportUDP Transport = iota
	TransportTCP
	TransportTLS
)

var transportNames = []string{"udp", "tcp", "tls"}

func (t Transport) String() string { return enumString(transportNames, t) }

func enumString[T ~uint8](names []string, v T) string {
	if int(v) < len(names) {
		return names[v]
	}
	return fmt.Sprintf("%d", v)
}

// parseEnum returns the constant of s in names, or an error listing the
// allowed values (the caller adds the key).
func parseEnum[T ~uint8](names []string, s string) (T, error) {
	i := slices.Index(names, s)
	if i < 0 {
		return 0, fmt.Errorf("want %s", strings.Join(names, ", "))
	}
	return T(i), nil
}

// enumSetter decodes a string into one of names.
func enumSetter[T ~uint8](names []string, field func(*Config) *T) func(*Config, any) error {
	return func(c *Config, v any) error {
		s, err := toString(v)
		if err != nil {
			return err
		}
		e, err := parseEnum[T](names, s)
		if err != nil {
			return err
		}
		*field(c) = e
		return nil
	}
}

// enumOption is the option of an enumerated key: its values, its setter
// and its getter all come from names.
func enumOption[T ~uint8](o option, def T, names []string, field func(*Config) *T) option {
	o.kind = kindString
	o.def = names[def]
	o.values = names
	o.set = enumSetter(names, field)
	o.get = func(c *Config) any { return names[*field(c)] }
	return o
}
