package ifaces

import (
	"fmt"
	"regexp"
	"strings"
)

// Rules select interfaces by name. The zero value selects every link that
// is up, except loopback.
type Rules struct {
	include []matcher
	exclude []matcher
}

type matcher struct {
	name string
	re   *regexp.Regexp
}

func (m matcher) match(name string) bool {
	if m.re != nil {
		return m.re.MatchString(name)
	}
	return m.name == name
}

func (m matcher) String() string {
	if m.re != nil {
		return "/" + m.re.String() + "/"
	}
	return m.name
}

// ParseRules builds rules from include and exclude lists. Each entry is an
// exact interface name or a /regex/ (Go syntax, matched against the whole
// name only if anchored).
func ParseRules(include, exclude []string) (Rules, error) {
	var r Rules
	var err error
	if r.include, err = parseMatchers(include); err != nil {
		return Rules{}, err
	}
	if r.exclude, err = parseMatchers(exclude); err != nil {
		return Rules{}, err
	}
	return r, nil
}

// SplitList splits a comma-separated list as given on a command line,
// keeping commas inside /regex/ entries (such as /^eth{1,2}$/).
func SplitList(s string) []string {
	var out []string
	var cur strings.Builder
	inRe := false
	for i, c := range s {
		switch {
		case c == '/' && !inRe && strings.TrimSpace(cur.String()) == "":
			inRe = true
		case c == '/' && inRe:
			// The closing slash ends the regex if a separator or
			// the end follows.
			if i+1 == len(s) || s[i+1] == ',' {
				inRe = false
			}
		case c == ',' && !inRe:
			if t := strings.TrimSpace(cur.String()); t != "" {
				out = append(out, t)
			}
			cur.Reset()
			continue
		}
		cur.WriteRune(c)
	}
	if t := strings.TrimSpace(cur.String()); t != "" {
		out = append(out, t)
	}
	return out
}

func parseMatchers(list []string) ([]matcher, error) {
	var out []matcher
	for _, s := range list {
		s = strings.TrimSpace(s)
		switch {
		case s == "":
			continue
		case len(s) >= 2 && s[0] == '/' && s[len(s)-1] == '/':
			re, err := regexp.Compile(s[1 : len(s)-1])
			if err != nil {
				return nil, fmt.Errorf("interface pattern %q: %w", s, err)
			}
			out = append(out, matcher{re: re})
		case strings.HasPrefix(s, "/"):
			return nil, fmt.Errorf("interface pattern %q: missing closing /", s)
		case len(s) > 15 || strings.ContainsAny(s, "/ \t"):
			return nil, fmt.Errorf("interface name %q: not a valid Linux interface name", s)
		default:
			out = append(out, matcher{name: s})
		}
	}
	return out, nil
}

// Names returns the exact names the rules include: links that must exist.
func (r Rules) Names() []string {
	var out []string
	for _, m := range r.include {
		if m.re == nil {
			out = append(out, m.name)
		}
	}
	return out
}

// Match reports whether a link is selected. up and loopback matter only
// when no include rule is given.
func (r Rules) Match(name string, up, loopback bool) bool {
	for _, m := range r.exclude {
		if m.match(name) {
			return false
		}
	}
	if len(r.include) == 0 {
		return up && !loopback
	}
	for _, m := range r.include {
		if m.match(name) {
			return true
		}
	}
	return false
}

// String renders the rules for logs and check-config.
func (r Rules) String() string {
	if len(r.include) == 0 && len(r.exclude) == 0 {
		return "every interface that is up, except loopback"
	}
	var b strings.Builder
	if len(r.include) == 0 {
		b.WriteString("every interface that is up, except loopback")
	}
	for i, m := range r.include {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(m.String())
	}
	for i, m := range r.exclude {
		if i == 0 {
			b.WriteString(" except ")
		} else {
			b.WriteString(",")
		}
		b.WriteString(m.String())
	}
	return b.String()
}
