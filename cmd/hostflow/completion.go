package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/hostflow/hostflow/internal/config"
	"github.com/spf13/pflag"
)

// completionFlag is what a shell needs to know of one flag.
type completionFlag struct {
	name       string
	usage      string
	takesValue bool
	values     []string // an enum's values
	file       bool     // complete a file name
	repeatable bool
}

// completionCommand is a subcommand ("" for the daemon itself) and its
// flags.
type completionCommand struct {
	name, summary string
	flags         []completionFlag
	argValues     []string
}

// completionModel gathers the subcommands and flags the scripts complete,
// from the command table and the flag sets.
func completionModel() []completionCommand {
	out := []completionCommand{{name: "", flags: completionFlags(daemonFlags())}}
	for _, c := range visibleCommands() {
		cc := completionCommand{name: c.name, summary: c.summary, argValues: c.argValues}
		if c.flags != nil {
			cc.flags = completionFlags(c.flags())
		}
		cc.flags = append(cc.flags, completionFlag{name: "help", usage: "print the usage and flags"})
		out = append(out, cc)
	}
	out[0].flags = append(out[0].flags, completionFlag{name: "help", usage: "print the usage and flags"})
	return out
}

func completionFlags(fset *pflag.FlagSet) []completionFlag {
	var out []completionFlag
	fset.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		cf := completionFlag{
			name:       f.Name,
			usage:      shortUsage(f.Usage),
			takesValue: f.NoOptDefVal == "",
			values:     f.Annotations[config.AnnotationValues],
			file:       f.Annotations[config.AnnotationFile] != nil,
			repeatable: strings.HasSuffix(f.Value.Type(), "Array") || strings.HasSuffix(f.Value.Type(), "Slice"),
		}
		out = append(out, cf)
	})
	return out
}

// shortUsage is the usage up to its first parenthesis, semicolon or
// colon ending a word, for the one-line descriptions zsh and fish show.
func shortUsage(s string) string {
	for _, sep := range []string{" (", ";", ": "} {
		if i := strings.Index(s, sep); i > 0 {
			s = s[:i]
		}
	}
	s = strings.TrimSpace(s)
	if len(s) > 70 {
		if i := strings.LastIndex(s[:70], " "); i > 0 {
			s = s[:i]
		}
	}
	return s
}

var completionWriters = map[string]func(io.Writer, []completionCommand) error{
	"bash": writeBashCompletion,
	"zsh":  writeZshCompletion,
	"fish": writeFishCompletion,
}

func shells() []string {
	out := make([]string, 0, len(completionWriters))
	for s := range completionWriters {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

func runCompletion(_ context.Context, args []string, stdout, _ io.Writer) error {
	if len(args) != 1 {
		return &config.Error{Err: fmt.Errorf("completion: want one shell: %s", strings.Join(shells(), ", "))}
	}
	write, ok := completionWriters[args[0]]
	if !ok {
		return &config.Error{Err: fmt.Errorf("completion: unknown shell %q (want %s)", args[0], strings.Join(shells(), ", "))}
	}
	return write(stdout, completionModel())
}

// commandNames returns the subcommands' names, the daemon's "" left out.
func commandNames(cmds []completionCommand) []string {
	var out []string
	for _, c := range cmds[1:] {
		out = append(out, c.name)
	}
	return out
}

func flagWords(flags []completionFlag) []string {
	out := make([]string, len(flags))
	for i, f := range flags {
		out[i] = "--" + f.name
	}
	return out
}
