package config

import (
	"fmt"
	"reflect"
)

// RestartKeys returns the keys a reload cannot change, in the order of
// the option table: those marked restart there.
func RestartKeys() []string {
	var out []string
	for _, o := range options {
		if o.restart {
			out = append(out, o.key)
		}
	}
	return out
}

// KeepRestartOnly gives next the running value (cur's) of each key that
// needs a restart to change, and returns the keys whose value it kept.
// An error is a bug in the option table (a getter's value its setter
// refuses; a table test checks every key): next is then unusable.
func KeepRestartOnly(cur, next *Config) (kept []string, err error) {
	for _, o := range options {
		if !o.restart {
			continue
		}
		was := o.get(cur)
		if reflect.DeepEqual(was, o.get(next)) {
			continue
		}
		if err := o.set(next, was); err != nil {
			return kept, fmt.Errorf("keep %s %v: %w", o.key, was, err)
		}
		kept = append(kept, o.key)
	}
	return kept, nil
}

// usageText is o's usage as --help, the man page and the completions
// show it.
func (o *option) usageText() string {
	if o.restart {
		return o.usage + " (restart to change)"
	}
	return o.usage
}
