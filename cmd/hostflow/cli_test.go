package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hostflow/hostflow/internal/config"
)

func runCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, nil, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestVersion(t *testing.T) {
	out, _, err := runCLI(t, "version")
	if err != nil || !strings.HasPrefix(out, "hostflow "+version+" ") {
		t.Errorf("version: %q %v", out, err)
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"help"}, {"check-config", "-h"}} {
		_, errOut, err := runCLI(t, args...)
		if err != nil {
			t.Errorf("%v: %v", args, err)
		}
		for _, w := range []string{"check-config", "--collector", "--interfaces", "--config", "HOSTFLOW_ACTIVE_TIMEOUT"} {
			if !strings.Contains(errOut, w) {
				t.Errorf("%v: usage lacks %q", args, w)
			}
		}
	}
}

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("sampling: 5\ncollectors: [ipfix+udp://127.0.0.1:4739]\n"), 0o644)
	out, _, err := runCLI(t, "check-config", "--config", good, "--idle-timeout", "7s")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"sampling: 5", "idle_timeout: 7s", "- ipfix+udp://127.0.0.1:4739", "file: " + good} {
		if !strings.Contains(out, w) {
			t.Errorf("check-config output lacks %q:\n%s", w, out)
		}
	}

	// The interfaces captured now follow, as comments: every namespace
	// has lo, never captured by default.
	if !strings.Contains(out, "# interfaces captured now (host mode, interfaces: default):\n# IFINDEX  NAME") ||
		!regexp.MustCompile(`(?m)^# 1 +lo +device +no +loopback$`).MatchString(out) {
		t.Errorf("check-config does not list the interfaces:\n%s", out)
	}

	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("sampling: -1\n"), 0o644)
	out, _, err = runCLI(t, "check-config", "--config", bad)
	var ce *config.Error
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "sampling -1") || out != "" {
		t.Errorf("bad config: out %q err %v: want a config.Error naming sampling -1 and no output", out, err)
	}
}

// TestBadConfigStartsNothing: the daemon returns the config error before
// loading anything (no root needed: it never gets that far).
func TestBadConfigStartsNothing(t *testing.T) {
	_, _, err := runCLI(t, "--config", filepath.Join(t.TempDir(), "missing.yaml"))
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Errorf("err %v: want config.Error (exit 2)", err)
	}
	_, _, err = runCLI(t, "--attach", "xdp")
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), `attach "xdp"`) {
		t.Errorf("err %v: want config.Error naming attach", err)
	}
}

func TestCapabilities(t *testing.T) {
	err := checkCapabilities()
	if os.Geteuid() == 0 && err != nil {
		t.Errorf("root: %v", err)
	}
	if err != nil && !strings.Contains(err.Error(), "missing CAP_") {
		t.Errorf("error does not name the capability: %v", err)
	}
}

// TestCheckConfigEncoders: a setting only the encoder can judge (a
// max_message_size the IPFIX templates do not fit) fails check-config and
// the daemon's start as a config error naming the collector, before
// anything is loaded.
func TestCheckConfigEncoders(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"ipfix-small", "max_message_size: 300\ncollectors: [ipfix+udp://127.0.0.1:4739]\n", "ipfix+udp://127.0.0.1:4739: ipfix config: max message size 300 not in ["},
		{"v9-small", "max_message_size: 256\ncollectors: [netflow9+udp://127.0.0.1:2055]\n", "netflow9+udp://127.0.0.1:2055: netflow9 config: max message size 256 not in ["},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(dir, tc.name+".yaml")
			if err := os.WriteFile(f, []byte(tc.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{{"check-config", "--config", f}, {"--config", f}} {
				out, _, err := runCLI(t, args...)
				var ce *config.Error
				if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) || out != "" {
					t.Errorf("%v: out %q err %v: want a config.Error containing %q and no output", args, out, err, tc.want)
				}
			}
		})
	}
	// The smallest size the default IPFIX templates fit passes.
	ok := filepath.Join(dir, "ok.yaml")
	os.WriteFile(ok, []byte("max_message_size: 1400\ncollectors: [ipfix+udp://127.0.0.1:4739, netflow9+udp://127.0.0.1:2055]\n"), 0o644)
	if _, _, err := runCLI(t, "check-config", "--config", ok); err != nil {
		t.Errorf("check-config of a good config: %v", err)
	}
}
