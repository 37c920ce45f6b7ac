package config

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// Collector is one collector URL: scheme protocol+transport, then
// host:port, e.g. ipfix+udp://127.0.0.1:4739 or ipfix+udp://[fd00::1]:4739.
type Collector struct {
	Protocol  Protocol
	Transport Transport
	Address   string // host:port
	URL       string // as given
}

func (c Collector) String() string { return c.URL }

// Schemes are the collector URL schemes hostflow can export to. This is
// the one place a new combination is added (a new protocol or transport
// is a constant of Protocol or Transport first); the daemon's sink factory
// switches on the same Protocol and Transport.
var Schemes = []string{"ipfix+udp", "ipfix+tcp", "ipfix+tls", "netflow9+udp"}

// ParseCollector parses and checks one collector URL.
func ParseCollector(s string) (Collector, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Collector{}, fmt.Errorf("not a URL: %w", err)
	}
	proto, transport, ok := strings.Cut(u.Scheme, "+")
	if !ok {
		return Collector{}, fmt.Errorf("scheme must be protocol+transport, one of %s", strings.Join(Schemes, ", "))
	}
	if !slices.Contains(Schemes, u.Scheme) {
		return Collector{}, fmt.Errorf("unsupported scheme %q (supported: %s)", u.Scheme, strings.Join(Schemes, ", "))
	}
	if u.Port() == "" || u.Hostname() == "" {
		return Collector{}, fmt.Errorf("want %s://host:port", u.Scheme)
	}
	if u.Path != "" || u.RawQuery != "" || u.User != nil || u.Fragment != "" {
		return Collector{}, fmt.Errorf("only %s://host:port is allowed", u.Scheme)
	}
	p, err := parseEnum[Protocol](protocolNames, proto)
	if err != nil {
		return Collector{}, fmt.Errorf("protocol %q: %w", proto, err)
	}
	t, err := parseEnum[Transport](transportNames, transport)
	if err != nil {
		return Collector{}, fmt.Errorf("transport %q: %w", transport, err)
	}
	return Collector{Protocol: p, Transport: t, Address: u.Host, URL: s}, nil
}
