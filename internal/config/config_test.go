package config

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hostflow/hostflow/ifaces"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hostflow.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func load(t *testing.T, args ...string) (*Config, error) {
	t.Helper()
	return Load(args, "usage\n", io.Discard)
}

// clearEnv hides HOSTFLOW_* variables of the environment the test runs in.
func clearEnv(t *testing.T) {
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, EnvPrefix+"_") {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
}

func TestDefaults(t *testing.T) {
	clearEnv(t)
	cfg, err := load(t, "--config", writeFile(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ActiveTimeout != time.Minute || cfg.IdleTimeout != 15*time.Second || cfg.PollInterval != time.Second ||
		cfg.Sampling != 0 || cfg.Attach != AttachAuto || cfg.Direction != DirectionAuto || cfg.MaxMessageSize != 1400 ||
		cfg.Mode != ModeHost || !cfg.Ingress() || !cfg.Egress() ||
		!cfg.MetricsEnabled || cfg.MetricsListen != "127.0.0.1:9740" || cfg.LogFormat != LogText ||
		len(cfg.Collectors) != 0 || len(cfg.Interfaces) != 0 {
		t.Errorf("defaults: %+v", cfg)
	}
}

// TestRouterModeDirection: router mode counts at ingress only unless the
// direction is set.
func TestRouterModeDirection(t *testing.T) {
	clearEnv(t)
	for _, tt := range []struct {
		args            []string
		ingress, egress bool
	}{
		{[]string{"--mode", "router"}, true, false},
		{[]string{"--mode", "router", "--direction", "both"}, true, true},
		{[]string{"--mode", "host", "--direction", "egress"}, false, true},
	} {
		cfg, err := load(t, append([]string{"--config", writeFile(t, "")}, tt.args...)...)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Ingress() != tt.ingress || cfg.Egress() != tt.egress || !cfg.Router() != (tt.args[1] == "host") {
			t.Errorf("%v: ingress %v egress %v router %v", tt.args, cfg.Ingress(), cfg.Egress(), cfg.Router())
		}
	}
	if _, err := load(t, "--config", writeFile(t, ""), "--mode", "switch"); err == nil {
		t.Error("--mode switch: no error")
	}
}

// TestPrecedence: flag > env > file > default, key by key.
func TestPrecedence(t *testing.T) {
	clearEnv(t)
	file := writeFile(t, `
active_timeout: 30s
idle_timeout: 10s
sampling: 2
collectors: [ipfix+udp://127.0.0.1:1]
log:
  level: warn
`)
	t.Setenv("HOSTFLOW_IDLE_TIMEOUT", "5s")
	t.Setenv("HOSTFLOW_SAMPLING", "3")
	t.Setenv("HOSTFLOW_LOG_LEVEL", "debug")
	cfg, err := load(t, "--config", file, "--sampling", "4", "--collector", "ipfix+udp://127.0.0.1:2", "--collector", "ipfix+udp://[::1]:3")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ActiveTimeout != 30*time.Second {
		t.Errorf("active_timeout %v: want the file's 30s", cfg.ActiveTimeout)
	}
	if cfg.IdleTimeout != 5*time.Second {
		t.Errorf("idle_timeout %v: want the env's 5s", cfg.IdleTimeout)
	}
	if cfg.Sampling != 4 {
		t.Errorf("sampling %d: want the flag's 4", cfg.Sampling)
	}
	if cfg.LogLevel.String() != "DEBUG" {
		t.Errorf("log.level %v: want the env's debug", cfg.LogLevel)
	}
	if len(cfg.Collectors) != 2 || cfg.Collectors[1].Address != "[::1]:3" {
		t.Errorf("collectors %v: want the two flags'", cfg.Collectors)
	}
	if cfg.MaxFlows != 1<<18 {
		t.Errorf("max_flows %d: want the default", cfg.MaxFlows)
	}
	if cfg.File != file {
		t.Errorf("file %q", cfg.File)
	}
}

func TestEnvLists(t *testing.T) {
	clearEnv(t)
	t.Setenv("HOSTFLOW_COLLECTORS", "ipfix+udp://127.0.0.1:1, ipfix+udp://127.0.0.1:2")
	t.Setenv("HOSTFLOW_INTERFACES", "eth0,/^veth[0-9]{1,2}$/")
	t.Setenv("HOSTFLOW_CONFIG", writeFile(t, "sampling: 9\n"))
	cfg, err := load(t)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Collectors) != 2 {
		t.Errorf("collectors %v", cfg.Collectors)
	}
	if strings.Join(cfg.Interfaces, " ") != "eth0 /^veth[0-9]{1,2}$/" {
		t.Errorf("interfaces %q", cfg.Interfaces)
	}
	if cfg.Sampling != 9 {
		t.Errorf("HOSTFLOW_CONFIG not read: sampling %d", cfg.Sampling)
	}
	if !cfg.Rules().Match(ifaces.Link{Name: "veth1", Up: true}) || cfg.Rules().Match(ifaces.Link{Name: "vethab", Up: true}) {
		t.Errorf("rules %v", cfg.Rules())
	}
}

// TestErrors: each bad input is a *Error naming the key and the value.
func TestErrors(t *testing.T) {
	clearEnv(t)
	for _, tc := range []struct {
		name string
		file string
		env  [2]string
		args []string
		want []string
	}{
		{name: "unknown key", file: "samplng: 2\n", want: []string{"unknown key samplng"}},
		{name: "unknown nested key", file: "metrics:\n  listn: x\n", want: []string{"unknown key metrics.listn"}},
		{name: "section as value", file: "log: debug\n", want: []string{"unknown key log"}},
		{name: "duration without unit", file: "idle_timeout: 30\n", want: []string{"idle_timeout 30", "unit"}},
		{name: "bad duration", file: "active_timeout: soon\n", want: []string{`active_timeout "soon"`}},
		{name: "negative duration", file: "poll_interval: -1s\n", want: []string{`poll_interval "-1s"`, "positive"}},
		{name: "bad int", file: "sampling: many\n", want: []string{`sampling "many"`}},
		{name: "int range", file: "max_message_size: 100\n", want: []string{"max_message_size 100", "256 to 65535"}},
		{name: "ring not a power of two", file: "ring_buffer_size: 100000\n", want: []string{"ring_buffer_size 100000", "power of two"}},
		{name: "ring too small", file: "ring_buffer_size: 2048\n", want: []string{"ring_buffer_size 2048", "4096 to"}},
		{name: "enum", file: "attach: xdp\n", want: []string{`attach "xdp"`, "auto, tcx, clsact"}},
		{name: "collector scheme", file: "collectors: [udp://1.2.3.4:5]\n", want: []string{"collectors", `"udp://1.2.3.4:5"`}},
		{name: "collector port", file: "collectors: [ipfix+udp://1.2.3.4]\n", want: []string{"collectors", "host:port"}},
		{name: "collector twice", file: "collectors: [ipfix+udp://1.2.3.4:5, ipfix+udp://1.2.3.4:5]\n", want: []string{"listed twice"}},
		{name: "regex", file: "interfaces: [\"/(/\"]\n", want: []string{"interfaces", `"/(/"`}},
		{name: "exclude regex", file: "exclude_interfaces: [\"/(/\"]\n", want: []string{"exclude_interfaces"}},
		{name: "metrics listen", file: "metrics:\n  listen: nowhere\n", want: []string{`metrics.listen "nowhere"`}},
		{name: "bad yaml", file: "sampling: [\n", want: []string{"parse yaml"}},
		{name: "env value", env: [2]string{"HOSTFLOW_MAX_FLOWS", "lots"}, want: []string{`max_flows "lots"`}},
		{name: "env typo", env: [2]string{"HOSTFLOW_SAMPLNG", "2"}, want: []string{"HOSTFLOW_SAMPLNG", "unknown"}},
		{name: "flag value", args: []string{"--sampling", "x"}, want: []string{`"x"`, "--sampling"}},
		{name: "unknown flag", args: []string{"--bogus"}, want: []string{"bogus"}},
		{name: "argument", args: []string{"extra"}, want: []string{`"extra"`}},
		{name: "fields not in v9", file: "collectors: [netflow9+udp://198.18.0.9:2055]\nfields: [packetDeltaCount, droppedPacketDeltaCount]\n",
			want: []string{"fields: collector netflow9+udp://198.18.0.9:2055", "droppedPacketDeltaCount (133) has no NetFlow v9 field type"}},
		{name: "dropped octets not in v9", file: "collectors: [ipfix+udp://198.18.0.9:4739, netflow9+udp://198.18.0.9:2055]\nfields: [droppedOctetDeltaCount]\n",
			want: []string{"netflow9+udp://198.18.0.9:2055", "droppedOctetDeltaCount (132)"}},
		{name: "missing file", args: []string{"--config", "/nonexistent/hostflow.yaml"}, want: []string{"/nonexistent/hostflow.yaml"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env[0] != "" {
				t.Setenv(tc.env[0], tc.env[1])
			}
			args := tc.args
			if !strings.Contains(strings.Join(args, " "), "--config") {
				args = append([]string{"--config", writeFile(t, tc.file)}, args...)
			}
			_, err := load(t, args...)
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("err %v: want *config.Error", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestNoDefaultFile(t *testing.T) {
	clearEnv(t)
	// Not at the default path and not named: the defaults apply. The
	// default path is fixed, so this only runs where it does not exist.
	if _, err := os.Stat(DefaultPath); err == nil {
		t.Skipf("%s exists", DefaultPath)
	}
	cfg, err := load(t)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.File != "" {
		t.Errorf("file %q", cfg.File)
	}
}

// TestShippedFile: etc/hostflow.yaml loads, documents every key, and its
// values are the defaults except the example collector.
func TestShippedFile(t *testing.T) {
	clearEnv(t)
	path := filepath.Join("..", "..", "etc", "hostflow.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := load(t, "--config", path)
	if err != nil {
		t.Fatalf("shipped config: %v", err)
	}
	for _, k := range Keys() {
		leaf := k[strings.LastIndex(k, ".")+1:]
		if !strings.Contains(string(data), "\n"+leaf+":") && !strings.Contains(string(data), "  "+leaf+":") {
			t.Errorf("key %s is not in %s", k, path)
		}
	}
	def, err := load(t, "--config", writeFile(t, "collectors: [ipfix+udp://127.0.0.1:4739]\n"))
	if err != nil {
		t.Fatal(err)
	}
	var a, b strings.Builder
	cfg.File, def.File = "", ""
	if err := cfg.WriteYAML(&a); err != nil {
		t.Fatal(err)
	}
	if err := def.WriteYAML(&b); err != nil {
		t.Fatal(err)
	}
	if a.String() != b.String() {
		t.Errorf("shipped values differ from the defaults:\n%s\nwant\n%s", a.String(), b.String())
	}
}

// TestWriteYAMLRoundTrip: what check-config prints loads back to the same.
func TestWriteYAMLRoundTrip(t *testing.T) {
	clearEnv(t)
	cfg, err := load(t, "--config", writeFile(t, ""), "--interfaces", "eth0,/^en/", "--collector", "ipfix+udp://[fd00::1]:4739",
		"--sampling", "10", "--log-level", "debug", "--metrics-enabled=false")
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := cfg.WriteYAML(&out); err != nil {
		t.Fatal(err)
	}
	again, err := load(t, "--config", writeFile(t, out.String()))
	if err != nil {
		t.Fatalf("printed config does not load: %v\n%s", err, out.String())
	}
	var out2 strings.Builder
	again.File = cfg.File
	if err := again.WriteYAML(&out2); err != nil {
		t.Fatal(err)
	}
	if out.String() != out2.String() {
		t.Errorf("round trip:\n%s\n---\n%s", out.String(), out2.String())
	}
}

// TestSingleDash: flags as the standard flag package took them still work.
func TestSingleDash(t *testing.T) {
	clearEnv(t)
	cfg, err := load(t, "-config", writeFile(t, ""), "-sampling", "3", "-interfaces=eth0", "-collector", "ipfix+udp://127.0.0.1:1",
		"-metrics-enabled", "-log-level", "warn")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Sampling != 3 || cfg.Interfaces[0] != "eth0" || len(cfg.Collectors) != 1 || cfg.LogLevel.String() != "WARN" {
		t.Errorf("single-dash flags: %+v", cfg)
	}
}

// TestRulesFollowMode: the default interface selection is router mode's
// with --mode router (bridges, not their ports), and follows the mode in
// force when a reload keeps the running mode.
func TestRulesFollowMode(t *testing.T) {
	clearEnv(t)
	cfg, err := load(t, "--config", writeFile(t, ""), "--mode", "router")
	if err != nil {
		t.Fatal(err)
	}
	br := ifaces.Link{Name: "br0", Kind: "bridge", Up: true}
	if !cfg.Rules().Router() || !cfg.Rules().Match(br) {
		t.Errorf("router mode: rules %v select bridge %v", cfg.Rules(), cfg.Rules().Match(br))
	}
	cfg.Mode = ModeHost // as reload does when the mode changed: it needs a restart
	if cfg.Rules().Router() || cfg.Rules().Match(br) {
		t.Errorf("host mode kept: rules still router mode's")
	}
}

// TestFieldsIPFIXOnly: elements v9 cannot carry are fine with IPFIX
// collectors alone.
func TestFieldsIPFIXOnly(t *testing.T) {
	clearEnv(t)
	cfg, err := load(t, "--config", writeFile(t, "collectors: [ipfix+udp://198.18.0.9:4739]\nfields: [forwardingStatus, droppedPacketDeltaCount, droppedOctetDeltaCount]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Fields) != 3 {
		t.Errorf("fields %v", cfg.Fields)
	}
}
