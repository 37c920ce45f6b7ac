package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/exporter"
	"github.com/hostflow/hostflow/templates"
)

// The sampling rate each collector reads from the sampling options record
// (see templates.Options): 1-in-10 sampling, random and count-based, IPFIX
// and v9. goflow2's producer is asserted in exporter's
// TestGoflow2SamplingRate on the same encoders. nfdump 1.7.1 is not
// asserted: its nfcapd registers no sampler from these records (nfdump -E
// lists none, flows stay "Unsampled"), as it did not from the earlier
// ones; see the README.

const peerSamplingRate = 10

var peerSamplings = []struct {
	name string
	alg  bpf.SamplingAlgorithm
}{{"random", bpf.SamplingRandom}, {"count", bpf.SamplingCount}}

func sampledOptions(alg bpf.SamplingAlgorithm) *exporter.OptionsConfig {
	o := peerOptions()
	o.SamplingInterval, o.SamplingAlgorithm = peerSamplingRate, alg
	return o
}

// TestPeerNfacctdSamplingRate: nfacctd's sampling_rate primitive shows 10
// for every flow.
func TestPeerNfacctdSamplingRate(t *testing.T) {
	requireRoot(t, "ip", "nfacctd")
	for _, proto := range []templates.ExportProtocol{templates.IPFIX, templates.NetFlowV9} {
		for _, s := range peerSamplings {
			t.Run(proto.String()+"/"+s.name, func(t *testing.T) {
				ns := newNamespace(t, "hf-peer-pms")
				dir := t.TempDir()
				out := filepath.Join(dir, "flows.json")
				const port = 9996
				conf := fmt.Sprintf(`daemonize: false
nfacctd_ip: 127.0.0.1
nfacctd_port: %d
plugins: print[p]
aggregate[p]: src_host, dst_host, src_port, dst_port, proto, sampling_rate
print_output[p]: json
print_output_file[p]: %s
print_output_file_append[p]: true
print_refresh_time[p]: 1
`, port, out)
				cf := filepath.Join(dir, "nfacctd.conf")
				if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
					t.Fatal(err)
				}
				pm := startGroup(t, ns.command("nfacctd", "-f", cf))
				pm.waitOutput(t, "waiting for NetFlow/IPFIX data", 10*time.Second)
				pm.waitOutput(t, "Purging cache - END", 10*time.Second)
				now := peerClock()
				flows := peerFlows(now)
				exportUDPOptions(t, ns, proto, "127.0.0.1:"+strconv.Itoa(port), now, flows, sampledOptions(s.alg))
				waitPmacct(t, out, len(flows), 15*time.Second)
				b, err := os.ReadFile(out)
				if err != nil {
					t.Fatal(err)
				}
				n := 0
				for _, line := range splitLines(b) {
					var r struct {
						EventType string `json:"event_type"`
						Rate      *int   `json:"sampling_rate"`
					}
					if err := json.Unmarshal(line, &r); err != nil {
						t.Fatalf("nfacctd json %q: %v", line, err)
					}
					if r.EventType != "purge" {
						continue
					}
					n++
					if r.Rate == nil || *r.Rate != peerSamplingRate {
						t.Errorf("nfacctd record %s: sampling_rate %v, want %d", line, r.Rate, peerSamplingRate)
					}
				}
				if n != len(flows) {
					t.Errorf("nfacctd printed %d records, want %d", n, len(flows))
				}
			})
		}
	}
}

func splitLines(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != '\n' {
			i++
		}
		if i > 0 {
			out = append(out, b[:i])
		}
		if i == len(b) {
			break
		}
		b = b[i+1:]
	}
	return out
}
