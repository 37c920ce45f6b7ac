package main

import (
	"context"
	"errors"
	"io"
	"os"

	"github.com/hostflow/hostflow/internal/config"
)

const usageText = `Usage:
  hostflow [flags]                  run the probe
  hostflow check-config [flags]     validate the configuration, print it and the interfaces captured now
  hostflow version                  print the version (also --version, -v)
  hostflow flows [--json] [--sort bytes|packets] [--top N]
                                    list the running daemon's cached flows
  hostflow stats [--json]           print the running daemon's counters
  hostflow expire                   make the running daemon export every flow now

hostflow counts every packet's flow on this host's interfaces with eBPF and
exports IPFIX (UDP, TCP, TLS) and NetFlow v9 flow records, like a router's
NetFlow cache (--mode router on a Linux router). With no collector, each
finished flow is printed as one JSON line on stdout.

Configuration comes from ` + config.DefaultPath + ` (or --config), HOSTFLOW_*
environment variables and flags; a flag beats the environment, which beats
the file. SIGHUP reloads it.

Flags:
`

// run dispatches the subcommands; with none it runs the daemon until ctx
// is cancelled.
func run(ctx context.Context, args []string, hup <-chan os.Signal, stdout, stderr io.Writer) error {
	if wantsVersion(args) {
		printVersion(stdout)
		return nil
	}
	if len(args) > 0 {
		if ctlCommands[args[0]] {
			return runCtl(ctx, args[0], args[1:], stdout, stderr)
		}
		switch args[0] {
		case "version":
			printVersion(stdout)
			return nil
		case "check-config":
			cfg, err := config.Load(args[1:], usageText, stderr)
			if errors.Is(err, config.ErrHelp) {
				return nil
			}
			if err != nil {
				return err
			}
			return checkConfig(stdout, cfg)
		case "help":
			_, err := config.Load([]string{"--help"}, usageText, stderr)
			if errors.Is(err, config.ErrHelp) {
				return nil
			}
			return err
		}
	}
	cfg, err := config.Load(args, usageText, stderr)
	if errors.Is(err, config.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	return runDaemon(ctx, cfg, args, hup, stdout, stderr)
}
