package main

import (
	"context"
	"errors"
	"io"

	"github.com/hostflow/hostflow/internal/config"
	"github.com/spf13/pflag"
)

// command is one subcommand of hostflow.
type command struct {
	name    string
	args    string // what follows the name in the synopsis, e.g. "[flags]"
	summary string // one line, for --help and the man page
	hidden  bool   // not listed in --help, the man page or completions
	// flags returns the subcommand's flag set, for the man page and the
	// shell completions; nil if it takes no flag.
	flags func() *pflag.FlagSet
	// argValues are the words its first argument may be (completions).
	argValues []string
	run       func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// subcommands is the only list of hostflow's subcommands: run dispatches
// on it, and --help, the man page and the shell completions are generated
// from it, so a subcommand added here appears in all of them.
func subcommands() []command {
	return []command{
		{
			name: "check-config", args: "[flags]",
			summary: "validate the configuration, print it and the interfaces captured now",
			flags:   daemonFlags,
			run:     runCheckConfig,
		},
		{
			name: "version", summary: "print the version (also --version, -v)",
			run: func(_ context.Context, _ []string, stdout, _ io.Writer) error {
				printVersion(stdout)
				return nil
			},
		},
		ctlCommand("flows", "[--json] [--sort bytes|packets] [--top N]", "list the running daemon's cached flows"),
		ctlCommand("stats", "[--json]", "print the running daemon's counters"),
		ctlCommand("expire", "", "make the running daemon export every cached flow now"),
		{
			name: "completion", args: "bash|zsh|fish",
			summary:   "print the shell completion script",
			argValues: shells(),
			run:       runCompletion,
		},
		{
			name: "help", summary: "print the usage and flags",
			run: func(_ context.Context, _ []string, _, stderr io.Writer) error {
				_, err := config.Load([]string{"--help"}, usage(), stderr)
				if errors.Is(err, config.ErrHelp) {
					return nil
				}
				return err
			},
		},
		{
			name: "man", summary: "print the man page hostflow(8) (roff)", hidden: true,
			run: func(_ context.Context, _ []string, stdout, _ io.Writer) error {
				return writeMan(stdout)
			},
		},
	}
}

func lookupCommand(name string) (command, bool) {
	for _, c := range subcommands() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// daemonFlags are the flags of the daemon and check-config.
func daemonFlags() *pflag.FlagSet { return config.FlagSet(io.Discard) }

func runCheckConfig(_ context.Context, args []string, stdout, stderr io.Writer) error {
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
	return checkConfig(stdout, cfg)
}

// ctlCommand is a subcommand that asks the running daemon over its
// control socket (runCtl).
func ctlCommand(name, args, summary string) command {
	return command{
		name: name, args: args, summary: summary,
		flags: func() *pflag.FlagSet {
			return ctlFlags(name, new(ctlOptions), new(string), io.Discard)
		},
		run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			return runCtl(ctx, name, args, stdout, stderr)
		},
	}
}
