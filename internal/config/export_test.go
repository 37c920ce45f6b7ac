package config

import (
	"errors"
	"maps"
	"net/netip"
	"strings"
	"testing"
)

// TestExportBindAndIndexes: source_address, vrf and interface_index from
// the file, the environment and flags; names keep their case.
func TestExportBindAndIndexes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		file  string
		env   [2]string
		args  []string
		src   string
		vrf   string
		index map[string]uint32
	}{
		{name: "defaults", index: map[string]uint32{}},
		{name: "file", file: "source_address: 198.18.0.2\nvrf: vrf-mgmt\ninterface_index: {eth0: 3, Uplink1: 7}\n",
			src: "198.18.0.2", vrf: "vrf-mgmt", index: map[string]uint32{"eth0": 3, "Uplink1": 7}},
		{name: "ipv6", file: "source_address: \"fd00::2\"\n", src: "fd00::2", index: map[string]uint32{}},
		{name: "env", env: [2]string{"HOSTFLOW_INTERFACE_INDEX", "eth0=3,Eth1=4"}, file: "interface_index: {eth0: 9}\n",
			index: map[string]uint32{"eth0": 3, "Eth1": 4}},
		{name: "flags", args: []string{"--source-address", "198.18.0.9", "--vrf", "blue", "--interface-index", "wg0=12"},
			file: "source_address: 198.18.0.2\n", src: "198.18.0.9", vrf: "blue", index: map[string]uint32{"wg0": 12}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			if tc.env[0] != "" {
				t.Setenv(tc.env[0], tc.env[1])
			}
			cfg, err := load(t, append([]string{"--config", writeFile(t, tc.file)}, tc.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			var want netip.Addr
			if tc.src != "" {
				want = netip.MustParseAddr(tc.src)
			}
			if cfg.SourceAddress != want || cfg.VRF != tc.vrf || !maps.Equal(cfg.InterfaceIndex, tc.index) {
				t.Errorf("source %v vrf %q index %v, want %v %q %v", cfg.SourceAddress, cfg.VRF, cfg.InterfaceIndex, want, tc.vrf, tc.index)
			}
			if b := cfg.Bind(); b.SourceAddress != want || b.Device != tc.vrf {
				t.Errorf("Bind() = %v", b)
			}
		})
	}
}

// TestExportBindAndIndexErrors: each bad value names the key and why.
func TestExportBindAndIndexErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string
		want []string
	}{
		{"not an address", "source_address: collector.example\n", []string{`source_address "collector.example"`, "IPv4 or IPv6"}},
		{"unspecified", "source_address: 0.0.0.0\n", []string{"source_address", "unicast"}},
		{"multicast", "source_address: \"ff02::1\"\n", []string{"source_address", "unicast"}},
		{"zone", "source_address: \"fe80::1%eth0\"\n", []string{"source_address"}},
		{"v6 source, v4 collector", "source_address: \"fd00::2\"\ncollectors: [ipfix+udp://198.18.0.1:4739]\n",
			[]string{"source_address fd00::2", "ipfix+udp://198.18.0.1:4739", "other address family"}},
		{"v4 source, v6 collector", "source_address: 198.18.0.2\ncollectors: [\"ipfix+tcp://[fd00::1]:4739\"]\n",
			[]string{"source_address 198.18.0.2", "other address family"}},
		{"vrf name", "vrf: a/b\n", []string{`vrf "a/b"`, "15 bytes"}},
		{"vrf too long", "vrf: vrf-with-a-long-name\n", []string{"vrf", "15 bytes"}},
		{"index zero", "interface_index: {eth0: 0}\n", []string{"interface_index", "eth0", "1 to 4294967295"}},
		{"index too large", "interface_index: {eth0: 4294967296}\n", []string{"interface_index", "1 to 4294967295"}},
		{"index not a number", "interface_index: {eth0: three}\n", []string{"interface_index", "eth0"}},
		{"index twice", "interface_index: {eth0: 3, eth1: 3}\n", []string{"interface_index", "index 3 given to eth0 and eth1"}},
		{"index bad name", "interface_index: {\"a b\": 3}\n", []string{"interface_index", `"a b"`}},
		{"index list", "interface_index: [eth0]\n", []string{"interface_index", "map"}},
		{"index string", "interface_index: eth0\n", []string{"interface_index", "name=index"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			_, err := load(t, "--config", writeFile(t, tc.file))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("err %v: want *config.Error", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}
