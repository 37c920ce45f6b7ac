package main

import (
	"strings"
	"testing"
)

func TestVersionFlags(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"-v"}, {"-version"}, {"--config", "/dev/null", "-v"}, {"--log-level", "debug", "--version"}} {
		out, _, err := runCLI(t, args...)
		if err != nil || !strings.HasPrefix(out, "hostflow "+version+" (go") {
			t.Errorf("%q: %q, %v", args, out, err)
		}
	}
	// Not a version request: a subcommand's argument, or after "--".
	for _, args := range [][]string{{"check-config", "--version"}, {"--", "-v"}, {"flows", "-v"}} {
		if wantsVersion(args) {
			t.Errorf("%q: taken as a version request", args)
		}
	}
}
