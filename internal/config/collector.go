package config

import (
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
)

// Collector is one collector URL: scheme protocol+transport, then
// host:port, e.g. ipfix+udp://127.0.0.1:4739 or ipfix+udp://[fd00::1]:4739,
// then options as query parameters: ipfix+udp takes ?gso_padding=true.
type Collector struct {
	Protocol  Protocol
	Transport Transport
	Address   string // host:port
	URL       string // as given
	// GSOPadding makes every IPFIX message of an export but the last
	// the maximum message size, RFC 7011 section 3.3.1 set padding
	// making up what exact fill leaves short, so the export leaves in
	// one UDP GSO send whatever its mix (exporter.IPFIXConfig's
	// PadForGSO; exact fill alone does it for mixed traffic). Off unless
	// the URL says gso_padding=true: nfcapd (nfdump 1.7.1) logs an error
	// for every set padded by 4 octets or more.
	GSOPadding bool
}

// ParamGSOPadding is the collector URL query parameter that sets
// Collector.GSOPadding, for ipfix+udp collectors only.
const ParamGSOPadding = "gso_padding"

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
	if u.Path != "" || u.User != nil || u.Fragment != "" || u.Opaque != "" {
		return Collector{}, fmt.Errorf("only %s://host:port, then options as ?name=value, is allowed", u.Scheme)
	}
	p, err := parseEnum[Protocol](protocolNames, proto)
	if err != nil {
		return Collector{}, fmt.Errorf("protocol %q: %w", proto, err)
	}
	t, err := parseEnum[Transport](transportNames, transport)
	if err != nil {
		return Collector{}, fmt.Errorf("transport %q: %w", transport, err)
	}
	c := Collector{Protocol: p, Transport: t, Address: u.Host, URL: s}
	if err := c.parseQuery(u.Scheme, u.RawQuery); err != nil {
		return Collector{}, err
	}
	return c, nil
}

// parseQuery sets the collector's options from the URL's query: each
// parameter known, given once, and valid for the scheme.
func (c *Collector) parseQuery(scheme, raw string) error {
	if raw == "" {
		return nil
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return fmt.Errorf("query %q: %w", raw, err)
	}
	for _, name := range slices.Sorted(maps.Keys(q)) {
		v := q[name]
		if name != ParamGSOPadding {
			return fmt.Errorf("unknown query parameter %q (known: %s, for ipfix+udp)", name, ParamGSOPadding)
		}
		if scheme != "ipfix+udp" {
			return fmt.Errorf("query parameter %s: only for ipfix+udp collectors, not %s", name, scheme)
		}
		if len(v) != 1 {
			return fmt.Errorf("query parameter %s: given %d times, want once", name, len(v))
		}
		switch v[0] {
		case "true":
			c.GSOPadding = true
		case "false":
			c.GSOPadding = false
		default:
			return fmt.Errorf("query parameter %s: %q is not true or false", name, v[0])
		}
	}
	return nil
}
