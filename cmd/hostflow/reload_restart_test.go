package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/hostflow/hostflow/internal/config"
)

// TestReloadRestartKeys: a SIGHUP that changes a key the option table
// marks restart keeps its running value and warns, naming the key; the
// other keys of the same reload apply.
func TestReloadRestartKeys(t *testing.T) {
	for _, tc := range []struct {
		key  string
		flag []string
		kept func(*config.Config) bool
	}{
		{"metrics.pprof", []string{"--metrics-pprof"}, func(c *config.Config) bool { return !c.MetricsPprof }},
		{"conntrack", []string{"--conntrack", "off"}, func(c *config.Config) bool { return c.Conntrack == config.ConntrackAuto }},
		{"mode", []string{"--mode", "router"}, func(c *config.Config) bool { return !c.Router() && c.Egress() }},
		{"control_socket", []string{"--control-socket", "/run/b.sock"}, func(c *config.Config) bool { return c.ControlSocket == "/run/a.sock" }},
		{"log.format", []string{"--log-format", "json"}, func(c *config.Config) bool { return c.LogFormat == config.LogText }},
		{"capture", []string{"--capture", "socket"}, func(c *config.Config) bool { return c.Capture == config.CaptureTC }},
	} {
		t.Run(tc.key, func(t *testing.T) {
			if !slices.Contains(config.RestartKeys(), tc.key) {
				t.Fatalf("%s is no restart key", tc.key)
			}
			f := newFakeFetcher(t)
			d := testDaemon(t, f, "--poll-interval", "5ms", "--control-socket", "/run/a.sock")
			var mu sync.Mutex
			var logs bytes.Buffer
			d.log = slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
				mu.Lock()
				defer mu.Unlock()
				return logs.Write(p)
			}), nil))
			d.args = append([]string{"--config", "/dev/null", "--poll-interval", "5ms", "--control-socket", "/run/a.sock",
				"--sampling", "8"}, tc.flag...)

			ctx, cancel := context.WithCancel(context.Background())
			hup := make(chan os.Signal, 1)
			done := make(chan error, 1)
			f.drained = make(chan struct{})
			go func() { done <- d.loop(ctx, hup) }()
			hup <- syscall.SIGHUP
			for {
				<-f.drained
				d.mu.Lock()
				n := d.reloads.Success + d.reloads.Failure
				d.mu.Unlock()
				if n > 0 {
					break
				}
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("loop: %v", err)
			}
			if d.reloads.Success != 1 {
				t.Fatalf("reloads %+v, want one success", d.reloads)
			}
			if !tc.kept(d.cfg) {
				t.Errorf("%s: the reload changed the running value", tc.key)
			}
			if d.cfg.Sampling != 8 {
				t.Errorf("sampling %d: the reload did not apply it", d.cfg.Sampling)
			}
			mu.Lock()
			out := logs.String()
			mu.Unlock()
			warn := fmt.Sprintf(`level=WARN msg="setting changed: restart hostflow to apply it" key=%s`, tc.key)
			if strings.Count(out, "setting changed") != 1 || !strings.Contains(out, warn) {
				t.Errorf("want one warning %q, logs:\n%s", warn, out)
			}
		})
	}
}
