package integration

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hostflow/hostflow/templates"
)

// nfdumpFlags renders TCP flags as nfdump does: CEUAPRSF, '.' when unset.
func nfdumpFlags(f uint16) string {
	const letters = "CEUAPRSF"
	b := []byte("........")
	for i := range 8 {
		if f&(0x80>>i) != 0 {
			b[i] = letters[i]
		}
	}
	return string(b)
}

// nfdumpRaw splits `nfdump -o raw` into records of "key = value" lines.
func nfdumpRaw(out string) []map[string]string {
	var recs []map[string]string
	for _, block := range strings.Split(out, "Flow Record:")[1:] {
		m := map[string]string{}
		for _, line := range strings.Split(block, "\n") {
			k, v, ok := strings.Cut(line, "=")
			if ok {
				m[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
		}
		recs = append(recs, m)
	}
	return recs
}

// TestPeerNfdump exports the fixture to nfcapd over UDP, as IPFIX and as
// NetFlow v9, and requires nfdump to show every flow once with exact
// values, no sequence failure, and no error in nfcapd's log.
func TestPeerNfdump(t *testing.T) {
	requireRoot(t, "ip", "nfcapd", "nfdump")
	for _, proto := range []templates.ExportProtocol{templates.IPFIX, templates.NetFlowV9} {
		t.Run(proto.String(), func(t *testing.T) {
			ns := newNamespace(t, "hf-peer-nf")
			dir := t.TempDir()
			const port = 9995
			nfcapd := start(t, ns.command("nfcapd", "-w", dir, "-b", "127.0.0.1", "-p", strconv.Itoa(port), "-t", "3600", "-I", "peer", "-v"))
			nfcapd.waitOutput(t, "Startup nfcapd.", 10*time.Second)

			now := peerClock()
			flows := peerFlows(now)
			st := exportUDP(t, ns, proto, "127.0.0.1:"+strconv.Itoa(port), now, flows)
			if st.Records != uint64(len(flows)) || st.Messages < 3 {
				t.Fatalf("exported %+v, want %d records in several messages", st, len(flows))
			}
			ns.waitUDPQueueEmpty(t, port, 10*time.Second) // nfcapd has read every datagram
			nfcapd.stop(t, 10*time.Second)
			log := nfcapd.output.String()
			checkNfcapdLog(t, proto, log, len(flows))

			file := nfdumpFile(t, dir)
			out := sh(t, "nfdump", "-r", file, "-o", "json")
			var recs []nfRecord
			if err := json.Unmarshal([]byte(out), &recs); err != nil {
				t.Fatalf("parse nfdump json: %v\n%s", err, out)
			}
			raw := nfdumpRaw(sh(t, "nfdump", "-r", file, "-o", "raw"))
			if len(raw) != len(recs) {
				t.Fatalf("nfdump -o raw shows %d records, -o json %d", len(raw), len(recs))
			}
			if len(recs) != len(flows) {
				t.Errorf("nfdump shows %d records, exported %d", len(recs), len(flows))
			}
			used := make([]bool, len(recs))
			for _, f := range flows {
				var got []int
				for i := range recs {
					r := &recs[i]
					r.normalize()
					if r.Proto == int(f.proto) && r.SrcAddress == f.src.String() && r.DstAddress == f.dst.String() &&
						r.Direction != nil && *r.Direction == f.dir() &&
						(f.isICMP() || (r.SrcPort == int(f.sport) && r.DstPort == int(f.dport))) &&
						(!f.isICMP() || icmpTypeCode(*r) == int(f.icmpType)<<8|int(f.icmpCode)) {
						got = append(got, i)
					}
				}
				if len(got) != 1 {
					t.Errorf("%s: %d records, want 1", f, len(got))
					continue
				}
				used[got[0]] = true
				checkNfdumpRecord(t, proto, f, recs[got[0]], raw[got[0]])
				checkNfdumpIfName(t, f, raw[got[0]])
			}
			for i, u := range used {
				if !u {
					t.Errorf("unexpected record %s", recs[i])
				}
			}

			info := sh(t, "nfdump", "-I", "-r", file)
			m := regexp.MustCompile(`(?m)^Sequence failures:\s*(\d+)`).FindStringSubmatch(info)
			if m == nil || m[1] != "0" {
				t.Errorf("nfdump -I: want 0 sequence failures:\n%s", info)
			}
			wantFlows := fmt.Sprintf("Flows: %d\n", len(flows))
			if !strings.Contains(info, wantFlows) {
				t.Errorf("nfdump -I lacks %q:\n%s", wantFlows, info)
			}
		})
	}
}

func checkNfdumpRecord(t *testing.T, proto templates.ExportProtocol, f peerFlow, r nfRecord, raw map[string]string) {
	t.Helper()
	if r.Packets != f.packets || r.Bytes != f.bytes {
		t.Errorf("%s: %d packets %d bytes, want %d %d", f, r.Packets, r.Bytes, f.packets, f.bytes)
	}
	if r.SrcTos == nil || *r.SrcTos != int(f.tos) {
		t.Errorf("%s: src_tos %s, want %d", f, deref(r.SrcTos), f.tos)
	}
	in, out := deref(r.Input), deref(r.Output)
	wantIn, wantOut := strconv.Itoa(int(f.ifindex)), "0"
	if f.egress {
		wantIn, wantOut = wantOut, wantIn
	}
	if in != wantIn || out != wantOut {
		t.Errorf("%s: input %s output %s, want %s %s", f, in, out, wantIn, wantOut)
	}
	if !f.isICMP() {
		if want := nfdumpFlags(f.flags); f.proto == 6 && r.TCPFlags != want {
			t.Errorf("%s: tcp flags %q, want %q", f, r.TCPFlags, want)
		}
	}
	layout := "2006-01-02T15:04:05.000"
	if first, want := r.First, f.start.Local().Format(layout); first != want {
		t.Errorf("%s: first %s, want %s", f, first, want)
	}
	if last, want := r.Last, f.end.Local().Format(layout); last != want {
		t.Errorf("%s: last %s, want %s", f, last, want)
	}
	// flowEndReason: IPFIX only (v9 has no such field; nfdump shows 0).
	want := "0x00"
	if proto == templates.IPFIX {
		want = fmt.Sprintf("0x%02x", uint8(f.reason))
	}
	if got := raw["end reason"]; !strings.HasPrefix(got, want) {
		t.Errorf("%s: end reason %q, want %s", f, got, want)
	}
}

// checkNfcapdLog requires nfcapd's summary to count every flow and no
// sequence error or bad packet, and its log to hold no error: in
// particular none from its interface-name option parser
// (Process_ifvrf_option), which drops a set whose template has
// variable-length fields.
func checkNfcapdLog(t *testing.T, proto templates.ExportProtocol, log string, flows int) {
	t.Helper()
	want := fmt.Sprintf("Ident: 'peer' Flows: %d, ", flows)
	if !strings.Contains(log, want) || !strings.Contains(log, "Sequence Errors: 0, Bad Packets: 0") {
		t.Errorf("nfcapd %s summary: want %q with no sequence error or bad packet:\n%s", proto, want, log)
	}
	for _, line := range strings.Split(log, "\n") {
		l := strings.ToLower(line)
		if strings.Contains(l, "error") && !strings.Contains(l, "sequence errors: 0") || strings.Contains(l, "invalid") ||
			strings.Contains(l, "skip") || strings.Contains(line, "Process_ifvrf_option") {
			t.Errorf("nfcapd logged: %s", line)
		}
	}
}

// checkNfdumpIfName requires nfdump to name the flow's interface from the
// interface table options. nfdump 1.7.1 (Process_v9_option_templates,
// Process_ipfix_option_templates) takes an options template as an
// interface table when its option fields (not its scope) hold field 10
// (INPUT_SNMP / ingressInterface) for the index and a fixed-length field
// 83 (IF_DESC / interfaceDescription), whose value it shows after the
// index in -o raw's input and output lines; interfaceName (82) it
// ignores. hostflow sends the alias as 83, else the name (wg0 has no
// alias).
func checkNfdumpIfName(t *testing.T, f peerFlow, raw map[string]string) {
	t.Helper()
	in, out := "input", "output"
	if f.egress {
		in, out = out, in
	}
	if got, want := raw[in], fmt.Sprintf("%d %s", f.ifindex, peerIfDesc(f.ifindex)); got != want {
		t.Errorf("%s: nfdump -o raw %s %q, want %q", f, in, got, want)
	}
	if got := raw[out]; got != "0" {
		t.Errorf("%s: nfdump -o raw %s %q, want 0", f, out, got)
	}
}
