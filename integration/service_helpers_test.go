package integration

// Helpers of the tests that run hostflow as a service (reload, capabilities,
// packages, control socket).

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// svcConfig writes a config file for a test.
func svcConfig(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// svcSignal sends sig to the process.
func svcSignal(t *testing.T, p *process, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// svcWaitCount waits until the output holds s at least n times.
func svcWaitCount(t *testing.T, p *process, s string, n int, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for strings.Count(p.output.String(), s) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%q not printed %d times within %v:\n%s", s, n, limit, p.output.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// svcScrape GETs /metrics from addr inside the namespace: the socket is
// made in the namespace, the request is sent from the test.
func svcScrape(t *testing.T, ns *namespace, addr string) string {
	t.Helper()
	var conn net.Conn
	ns.do(t, func() (err error) {
		conn, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	})
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n", addr); err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(body), "HTTP/1.0 200") {
		t.Fatalf("GET /metrics:\n%s", body)
	}
	return string(body)
}

// svcMetric returns the value of one sample line (name{labels}), or "".
func svcMetric(body, sample string) string {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`)
	if m := re.FindStringSubmatch(body); m != nil {
		return m[1]
	}
	return ""
}

// svcRecords reads the records of the one nfcapd file in dir.
func svcRecords(t *testing.T, dir string) []nfRecord {
	t.Helper()
	out := sh(t, "nfdump", "-r", nfdumpFile(t, dir), "-o", "json")
	var recs []nfRecord
	if strings.TrimSpace(out) == "" {
		return nil
	}
	if err := json.Unmarshal([]byte(out), &recs); err != nil {
		t.Fatalf("parse nfdump json: %v\n%s", err, out)
	}
	for i := range recs {
		recs[i].normalize()
	}
	return recs
}

// svcPublicBinary copies the daemon where nobody can run it.
func svcPublicBinary(t *testing.T, bin string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hostflow-caps-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	pub := filepath.Join(dir, "hostflow")
	if err := os.WriteFile(pub, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return pub
}
