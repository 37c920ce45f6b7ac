package config

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// ConfigEnv names the configuration file when --config is not given.
const ConfigEnv = configEnv

// Flag annotations set on the flags of FlagSet, read by the shell
// completion generators.
const (
	// AnnotationValues lists an enum flag's allowed values.
	AnnotationValues = "hostflow_values"
	// AnnotationFile marks a flag whose value is a file or directory.
	AnnotationFile = "hostflow_file"
)

// Option describes one configuration key for the man page and the shell
// completions. The option table in options.go is its only source.
type Option struct {
	Key        string   // file key, nested keys with dots
	Flag       string   // command-line flag, without the dashes
	Env        string   // environment variable
	Type       string   // list, duration, int, bool or string
	Default    string   // the default as check-config prints it; "" for none
	Usage      string   // what the key does
	Values     []string // an enum's allowed values, or nil
	Path       bool     // the value names a file or directory
	Repeatable bool     // the flag may be given more than once
	Restart    bool     // a reload keeps the running value
}

// Options returns every configuration key, in the order of the option
// table (check-config's).
func Options() []Option {
	out := make([]Option, len(options))
	for i, o := range options {
		out[i] = Option{
			Key: o.key, Flag: o.flag, Env: EnvName(o.key), Type: o.kind.String(),
			Default: showDefault(o.def), Usage: o.usageText(), Values: o.values, Path: o.path,
			Repeatable: o.repeatable, Restart: o.restart,
		}
	}
	return out
}

// FlagSet returns the flags of the daemon and of check-config: --config
// and one per key, annotated for shell completion.
func FlagSet(stderr io.Writer) *pflag.FlagSet {
	fset, _ := newFlagSet("", stderr)
	return fset
}

func (k kind) String() string {
	switch k {
	case kindList:
		return "list"
	case kindDuration:
		return "duration"
	case kindInt:
		return "int"
	case kindBool:
		return "bool"
	}
	return "string"
}

func showDefault(def any) string {
	switch d := def.(type) {
	case []string:
		return strings.Join(d, ",")
	case time.Duration:
		return d.String()
	}
	return fmt.Sprint(def)
}

// annotate marks the flags of fset for shell completion.
func annotate(fset *pflag.FlagSet) {
	_ = fset.SetAnnotation("config", AnnotationFile, []string{"true"})
	for _, o := range options {
		if o.values != nil {
			_ = fset.SetAnnotation(o.flag, AnnotationValues, o.values)
		}
		if o.path {
			_ = fset.SetAnnotation(o.flag, AnnotationFile, []string{"true"})
		}
	}
}
