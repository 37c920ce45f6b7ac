package config

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// The setters shared by the options: each decodes a value (see decode.go),
// checks it and stores it in its field.

func durationSetter(field func(*Config) *time.Duration) func(*Config, any) error {
	return func(c *Config, v any) error {
		d, err := toDuration(v)
		if err != nil {
			return err
		}
		if d <= 0 {
			return fmt.Errorf("must be positive")
		}
		*field(c) = d
		return nil
	}
}

func intSetter(lo, hi int, field func(*Config) *int) func(*Config, any) error {
	return func(c *Config, v any) error {
		n, err := toInt(v)
		if err != nil {
			return err
		}
		if n < lo || n > hi {
			return fmt.Errorf("want %d to %d", lo, hi)
		}
		*field(c) = n
		return nil
	}
}

// pathSetter accepts "" or an absolute path.
func pathSetter(field func(*Config) *string) func(*Config, any) error {
	return func(c *Config, v any) error {
		s, err := toString(v)
		if err != nil {
			return err
		}
		if s != "" && !strings.HasPrefix(s, "/") {
			return fmt.Errorf("want an absolute path")
		}
		*field(c) = s
		return nil
	}
}

// apply checks an enum's value against o.values, then sets it.
func (o *option) apply(c *Config, v any) error {
	if o.values != nil {
		s, err := toString(v)
		if err != nil {
			return err
		}
		if !slices.Contains(o.values, s) {
			return fmt.Errorf("want %s", strings.Join(o.values, ", "))
		}
	}
	return o.set(c, v)
}
