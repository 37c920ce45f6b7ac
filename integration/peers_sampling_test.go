package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/exporter"
	"github.com/hostflow/hostflow/templates"
)

// The sampling rate each collector reads from the sampling options record
// (see templates.Options): 1-in-10 sampling, random and count-based, IPFIX
// and v9, read by nfacctd and by nfdump's nfcapd here; goflow2's producer
// is asserted in exporter's TestGoflow2SamplingRate on the same encoders.

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

// TestPeerNfcapdSamplingRate: nfdump 1.7.1's nfcapd registers a sampler
// from the sampling options record (nfdump -E lists it: packet interval 1,
// packet space 9, the algorithm the record names) and multiplies every
// flow's packets and bytes by 10, marking it "Sampled".
func TestPeerNfcapdSamplingRate(t *testing.T) {
	requireRoot(t, "ip", "nfcapd", "nfdump")
	for _, proto := range []templates.ExportProtocol{templates.IPFIX, templates.NetFlowV9} {
		for _, s := range peerSamplings {
			t.Run(proto.String()+"/"+s.name, func(t *testing.T) {
				ns := newNamespace(t, "hf-peer-nfs")
				dir := t.TempDir()
				const port = 9995
				nfcapd := start(t, ns.command("nfcapd", "-w", dir, "-b", "127.0.0.1", "-p", strconv.Itoa(port), "-t", "3600", "-I", "peer", "-v"))
				nfcapd.waitOutput(t, "Startup nfcapd.", 10*time.Second)
				now := peerClock()
				flows := peerFlows(now)
				exportUDPOptions(t, ns, proto, "127.0.0.1:"+strconv.Itoa(port), now, flows, sampledOptions(s.alg))
				ns.waitUDPQueueEmpty(t, port, 10*time.Second) // nfcapd has read every datagram
				nfcapd.stop(t, 10*time.Second)
				file := nfdumpFile(t, dir)

				// The algorithm nfdump shows: IPFIX selectorAlgorithm
				// (4 random, 1 count), v9 FLOW_SAMPLER_MODE (2, 1).
				alg := map[bool]int{true: 4, false: 1}[s.alg == bpf.SamplingRandom]
				if proto == templates.NetFlowV9 {
					alg = map[bool]int{true: 2, false: 1}[s.alg == bpf.SamplingRandom]
				}
				e := sh(t, "nfdump", "-E", file)
				want := regexp.MustCompile(fmt.Sprintf(`(?m)^\s*Sampler: .*algorithm: %d, packet interval: 1, packet space: %d$`, alg, peerSamplingRate-1))
				if n := len(regexp.MustCompile(`(?m)^\s*Sampler:`).FindAllString(e, -1)); n != 1 || !want.MatchString(e) {
					t.Errorf("nfdump -E: want one sampler %s:\n%s", want, e)
				}

				out := sh(t, "nfdump", "-r", file, "-o", "json")
				var recs []nfRecord
				if err := json.Unmarshal([]byte(out), &recs); err != nil {
					t.Fatalf("parse nfdump json: %v\n%s", err, out)
				}
				raw := nfdumpRaw(sh(t, "nfdump", "-r", file, "-o", "raw"))
				if len(recs) != len(flows) || len(raw) != len(recs) {
					t.Fatalf("nfdump shows %d records (-o raw %d), exported %d", len(recs), len(raw), len(flows))
				}
				for i := range recs {
					r := &recs[i]
					r.normalize()
					if !strings.Contains(raw[i]["Flags"], ", Sampled") {
						t.Errorf("%s: flags %q, want Sampled", r, raw[i]["Flags"])
					}
					var f *peerFlow
					for j := range flows {
						g := &flows[j]
						if r.Proto == int(g.proto) && r.SrcAddress == g.src.String() && r.DstAddress == g.dst.String() &&
							(g.isICMP() || (r.SrcPort == int(g.sport) && r.DstPort == int(g.dport))) {
							f = g
						}
					}
					if f == nil {
						t.Errorf("unexpected record %s", r)
						continue
					}
					if r.Packets != f.packets*peerSamplingRate || r.Bytes != f.bytes*peerSamplingRate {
						t.Errorf("%s: %d packets %d bytes, want %d %d (sampled counts times %d)", f, r.Packets, r.Bytes,
							f.packets*peerSamplingRate, f.bytes*peerSamplingRate, peerSamplingRate)
					}
				}
			})
		}
	}
}

// TestPeerNfcapdSamplingRateChange: an exporter that stops sampling
// (sampling: 0 after a reload) still sends the sampling record, with N = 1,
// and nfcapd updates the sampler it holds for the exporter, so it stops
// multiplying: the flow exported before counts 10 times, the one after
// once.
func TestPeerNfcapdSamplingRateChange(t *testing.T) {
	requireRoot(t, "ip", "nfcapd", "nfdump")
	ns := newNamespace(t, "hf-peer-nfr")
	dir := t.TempDir()
	const port = 9995
	addr := "127.0.0.1:" + strconv.Itoa(port)
	nfcapd := start(t, ns.command("nfcapd", "-w", dir, "-b", "127.0.0.1", "-p", strconv.Itoa(port), "-t", "3600", "-I", "peer", "-v"))
	nfcapd.waitOutput(t, "Startup nfcapd.", 10*time.Second)
	now := peerClock()
	flows := peerFlows(now)[:2]
	exportUDPOptions(t, ns, templates.IPFIX, addr, now, flows[:1], sampledOptions(bpf.SamplingRandom))
	time.Sleep(100 * time.Millisecond)
	exportUDP(t, ns, templates.IPFIX, addr, now, flows[1:])
	ns.waitUDPQueueEmpty(t, port, 10*time.Second) // nfcapd has read every datagram
	nfcapd.stop(t, 10*time.Second)
	if log := nfcapd.output.String(); !strings.Contains(log, "Update existing sampler id: 0, algorithm: 4, packet interval: 1, packet space: 0") {
		t.Errorf("nfcapd did not update its sampler to rate 1:\n%s", log)
	}
	out := sh(t, "nfdump", "-r", nfdumpFile(t, dir), "-o", "json")
	var recs []nfRecord
	if err := json.Unmarshal([]byte(out), &recs); err != nil {
		t.Fatalf("parse nfdump json: %v\n%s", err, out)
	}
	if len(recs) != 2 {
		t.Fatalf("nfdump shows %d records, want 2:\n%s", len(recs), out)
	}
	for i, f := range flows {
		mult := uint64(1)
		if i == 0 {
			mult = peerSamplingRate
		}
		var found bool
		for j := range recs {
			r := &recs[j]
			r.normalize()
			if r.SrcAddress != f.src.String() || r.DstAddress != f.dst.String() || r.SrcPort != int(f.sport) {
				continue
			}
			found = true
			if r.Packets != f.packets*mult || r.Bytes != f.bytes*mult {
				t.Errorf("%s: %d packets %d bytes, want %d %d", f, r.Packets, r.Bytes, f.packets*mult, f.bytes*mult)
			}
		}
		if !found {
			t.Errorf("%s: no record", f)
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
