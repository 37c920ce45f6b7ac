package config

import (
	"errors"
	"strings"
	"testing"
)

// TestCollectorGSOPadding: ipfix+udp collectors take ?gso_padding=true or
// false (off when absent); any other query parameter, a bad value, or
// gso_padding on another scheme is an error naming the parameter.
func TestCollectorGSOPadding(t *testing.T) {
	for _, tc := range []struct {
		url     string
		pad     bool
		address string
	}{
		{"ipfix+udp://198.18.0.1:4739", false, "198.18.0.1:4739"},
		{"ipfix+udp://198.18.0.1:4739?gso_padding=true", true, "198.18.0.1:4739"},
		{"ipfix+udp://198.18.0.1:4739?gso_padding=false", false, "198.18.0.1:4739"},
		{"ipfix+udp://[fd00::1]:2055?gso_padding=true", true, "[fd00::1]:2055"},
		{"ipfix+tcp://198.18.0.1:4739", false, "198.18.0.1:4739"},
		{"netflow9+udp://198.18.0.1:2055", false, "198.18.0.1:2055"},
	} {
		c, err := ParseCollector(tc.url)
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		if c.GSOPadding != tc.pad || c.Address != tc.address || c.URL != tc.url {
			t.Errorf("%s: padding %v address %q url %q, want %v %q", tc.url, c.GSOPadding, c.Address, c.URL, tc.pad, tc.address)
		}
	}
	for _, tc := range []struct {
		url  string
		want []string
	}{
		{"ipfix+udp://198.18.0.1:4739?gso_padding=yes", []string{"gso_padding", `"yes"`, "true or false"}},
		{"ipfix+udp://198.18.0.1:4739?gso_padding=1", []string{"gso_padding", `"1"`}},
		{"ipfix+udp://198.18.0.1:4739?gso_padding=", []string{"gso_padding", `""`}},
		{"ipfix+udp://198.18.0.1:4739?gso_padding", []string{"gso_padding", `""`}},
		{"ipfix+udp://198.18.0.1:4739?gso_padding=true&gso_padding=false", []string{"gso_padding", "2 times"}},
		{"ipfix+udp://198.18.0.1:4739?gso_pading=true", []string{`unknown query parameter "gso_pading"`, "gso_padding"}},
		{"ipfix+udp://198.18.0.1:4739?gso_padding=true&mtu=1500", []string{`unknown query parameter "mtu"`}},
		{"ipfix+udp://198.18.0.1:4739?gso_padding=%zz", []string{"query"}},
		{"ipfix+tcp://198.18.0.1:4739?gso_padding=true", []string{"gso_padding", "only for ipfix+udp", "ipfix+tcp"}},
		{"ipfix+tls://198.18.0.1:4739?gso_padding=false", []string{"gso_padding", "only for ipfix+udp", "ipfix+tls"}},
		{"netflow9+udp://198.18.0.1:2055?gso_padding=true", []string{"gso_padding", "only for ipfix+udp", "netflow9+udp"}},
		{"ipfix+udp://198.18.0.1:4739/x?gso_padding=true", []string{"only ipfix+udp://host:port"}},
		{"ipfix+udp://198.18.0.1:4739?gso_padding=true#x", []string{"only ipfix+udp://host:port"}},
	} {
		_, err := ParseCollector(tc.url)
		if err == nil {
			t.Errorf("%s: no error", tc.url)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", tc.url, err, w)
			}
		}
	}
}

// TestCollectorGSOPaddingLoad: in the file or as a flag, the option
// reaches the collector; a bad one is a config error naming the
// collector and the parameter; the same destination twice, with and
// without the option, is listed twice.
func TestCollectorGSOPaddingLoad(t *testing.T) {
	clearEnv(t)
	cfg, err := load(t, "--config", writeFile(t, "collectors: [\"ipfix+udp://198.18.0.1:2055?gso_padding=true\", ipfix+udp://198.18.0.2:2055]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Collectors) != 2 || !cfg.Collectors[0].GSOPadding || cfg.Collectors[1].GSOPadding {
		t.Errorf("collectors %+v: want the first padded only", cfg.Collectors)
	}
	cfg, err = load(t, "--config", writeFile(t, ""), "--collector", "ipfix+udp://198.18.0.1:2055?gso_padding=true")
	if err != nil || len(cfg.Collectors) != 1 || !cfg.Collectors[0].GSOPadding {
		t.Errorf("flag: %+v %v", cfg, err)
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--collector", "netflow9+udp://198.18.0.1:2055?gso_padding=true"},
			[]string{`collector "netflow9+udp://198.18.0.1:2055?gso_padding=true"`, "gso_padding", "only for ipfix+udp"}},
		{[]string{"--collector", "ipfix+udp://198.18.0.1:2055?gso=true"},
			[]string{`collector "ipfix+udp://198.18.0.1:2055?gso=true"`, `unknown query parameter "gso"`}},
		{[]string{"--collector", "ipfix+udp://198.18.0.1:2055", "--collector", "ipfix+udp://198.18.0.1:2055?gso_padding=true"},
			[]string{`collector "ipfix+udp://198.18.0.1:2055?gso_padding=true": listed twice (also as "ipfix+udp://198.18.0.1:2055")`}},
	} {
		_, err := load(t, append([]string{"--config", writeFile(t, "")}, tc.args...)...)
		var ce *Error
		if !errors.As(err, &ce) {
			t.Errorf("%v: err %v, want *config.Error", tc.args, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error %q lacks %q", tc.args, err, w)
			}
		}
	}
}
