package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hostflow/hostflow/ifaces"
)

// The values a key may hold come from YAML (native types), the environment
// (strings), flags (typed by viper) and defaults. Each decoder takes them
// all and rejects anything else with the reason; the caller adds the key
// and the value.

func toString(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return strings.TrimSpace(v), nil
	case nil:
		return "", nil
	}
	return "", errors.New("want a string")
}

// toList takes a YAML sequence of strings, or one string of items
// separated by commas or white space.
func toList(v any) ([]string, error) {
	var out []string
	switch v := v.(type) {
	case nil:
	case string:
		out = strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
	case []string:
		for _, s := range v {
			l, _ := toList(s)
			out = append(out, l...)
		}
	case []any:
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("item %v: want a string", e)
			}
			out = append(out, strings.TrimSpace(s))
		}
	default:
		return nil, errors.New("want a list of strings")
	}
	if out == nil {
		out = []string{}
	}
	return out, nil
}

// toIfaceList is toList for interface rules: a string is split on commas
// outside /regex/ entries, so /^eth{1,2}$/ stays whole.
func toIfaceList(v any) ([]string, error) {
	if s, ok := v.(string); ok {
		out := ifaces.SplitList(s)
		if out == nil {
			out = []string{}
		}
		return out, nil
	}
	return toList(v)
}

func toDuration(v any) (time.Duration, error) {
	switch v := v.(type) {
	case time.Duration:
		return v, nil
	case string:
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return 0, errors.New("want a duration such as 500ms, 15s or 1m")
		}
		return d, nil
	case int, int64, uint64, float64:
		return 0, errors.New("want a duration with a unit, such as 15s")
	}
	return 0, errors.New("want a duration such as 500ms, 15s or 1m")
}

func toInt(v any) (int, error) {
	switch v := v.(type) {
	case int:
		return v, nil
	case int64:
		return int(v), nil
	case uint64:
		if v > 1<<62 {
			return 0, errors.New("too large")
		}
		return int(v), nil
	case uint32:
		return int(v), nil
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, errors.New("want a whole number")
		}
		return int(n), nil
	}
	return 0, errors.New("want a whole number")
}

func toBool(v any) (bool, error) {
	switch v := v.(type) {
	case bool:
		return v, nil
	case string:
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return false, errors.New("want true or false")
		}
		return b, nil
	}
	return false, errors.New("want true or false")
}

func checkHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("want host:port, e.g. 127.0.0.1:9740")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return errors.New("want a port number 0 to 65535")
	}
	return nil
}

// checkIfName accepts a Linux interface name: 1 to 15 bytes, none of them
// '/', ':', white space or NUL, and not "." or "..".
func checkIfName(s string) error {
	if s == "" || len(s) > 15 || s == "." || s == ".." || strings.ContainsAny(s, "/: \t\n\x00") {
		return fmt.Errorf("interface name %q: want 1 to 15 bytes, no '/', ':' or white space", s)
	}
	return nil
}

// toIndexMap takes a YAML map of interface names to indexes, or a string
// of name=index pairs separated by commas or white space. Indexes are 1
// to 2^32-1 and unique.
func toIndexMap(v any) (map[string]uint32, error) {
	out := map[string]uint32{}
	raw := map[string]any{}
	switch v := v.(type) {
	case nil:
	case string:
		for _, kv := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' }) {
			name, idx, ok := strings.Cut(kv, "=")
			if !ok {
				return nil, fmt.Errorf("%q: want name=index", kv)
			}
			if _, dup := raw[name]; dup {
				return nil, fmt.Errorf("interface %s given twice", name)
			}
			raw[name] = idx
		}
	case map[string]any:
		raw = v
	default:
		return nil, errors.New("want a map of interface names to indexes, e.g. {eth0: 3}")
	}
	by := map[uint32]string{}
	for _, name := range slices.Sorted(maps.Keys(raw)) {
		if err := checkIfName(name); err != nil {
			return nil, err
		}
		n, err := toInt(raw[name])
		if err != nil || n < 1 || n > 1<<32-1 {
			return nil, fmt.Errorf("%s: index %v: want 1 to 4294967295", name, raw[name])
		}
		if other, ok := by[uint32(n)]; ok {
			return nil, fmt.Errorf("index %d given to %s and %s", n, other, name)
		}
		by[uint32(n)] = name
		out[name] = uint32(n)
	}
	return out, nil
}
