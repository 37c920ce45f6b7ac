package main

import (
	"fmt"
	"io"
	"runtime"
	"strings"
)

// version is set at build time: -ldflags "-X main.version=$(git describe)".
var version = "dev"

func goVersion() string { return runtime.Version() }

func printVersion(w io.Writer) {
	fmt.Fprintf(w, "hostflow %s (%s)\n", version, goVersion())
}

// wantsVersion reports whether the command line of the daemon asks for
// the version: --version or -v (as pmacct's and nfdump's -V, softflowd's
// -v being its NetFlow version), anywhere before "--", and in no
// subcommand but the daemon's own flags. hostflow has no other one-letter
// flag, so -v means nothing else; it prints the version and exits 0
// whatever the other flags are.
func wantsVersion(args []string) bool {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		return false // a subcommand (check-config, flows, ...)
	}
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "--version", "-version", "-v":
			return true
		}
	}
	return false
}
