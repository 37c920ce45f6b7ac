package ifaces

import (
	"fmt"
	"regexp"
	"strings"
)

// Rules select interfaces by name, or by the keywords default and all.
// The zero value is the default selection of host mode (see Edge).
type Rules struct {
	include []matcher
	exclude []matcher
	router  bool
}

type matcher struct {
	name    string
	re      *regexp.Regexp
	keyword string // KeywordDefault or KeywordAll
	dir     Direction
}

// Direction says which hooks of an interface a rule captures on.
type Direction uint8

const (
	// DirDefault is the daemon's direction setting.
	DirDefault Direction = iota
	DirIngress
	DirEgress
	DirBoth
)

func (d Direction) String() string {
	switch d {
	case DirIngress:
		return "ingress"
	case DirEgress:
		return "egress"
	case DirBoth:
		return "both"
	}
	return ""
}

// Hooks returns the hooks of d, or of the default (ingress, egress) when
// d is DirDefault.
func (d Direction) Hooks(ingress, egress bool) (bool, bool) {
	switch d {
	case DirIngress:
		return true, false
	case DirEgress:
		return false, true
	case DirBoth:
		return true, true
	}
	return ingress, egress
}

func (m matcher) match(name string) bool {
	if m.re != nil {
		return m.re.MatchString(name)
	}
	return m.keyword == "" && m.name == name
}

// matchLink reports whether an include matcher selects l, and why.
func (m matcher) matchLink(l Link, router bool) (bool, string) {
	switch m.keyword {
	case KeywordDefault:
		return Edge(l, router)
	case KeywordAll:
		switch {
		case l.Loopback:
			return false, "loopback"
		case !l.Up:
			return false, "down"
		}
		return true, "all: every link that is up"
	}
	if m.match(l.Name) {
		return true, "rule " + m.String()
	}
	return false, ""
}

func (m matcher) String() string {
	s := m.name
	if m.keyword != "" {
		s = m.keyword
	}
	if m.re != nil {
		s = "/" + m.re.String() + "/"
	}
	if m.dir != DirDefault {
		s += ":" + m.dir.String()
	}
	return s
}

// ParseRules builds rules from include and exclude lists. Each entry is an
// exact interface name or a /regex/ (Go syntax, matched against the whole
// name only if anchored). An include entry may also be one of the keywords
// default (the default selection, see Edge) and all (every link that is
// up, except loopback). An include entry may end in :ingress, :egress or
// :both to choose the hooks of the interfaces it selects (Linux interface
// names cannot contain a colon); without, the daemon's direction applies.
// An empty include list is the default selection.
func ParseRules(include, exclude []string) (Rules, error) {
	var r Rules
	var err error
	if r.include, err = parseMatchers(include, true); err != nil {
		return Rules{}, err
	}
	if r.exclude, err = parseMatchers(exclude, false); err != nil {
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
			// The closing slash ends the regex if a separator, a
			// :direction or the end follows.
			if i+1 == len(s) || s[i+1] == ',' || s[i+1] == ':' {
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

func parseMatchers(list []string, withDir bool) ([]matcher, error) {
	var out []matcher
	for _, s := range list {
		s = strings.TrimSpace(s)
		dir := DirDefault
		if i := strings.LastIndex(s, ":"); i > 0 && !(strings.HasPrefix(s, "/") && strings.LastIndex(s, "/") > i) {
			if !withDir {
				return nil, fmt.Errorf("interface %q: a direction only goes with interfaces to capture on", s)
			}
			switch s[i+1:] {
			case "ingress":
				dir = DirIngress
			case "egress":
				dir = DirEgress
			case "both":
				dir = DirBoth
			default:
				return nil, fmt.Errorf("interface %q: direction %q: want ingress, egress or both", s, s[i+1:])
			}
			s = s[:i]
		}
		switch {
		case s == "":
			continue
		case len(s) >= 2 && s[0] == '/' && s[len(s)-1] == '/':
			re, err := regexp.Compile(s[1 : len(s)-1])
			if err != nil {
				return nil, fmt.Errorf("interface pattern %q: %w", s, err)
			}
			out = append(out, matcher{re: re, dir: dir})
		case strings.HasPrefix(s, "/"):
			return nil, fmt.Errorf("interface pattern %q: missing closing /", s)
		case s == KeywordDefault || s == KeywordAll:
			if !withDir {
				return nil, fmt.Errorf("interface %q: a keyword only goes with interfaces to capture on", s)
			}
			out = append(out, matcher{keyword: s, dir: dir})
		case len(s) > 15 || strings.ContainsAny(s, "/ \t"):
			return nil, fmt.Errorf("interface name %q: not a valid Linux interface name", s)
		default:
			out = append(out, matcher{name: s, dir: dir})
		}
	}
	return out, nil
}

// Names returns the exact names the rules include: links that must exist.
func (r Rules) Names() []string {
	var out []string
	for _, m := range r.include {
		if m.re == nil && m.keyword == "" {
			out = append(out, m.name)
		}
	}
	return out
}

// ForMode returns the rules for router mode or host mode: the default
// selection differs (see Edge).
func (r Rules) ForMode(router bool) Rules {
	r.router = router
	return r
}

// Router reports whether the rules are those of router mode.
func (r Rules) Router() bool { return r.router }

// Match reports whether a link is selected.
func (r Rules) Match(l Link) bool {
	ok, _ := r.Explain(l)
	return ok
}

// Explain reports whether a link is selected and why: the exclusion that
// drops it, the include rule that selects it, or the default selection's
// reason. An exclusion wins over every include; an include rule that
// names a link (or matches its name) selects it whatever its kind and
// state; with no include rule, the default selection applies.
func (r Rules) Explain(l Link) (bool, string) {
	for _, m := range r.exclude {
		if m.match(l.Name) {
			return false, "excluded by " + m.String()
		}
	}
	if len(r.include) == 0 {
		return Edge(l, r.router)
	}
	why := ""
	for _, m := range r.include {
		ok, w := m.matchLink(l, r.router)
		if ok {
			return true, w
		}
		if m.keyword != "" && why == "" {
			why = w
		}
	}
	if why == "" {
		why = "no rule selects it"
	}
	return false, why
}

// Direction returns the direction of the first include rule that selects
// l, DirDefault if none names one.
func (r Rules) Direction(l Link) Direction {
	for _, m := range r.include {
		if ok, _ := m.matchLink(l, r.router); ok {
			return m.dir
		}
	}
	return DirDefault
}

// String renders the rules for logs and check-config.
func (r Rules) String() string {
	var b strings.Builder
	if len(r.include) == 0 {
		b.WriteString(KeywordDefault)
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
