package config

import (
	"strings"
	"testing"
)

// TestCheckEnvServiceLinks: the variables Kubernetes gives every pod of a
// namespace with a Service named hostflow (or hostflow-something) are no
// error; a misspelt key, or a service-link name with a value Kubernetes
// never writes, still is.
func TestCheckEnvServiceLinks(t *testing.T) {
	for _, tc := range []struct {
		name    string
		environ []string
		bad     []string // variables the error must name; none: no error
	}{
		{name: "service hostflow, udp port", environ: []string{
			"HOSTFLOW_SERVICE_HOST=10.96.12.7",
			"HOSTFLOW_SERVICE_PORT=4739",
			"HOSTFLOW_SERVICE_PORT_IPFIX=4739",
			"HOSTFLOW_PORT=udp://10.96.12.7:4739",
			"HOSTFLOW_PORT_4739_UDP=udp://10.96.12.7:4739",
			"HOSTFLOW_PORT_4739_UDP_PROTO=udp",
			"HOSTFLOW_PORT_4739_UDP_PORT=4739",
			"HOSTFLOW_PORT_4739_UDP_ADDR=10.96.12.7",
		}},
		{name: "service hostflow-metrics, IPv6, two ports", environ: []string{
			"HOSTFLOW_METRICS_SERVICE_HOST=fd00::9:1",
			"HOSTFLOW_METRICS_SERVICE_PORT=9740",
			"HOSTFLOW_METRICS_SERVICE_PORT_HTTP_METRICS=9740",
			"HOSTFLOW_METRICS_PORT=tcp://[fd00::9:1]:9740",
			"HOSTFLOW_METRICS_PORT_9740_TCP=tcp://[fd00::9:1]:9740",
			"HOSTFLOW_METRICS_PORT_9740_TCP_PROTO=tcp",
			"HOSTFLOW_METRICS_PORT_9740_TCP_PORT=9740",
			"HOSTFLOW_METRICS_PORT_9740_TCP_ADDR=fd00::9:1",
			"HOSTFLOW_METRICS_PORT_4739_SCTP=sctp://[fd00::9:1]:4739",
		}},
		{name: "keys and other prefixes", environ: []string{
			"HOSTFLOW_IDLE_TIMEOUT=10s", "HOSTFLOW_METRICS_LISTEN=:9740", "HOSTFLOW_CONFIG=/x.yaml", "KUBERNETES_PORT=tcp://10.96.0.1:443",
		}},
		{name: "misspelt key", environ: []string{"HOSTFLOW_SERVICE_HOST=10.96.12.7", "HOSTFLOW_IDLE_TIMOUT=10s"}, bad: []string{"HOSTFLOW_IDLE_TIMOUT"}},
		{name: "port-like key with a plain value", environ: []string{"HOSTFLOW_METRICS_PORT=9740"}, bad: []string{"HOSTFLOW_METRICS_PORT"}},
		{name: "service host not an address", environ: []string{"HOSTFLOW_SERVICE_HOST=collector.example"}, bad: []string{"HOSTFLOW_SERVICE_HOST"}},
		{name: "service port not a port", environ: []string{"HOSTFLOW_SERVICE_PORT=ipfix", "HOSTFLOW_SERVICE_PORT_X=70000"}, bad: []string{"HOSTFLOW_SERVICE_PORT:", "HOSTFLOW_SERVICE_PORT_X"}},
		{name: "link of another protocol", environ: []string{"HOSTFLOW_PORT_4739_UDP=tcp://10.96.12.7:4739"}, bad: []string{"HOSTFLOW_PORT_4739_UDP"}},
		{name: "link of another port", environ: []string{"HOSTFLOW_PORT_4739_UDP=udp://10.96.12.7:4740", "HOSTFLOW_PORT_4739_UDP_PORT=4740"}, bad: []string{"HOSTFLOW_PORT_4739_UDP:", "HOSTFLOW_PORT_4739_UDP_PORT"}},
		{name: "proto mismatch", environ: []string{"HOSTFLOW_PORT_4739_UDP_PROTO=tcp"}, bad: []string{"HOSTFLOW_PORT_4739_UDP_PROTO"}},
		{name: "addr not an address", environ: []string{"HOSTFLOW_PORT_4739_UDP_ADDR=x"}, bad: []string{"HOSTFLOW_PORT_4739_UDP_ADDR"}},
		{name: "unknown protocol", environ: []string{"HOSTFLOW_PORT=http://10.96.12.7:80", "HOSTFLOW_PORT_80_HTTP=http://10.96.12.7:80"}, bad: []string{"HOSTFLOW_PORT:", "HOSTFLOW_PORT_80_HTTP"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkEnv(tc.environ)
			if len(tc.bad) == 0 {
				if err != nil {
					t.Fatalf("error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want one naming %v", tc.bad)
			}
			msg := err.Error()
			for _, b := range tc.bad {
				if !strings.Contains(msg, "environment "+b) {
					t.Errorf("error %q does not name %q", msg, b)
				}
			}
			if n := strings.Count(msg, "environment "); n != len(tc.bad) {
				t.Errorf("error names %d variables, want %d: %q", n, len(tc.bad), msg)
			}
		})
	}
}

// TestLoadServiceLinks: the daemon starts in a pod of a namespace with a
// Service named hostflow, and the variables change no setting.
func TestLoadServiceLinks(t *testing.T) {
	clearEnv(t)
	t.Setenv("HOSTFLOW_SERVICE_HOST", "10.96.12.7")
	t.Setenv("HOSTFLOW_SERVICE_PORT", "4739")
	t.Setenv("HOSTFLOW_PORT", "udp://10.96.12.7:4739")
	t.Setenv("HOSTFLOW_PORT_4739_UDP", "udp://10.96.12.7:4739")
	t.Setenv("HOSTFLOW_PORT_4739_UDP_PROTO", "udp")
	t.Setenv("HOSTFLOW_PORT_4739_UDP_PORT", "4739")
	t.Setenv("HOSTFLOW_PORT_4739_UDP_ADDR", "10.96.12.7")
	cfg, err := load(t, "--config", writeFile(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Collectors) != 0 || cfg.MetricsListen != "127.0.0.1:9740" {
		t.Errorf("service links changed the config: %+v", cfg)
	}
}
