package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/hostflow/hostflow/internal/config"
)

// description says what hostflow does, in --help and the man page.
const description = `hostflow counts every packet's flow on this host's interfaces with eBPF and
exports IPFIX (UDP, TCP, TLS) and NetFlow v9 flow records, like a router's
NetFlow cache (--mode router on a Linux router, where each record also says
what happened to its packets: forwarded, dropped and why, or consumed). With
no collector, each finished flow is printed as one JSON line on stdout.`

// usage is printed before the flag list on --help and on a bad flag. Its
// subcommands come from the command table.
func usage() string {
	var b strings.Builder
	b.WriteString("Usage:\n")
	line := func(synopsis, summary string) {
		fmt.Fprintf(&b, "  %-40s %s\n", synopsis, summary)
	}
	line("hostflow [flags]", "run the probe")
	for _, c := range subcommands() {
		if !c.hidden {
			line(strings.TrimSpace("hostflow "+c.name+" "+c.args), c.summary)
		}
	}
	b.WriteString("\n" + description + "\n\n")
	b.WriteString(`Configuration comes from ` + config.DefaultPath + ` (or --config), HOSTFLOW_*
environment variables and flags; a flag beats the environment, which beats
the file. SIGHUP reloads it. See hostflow(8).

Flags:
`)
	return b.String()
}

// run dispatches the subcommands; with none it runs the daemon until ctx
// is cancelled.
func run(ctx context.Context, args []string, hup <-chan os.Signal, stdout, stderr io.Writer) error {
	if wantsVersion(args) {
		printVersion(stdout)
		return nil
	}
	if len(args) > 0 {
		if c, ok := lookupCommand(args[0]); ok {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	cfg, err := config.Load(args, usage(), stderr)
	if errors.Is(err, config.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := checkEncoders(cfg); err != nil {
		return err
	}
	return runDaemon(ctx, cfg, args, hup, stdout, stderr)
}
