package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hostflow/hostflow/ifaces"
	"github.com/hostflow/hostflow/templates"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// Error is a bad flag, key or value: the daemon exits 2 and starts nothing.
type Error struct{ Err error }

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// ErrHelp is returned by Load after it printed the usage for --help.
var ErrHelp = pflag.ErrHelp

// configEnv names the config file, below --config.
const configEnv = EnvPrefix + "_CONFIG"

// Load parses args (the flags after any subcommand), reads the config file
// and the environment, and returns the validated configuration. usage is
// printed before the flag list on --help and on a bad flag.
func Load(args []string, usage string, stderr io.Writer) (*Config, error) {
	fset, configPath := newFlagSet(usage, stderr)
	if err := fset.Parse(singleDash(fset, args)); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil, ErrHelp
		}
		return nil, &Error{err}
	}
	if fset.NArg() > 0 {
		return nil, &Error{fmt.Errorf("unexpected argument %q", fset.Arg(0))}
	}

	v := viper.New()
	for _, o := range options {
		v.SetDefault(o.key, o.def)
		if err := v.BindPFlag(o.key, fset.Lookup(o.flag)); err != nil {
			return nil, fmt.Errorf("bind flag %s: %w", o.flag, err)
		}
	}
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_", "-", "_"))
	v.AutomaticEnv()
	if err := checkEnv(os.Environ()); err != nil {
		return nil, &Error{err}
	}

	cfg := &Config{}
	path, explicit := *configPath, fset.Changed("config")
	if !explicit {
		if p, ok := os.LookupEnv(configEnv); ok && p != "" {
			path, explicit = p, true
		}
	}
	data, err := os.ReadFile(path)
	var doc map[string]any
	switch {
	case err == nil:
		if err := checkFile(data); err != nil {
			return nil, &Error{fmt.Errorf("config file %s: %w", path, err)}
		}
		_ = yaml.Unmarshal(data, &doc) // checkFile parsed it
		v.SetConfigType("yaml")
		if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
			return nil, &Error{fmt.Errorf("config file %s: %w", path, err)}
		}
		cfg.File = path
	case errors.Is(err, fs.ErrNotExist) && !explicit:
		// No file at the default path: defaults, env and flags apply.
	default:
		return nil, &Error{fmt.Errorf("config file: %w", err)}
	}

	var errs []error
	for _, o := range options {
		val := v.Get(o.key)
		if o.caseSensitive && !fset.Changed(o.flag) {
			if _, env := os.LookupEnv(EnvName(o.key)); !env {
				if raw, ok := doc[o.key]; ok {
					val = raw
				}
			}
		}
		if err := o.apply(cfg, val); err != nil {
			if o.kind == kindList {
				errs = append(errs, fmt.Errorf("%s: %w", o.key, err))
			} else {
				errs = append(errs, fmt.Errorf("%s %s: %w", o.key, show(val), err))
			}
		}
	}
	if len(errs) == 0 {
		if _, err := ifaces.ParseRules(cfg.Interfaces, nil); err != nil {
			errs = append(errs, fmt.Errorf("interfaces: %w", err))
		}
		if _, err := ifaces.ParseRules(nil, cfg.ExcludeInterfaces); err != nil {
			errs = append(errs, fmt.Errorf("exclude_interfaces: %w", err))
		}
		cfg.rules, _ = ifaces.ParseRules(cfg.Interfaces, cfg.ExcludeInterfaces)
		errs = append(errs, checkSourceFamily(cfg)...)
		errs = append(errs, checkFieldsV9(cfg)...)
	}
	if len(errs) > 0 {
		return nil, &Error{errors.Join(errs...)}
	}
	return cfg, nil
}

// newFlagSet declares --config and one flag per option, with the option's
// default, so that --help shows them.
func newFlagSet(usage string, stderr io.Writer) (*pflag.FlagSet, *string) {
	fset := pflag.NewFlagSet("hostflow", pflag.ContinueOnError)
	fset.SetOutput(stderr)
	fset.SortFlags = false
	fset.Usage = func() {
		fmt.Fprint(stderr, usage)
		fset.PrintDefaults()
	}
	configPath := fset.String("config", DefaultPath, "configuration file (YAML); env "+configEnv)
	for _, o := range options {
		help := fmt.Sprintf("%s (key %s, env %s)", o.usageText(), o.key, EnvName(o.key))
		switch o.kind {
		case kindList:
			if o.repeatable {
				fset.StringArray(o.flag, nil, help)
			} else {
				fset.String(o.flag, "", help)
			}
		case kindDuration:
			fset.Duration(o.flag, o.def.(time.Duration), help)
		case kindInt:
			fset.Int(o.flag, o.def.(int), help)
		case kindBool:
			fset.Bool(o.flag, o.def.(bool), help)
		default:
			fset.String(o.flag, o.def.(string), help)
		}
	}
	annotate(fset)
	return fset, configPath
}

// singleDash rewrites -name and -name=value, as the standard flag package
// accepted them, to --name: hostflow has no one-letter flags, so nothing
// is ambiguous. Values are left alone.
func singleDash(fset *pflag.FlagSet, args []string) []string {
	out := append([]string(nil), args...)
	for i := 0; i < len(out); i++ {
		a := out[i]
		if a == "--" {
			break
		}
		if len(a) < 3 || a[0] != '-' || a[1] == '-' {
			continue
		}
		name, _, hasValue := strings.Cut(a[1:], "=")
		f := fset.Lookup(name)
		if f == nil {
			continue
		}
		out[i] = "-" + a
		if !hasValue && f.Value.Type() != "bool" {
			i++ // the next argument is this flag's value
		}
	}
	return out
}

// checkEnv rejects a HOSTFLOW_* variable that is no key: a typo must not be
// silently ignored. Kubernetes service-link variables of a Service named
// hostflow are no typo and are let through (see serviceLink).
func checkEnv(environ []string) error {
	known := []string{configEnv}
	for _, o := range options {
		known = append(known, EnvName(o.key))
	}
	var errs []error
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, EnvPrefix+"_") && !slices.Contains(known, name) && !serviceLink(name, value) {
			errs = append(errs, fmt.Errorf("environment %s: unknown variable (known: %s)", name, strings.Join(known, ", ")))
		}
	}
	return errors.Join(errs...)
}

// checkFile rejects YAML that does not parse or holds a key hostflow does
// not know.
func checkFile(data []byte) error {
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("parse yaml: %w", err)
	}
	known := map[string]bool{}
	for _, o := range options {
		known[o.key] = true
		parts := strings.Split(o.key, ".")
		for i := 1; i < len(parts); i++ {
			known[strings.Join(parts[:i], ".")+"."] = true // a section
		}
	}
	var unknown []string
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, val := range m {
			key := prefix + strings.ToLower(k)
			if known[key] {
				continue
			}
			if known[key+"."] {
				if sub, ok := val.(map[string]any); ok {
					walk(key+".", sub)
				} else if val != nil {
					unknown = append(unknown, key+" (a section: want keys under it)")
				}
				continue
			}
			unknown = append(unknown, key)
		}
	}
	walk("", doc)
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("unknown key %s (known keys: %s)", strings.Join(unknown, ", "), strings.Join(Keys(), ", "))
	}
	return nil
}

func show(v any) string {
	if s, ok := v.(string); ok {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%v", v)
}

// checkFieldsV9 rejects fields a NetFlow v9 collector cannot be sent
// (flowEndReason, droppedPacketDeltaCount ...: elements with no v9 field
// type), naming the element: the fields option itself is checked for
// IPFIX, which can carry them all.
func checkFieldsV9(cfg *Config) []error {
	if len(cfg.Fields) == 0 {
		return nil
	}
	for _, col := range cfg.Collectors {
		if col.Protocol != ProtocolNetFlow9 {
			continue
		}
		if _, err := templates.FromNames(templates.NetFlowV9, cfg.Fields); err != nil {
			return []error{fmt.Errorf("fields: collector %s: %w", col, err)}
		}
	}
	return nil
}

// checkSourceFamily rejects a source_address of another family than a
// collector given by address: no datagram could ever leave. Collectors
// given by name are checked when they are resolved.
func checkSourceFamily(cfg *Config) []error {
	if !cfg.SourceAddress.IsValid() {
		return nil
	}
	var errs []error
	for _, col := range cfg.Collectors {
		host, _, _ := net.SplitHostPort(col.Address)
		a, err := netip.ParseAddr(host)
		if err == nil && a.Unmap().Is4() != cfg.SourceAddress.Is4() {
			errs = append(errs, fmt.Errorf("source_address %s: collector %s is of the other address family", cfg.SourceAddress, col))
		}
	}
	return errs
}
