package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hostflow/hostflow/exporter"
	"github.com/hostflow/hostflow/internal/config"
	"github.com/hostflow/hostflow/internal/control"
)

func ctlFlows() []control.Flow {
	return []control.Flow{
		{Src: "198.18.0.1", Dst: "198.18.0.2", SrcPort: 40000, DstPort: 7, Proto: 17, EtherType: 0x800, IfIndex: 3, IfName: "veth0",
			Direction: "egress", Packets: 10, Bytes: 1280, Start: "2026-11-30T02:00:00.000Z", End: "2026-11-30T02:00:01.500Z"},
		{Src: "fd00::1", Dst: "fd00::2", SrcPort: 5000, DstPort: 443, Proto: 6, EtherType: 0x86dd, IfIndex: 4, IfName: "",
			Direction: "ingress", Packets: 20, Bytes: 1000, Start: "2026-11-30T02:00:00.000Z", End: "2026-11-30T02:00:02.000Z"},
		{Src: "198.18.0.2", Dst: "198.18.0.1", Proto: 1, EtherType: 0x800, IfIndex: 3, IfName: "veth0", VLAN: 10, ICMPType: 8,
			Direction: "ingress", Packets: 1, Bytes: 84, Start: "2026-11-30T02:00:00.000Z", End: "2026-11-30T02:00:00.000Z"},
	}
}

var updateGolden = flag.Bool("update", false, "rewrite the golden files under testdata")

func TestWriteFlowsTable(t *testing.T) {
	for _, tc := range []struct {
		golden string
		o      ctlOptions
	}{
		{"flows_by_bytes.txt", ctlOptions{sort: "bytes"}},
		{"flows_by_packets_top1.txt", ctlOptions{sort: "packets", top: 1}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			var b bytes.Buffer
			if err := writeFlows(&b, ctlFlows(), tc.o); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tc.golden)
			if *updateGolden {
				os.MkdirAll("testdata", 0o755)
				os.WriteFile(path, b.Bytes(), 0o644)
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if b.String() != string(want) {
				t.Errorf("got:\n%s\nwant (%s):\n%s", b.String(), path, want)
			}
		})
	}
}

// TestFlowsJSONFieldNames: --json writes the field names of the stdout
// JSON lines, all of them but end_reason (a cached flow has not ended).
func TestFlowsJSONFieldNames(t *testing.T) {
	var b bytes.Buffer
	if err := writeFlows(&b, ctlFlows()[:1], ctlOptions{json: true, sort: "bytes"}); err != nil {
		t.Fatal(err)
	}
	var ctl map[string]any
	if err := json.Unmarshal(b.Bytes(), &ctl); err != nil {
		t.Fatal(err)
	}
	var line bytes.Buffer
	s := exporter.NewJSONLines(&line)
	s.Export([]exporter.Flow{{EndReason: exporter.EndIdleTimeout}})
	var out map[string]any
	if err := json.Unmarshal(line.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	delete(out, "end_reason")
	if got, want := slices.Sorted(maps.Keys(ctl)), slices.Sorted(maps.Keys(out)); !slices.Equal(got, want) {
		t.Errorf("flows --json fields %q, stdout JSON fields %q", got, want)
	}
	if ctl["ifname"] != "veth0" || ctl["packets"] != 10.0 || ctl["start"] != "2026-11-30T02:00:00.000Z" {
		t.Errorf("flows --json: %s", b.String())
	}
}

func TestWriteStats(t *testing.T) {
	st := control.Stats{PacketsSeen: 41, Packets: 30, Bytes: 2280, FlowsActive: 2,
		FlowsExported: map[string]uint64{"idle": 5, "forced": 1, "lack-of-resources": 2},
		Kernel:        control.KernelStats{RingBufFull: 7, SampledOut: 3},
		Collectors:    []control.CollectorStatus{{URL: "ipfix+tcp://198.18.0.9:4739", State: "disconnected", Dropped: 4, Reconnects: 1}}}
	var b bytes.Buffer
	if err := writeStats(&b, st); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"packets seen                               41\n",
		"packets exported                           30\n",
		"flows exported idle                        5\n",
		"flows exported lack-of-resources           2\n",
		"kernel ring buffer full (lost)             7\n",
		"collector ipfix+tcp://198.18.0.9:4739      disconnected\n",
		"  dropped records (queue full)             4\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("stats lack %q:\n%s", want, b.String())
		}
	}
}

func TestCtlNoDaemon(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	for _, cmd := range []string{"flows", "stats", "expire"} {
		_, _, err := runCLI(t, cmd, "--control-socket", path)
		var ce *config.Error
		if err == nil || errors.As(err, &ce) || !strings.HasPrefix(err.Error(), "no daemon at "+path+": ") {
			t.Errorf("%s: %v, want a no-daemon error (exit 1)", cmd, err)
		}
	}
}

func TestCtlBadFlags(t *testing.T) {
	for _, args := range [][]string{{"flows", "--sort", "time"}, {"flows", "--top", "-1"}, {"expire", "--json"}, {"stats", "extra"}} {
		_, _, err := runCLI(t, args...)
		var ce *config.Error
		if !errors.As(err, &ce) {
			t.Errorf("%q: %v, want a usage error (exit 2)", args, err)
		}
	}
}

func TestCtlSocketFromConfig(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "hostflow.yaml")
	os.WriteFile(file, []byte("control_socket: "+filepath.Join(dir, "x.sock")+"\n"), 0o644)
	_, _, err := runCLI(t, "stats", "--config", file)
	if err == nil || !strings.Contains(err.Error(), "no daemon at "+filepath.Join(dir, "x.sock")) {
		t.Errorf("socket of the config file: %v", err)
	}
	os.WriteFile(file, []byte("control_socket: \"\"\n"), 0o644)
	if _, _, err := runCLI(t, "stats", "--config", file); err == nil || !strings.Contains(err.Error(), "control_socket is empty") {
		t.Errorf("empty control_socket: %v", err)
	}
}
