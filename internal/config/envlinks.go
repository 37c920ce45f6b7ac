package config

import (
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// Kubernetes gives every pod of a namespace variables that describe each
// Service of that namespace (service links, on unless the pod sets
// enableServiceLinks: false). A Service named hostflow, or hostflow-xyz,
// yields HOSTFLOW_SERVICE_HOST, HOSTFLOW_SERVICE_PORT, HOSTFLOW_PORT,
// HOSTFLOW_PORT_4739_UDP and its _PROTO, _PORT and _ADDR companions, which
// share the prefix of hostflow's own variables. serviceLink tells them
// apart from a misspelt key by name and by value: each shape of name has
// one shape of value (an address, a port, proto://addr:port), so a typo
// such as HOSTFLOW_IDLE_TIMOUT=10s is still unknown.

// svc is the service part of a name: HOSTFLOW itself or HOSTFLOW_ and the
// rest of a Service name in capitals, dashes as underscores.
const svc = `^` + EnvPrefix + `(?:_[A-Z0-9_]+?)?`

var serviceLinks = []struct {
	name *regexp.Regexp
	ok   func(m []string, value string) bool
}{
	{regexp.MustCompile(svc + `_SERVICE_HOST$`), func(_ []string, v string) bool { return isAddr(v) }},
	{regexp.MustCompile(svc + `_SERVICE_PORT(?:_[A-Z0-9_]+)?$`), func(_ []string, v string) bool { return isPort(v) }},
	{regexp.MustCompile(svc + `_PORT$`), func(_ []string, v string) bool {
		proto, hostport, ok := strings.Cut(v, "://")
		return ok && isProto(proto) && isHostPort(hostport, "")
	}},
	{regexp.MustCompile(svc + `_PORT_([0-9]+)_(TCP|UDP|SCTP)$`), func(m []string, v string) bool {
		return v != "" && strings.HasPrefix(v, strings.ToLower(m[2])+"://") && isHostPort(v[len(m[2])+3:], m[1])
	}},
	{regexp.MustCompile(svc + `_PORT_[0-9]+_(TCP|UDP|SCTP)_PROTO$`), func(m []string, v string) bool { return v == strings.ToLower(m[1]) }},
	{regexp.MustCompile(svc + `_PORT_([0-9]+)_(?:TCP|UDP|SCTP)_PORT$`), func(m []string, v string) bool { return v == m[1] && isPort(v) }},
	{regexp.MustCompile(svc + `_PORT_[0-9]+_(?:TCP|UDP|SCTP)_ADDR$`), func(_ []string, v string) bool { return isAddr(v) }},
}

// serviceLink reports whether name=value is a Kubernetes service-link
// variable of a Service whose name starts with hostflow.
func serviceLink(name, value string) bool {
	for _, l := range serviceLinks {
		if m := l.name.FindStringSubmatch(name); m != nil && l.ok(m, value) {
			return true
		}
	}
	return false
}

func isAddr(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

func isPort(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n > 0 && n < 65536 && strconv.Itoa(n) == s
}

func isProto(s string) bool { return s == "tcp" || s == "udp" || s == "sctp" }

// isHostPort checks addr:port ([addr]:port for IPv6), and the port if
// want is not empty.
func isHostPort(s, want string) bool {
	host, port, err := net.SplitHostPort(s)
	return err == nil && isAddr(host) && isPort(port) && (want == "" || port == want)
}
