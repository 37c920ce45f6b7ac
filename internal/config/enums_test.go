package config

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/hostflow/hostflow/bpf"
)

// TestEnums: each enumerated key takes exactly its values, from the file,
// the environment and the flag, into its typed field.
func TestEnums(t *testing.T) {
	for _, tc := range []struct {
		key, value string
		ok         func(*Config) bool
	}{
		{"mode", "host", func(c *Config) bool { return c.Mode == ModeHost && !c.Router() }},
		{"mode", "router", func(c *Config) bool { return c.Mode == ModeRouter && c.Router() }},
		{"direction", "auto", func(c *Config) bool { return c.Direction == DirectionAuto && c.Ingress() && c.Egress() }},
		{"direction", "ingress", func(c *Config) bool { return c.Direction == DirectionIngress && c.Ingress() && !c.Egress() }},
		{"direction", "egress", func(c *Config) bool { return c.Direction == DirectionEgress && !c.Ingress() && c.Egress() }},
		{"direction", "both", func(c *Config) bool { return c.Direction == DirectionBoth && c.Ingress() && c.Egress() }},
		{"attach", "auto", func(c *Config) bool { return c.Attach == AttachAuto && c.Attach.Mode() == bpf.AttachAuto }},
		{"attach", "tcx", func(c *Config) bool { return c.Attach == AttachTCX && c.Attach.Mode() == bpf.AttachTCX }},
		{"attach", "clsact", func(c *Config) bool { return c.Attach == AttachClsact && c.Attach.Mode() == bpf.AttachClsact }},
		{"capture", "tc", func(c *Config) bool { return c.Capture == CaptureTC }},
		{"capture", "socket", func(c *Config) bool { return c.Capture == CaptureSocket }},
		{"timestamps", "coarse", func(c *Config) bool { return c.Timestamps == TimestampsCoarse }},
		{"timestamps", "precise", func(c *Config) bool { return c.Timestamps == TimestampsPrecise }},
		{"sampling_algorithm", "random", func(c *Config) bool {
			return c.SamplingAlgorithm == SamplingRandom && c.SamplingAlgorithm.BPF() == bpf.SamplingRandom
		}},
		{"sampling_algorithm", "count", func(c *Config) bool {
			return c.SamplingAlgorithm == SamplingCount && c.SamplingAlgorithm.BPF() == bpf.SamplingCount
		}},
		{"conntrack", "auto", func(c *Config) bool { return c.Conntrack == ConntrackAuto }},
		{"conntrack", "dump", func(c *Config) bool { return c.Conntrack == ConntrackDump }},
		{"conntrack", "get", func(c *Config) bool { return c.Conntrack == ConntrackGet }},
		{"conntrack", "off", func(c *Config) bool { return c.Conntrack == ConntrackOff }},
		{"log.format", "text", func(c *Config) bool { return c.LogFormat == LogText }},
		{"log.format", "json", func(c *Config) bool { return c.LogFormat == LogJSON }},
	} {
		o := lookup(t, tc.key)
		if !slices.Contains(o.values, tc.value) {
			t.Errorf("%s: %q is not among its values %v", tc.key, tc.value, o.values)
		}
		section, leaf, nested := strings.Cut(tc.key, ".")
		file := tc.key + ": " + tc.value + "\n"
		if nested {
			file = section + ":\n  " + leaf + ": " + tc.value + "\n"
		}
		for how, args := range map[string][]string{
			"file": {"--config", writeFile(t, file)},
			"flag": {"--config", writeFile(t, ""), "--" + o.flag, tc.value},
			"env":  {"--config", writeFile(t, "")},
		} {
			t.Run(tc.key+"="+tc.value+"/"+how, func(t *testing.T) {
				clearEnv(t)
				if how == "env" {
					t.Setenv(EnvName(tc.key), tc.value)
				}
				cfg, err := load(t, args...)
				if err != nil {
					t.Fatal(err)
				}
				if !tc.ok(cfg) {
					t.Errorf("%s: %s loaded into the wrong value", tc.key, tc.value)
				}
				if got := o.get(cfg); got != tc.value {
					t.Errorf("%s prints back as %v", tc.key, got)
				}
			})
		}
	}
}

// TestEnumErrors: a value not among an enumerated key's values is an
// error naming the key, the value and every allowed value.
func TestEnumErrors(t *testing.T) {
	n := 0
	for _, o := range options {
		if o.values == nil {
			continue
		}
		n++
		for _, bad := range []string{"bogus", strings.ToUpper(o.values[len(o.values)-1]), ""} {
			t.Run(o.key+"="+bad, func(t *testing.T) {
				clearEnv(t)
				_, err := load(t, "--config", writeFile(t, ""), "--"+o.flag, bad)
				var ce *Error
				if !errors.As(err, &ce) {
					t.Fatalf("err %v: want *config.Error", err)
				}
				for _, w := range []string{o.key + ` "` + bad + `"`, "want " + strings.Join(o.values, ", ")} {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
			})
		}
	}
	if n < 9 {
		t.Errorf("%d enumerated keys, want at least 9", n)
	}
}

// TestEnumValuesDrive: the values of an enumerated key, which the man page
// and the completions offer, are its type's names.
func TestEnumValuesDrive(t *testing.T) {
	for key, names := range map[string][]string{
		"mode": modeNames, "direction": directionNames, "attach": attachNames, "capture": captureNames,
		"timestamps": timestampsNames, "sampling_algorithm": samplingAlgorithmNames, "conntrack": conntrackNames,
		"log.format": logFormatNames,
	} {
		for _, o := range Options() {
			if o.Key == key && !slices.Equal(o.Values, names) {
				t.Errorf("%s: Options() values %v, want %v", key, o.Values, names)
			}
		}
		fset := FlagSet(nil)
		if got := fset.Lookup(lookup(t, key).flag).Annotations[AnnotationValues]; !slices.Equal(got, names) {
			t.Errorf("%s: completion values %v, want %v", key, got, names)
		}
	}
}

// TestCollectorProtocols: a collector URL's scheme becomes a typed
// protocol and transport.
func TestCollectorProtocols(t *testing.T) {
	for _, tc := range []struct {
		url       string
		protocol  Protocol
		transport Transport
	}{
		{"ipfix+udp://198.18.0.1:4739", ProtocolIPFIX, TransportUDP},
		{"ipfix+tcp://198.18.0.1:4739", ProtocolIPFIX, TransportTCP},
		{"ipfix+tls://[fd00::1]:4739", ProtocolIPFIX, TransportTLS},
		{"netflow9+udp://198.18.0.1:2055", ProtocolNetFlow9, TransportUDP},
	} {
		c, err := ParseCollector(tc.url)
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		if c.Protocol != tc.protocol || c.Transport != tc.transport {
			t.Errorf("%s: %v+%v, want %v+%v", tc.url, c.Protocol, c.Transport, tc.protocol, tc.transport)
		}
		if got := c.Protocol.String() + "+" + c.Transport.String(); !strings.HasPrefix(tc.url, got+"://") {
			t.Errorf("%s: prints as %s", tc.url, got)
		}
	}
	for _, s := range Schemes {
		if _, err := ParseCollector(s + "://198.18.0.1:1"); err != nil {
			t.Errorf("scheme %s: %v", s, err)
		}
	}
	for _, bad := range []string{"netflow9+tcp://198.18.0.1:1", "sflow+udp://198.18.0.1:1"} {
		if _, err := ParseCollector(bad); err == nil || !strings.Contains(err.Error(), "unsupported scheme") {
			t.Errorf("%s: err %v, want unsupported scheme", bad, err)
		}
	}
}

func lookup(t *testing.T, key string) *option {
	t.Helper()
	for i := range options {
		if options[i].key == key {
			return &options[i]
		}
	}
	t.Fatalf("no option %s", key)
	return nil
}
