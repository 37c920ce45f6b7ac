package exporter

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testPKI is a CA with a collector (server) and an exporter (client)
// certificate, written as PEM files.
type testPKI struct {
	caFile, serverCert, serverKey, clientCert, clientKey string
	pool                                                 *x509.CertPool
	server                                               tls.Certificate

	dir    string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	serial int64
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{pool: x509.NewCertPool(), dir: t.TempDir()}
	now := time.Now()
	p.caKey = newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "hostflow test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &p.caKey.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	if p.ca, err = x509.ParseCertificate(caDER); err != nil {
		t.Fatal(err)
	}
	p.pool.AddCert(p.ca)
	p.caFile = writePEM(t, p.dir, "ca.pem", "CERTIFICATE", caDER)
	p.serial = 1
	p.serverCert, p.serverKey = p.leaf(t, "collector.test", x509.ExtKeyUsageServerAuth, "server")
	p.clientCert, p.clientKey = p.leaf(t, "exporter-1", x509.ExtKeyUsageClientAuth, "client")
	p.server, err = tls.LoadX509KeyPair(p.serverCert, p.serverKey)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// leaf issues a certificate for cn and writes it and its key as
// name.pem and name-key.pem, replacing the files of an earlier one.
func (p *testPKI) leaf(t *testing.T, cn string, usage x509.ExtKeyUsage, name string) (certFile, keyFile string) {
	t.Helper()
	now := time.Now()
	p.serial++
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	if usage == x509.ExtKeyUsageServerAuth {
		tmpl.DNSNames = []string{"collector.test"}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, p.dir, name+".pem", "CERTIFICATE", der), writePEM(t, p.dir, name+"-key.pem", "EC PRIVATE KEY", keyDER)
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// serverTLS is a collector that requires and verifies client certificates
// (RFC 7011 section 11).
func (p *testPKI) serverTLS(maxVersion uint16) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.pool,
		MaxVersion:   maxVersion,
	}
}

func (p *testPKI) clientTLS(t *testing.T, withCert bool, serverName string) *tls.Config {
	t.Helper()
	cfg := TLSConfig{CAFile: p.caFile, ServerName: serverName}
	if withCert {
		cfg.CertFile, cfg.KeyFile = p.clientCert, p.clientKey
	}
	tc, err := cfg.Load()
	if err != nil {
		t.Fatal(err)
	}
	return tc
}

func TestTLSMutualAuthentication(t *testing.T) {
	p := newTestPKI(t)
	for _, v := range []struct {
		name string
		max  uint16
	}{{"tls1.3", 0}, {"tls1.2", tls.VersionTLS12}} {
		t.Run(v.name, func(t *testing.T) {
			srv := startServer(t, "127.0.0.1:0", p.serverTLS(v.max))
			t.Run("with client certificate", func(t *testing.T) {
				hooks := 0
				tr := newStream(t, StreamConfig{Address: srv.addr(), TLS: p.clientTLS(t, true, "collector.test"), OnConnect: func() { hooks++ }})
				if err := connectWithin(t, tr, 20*time.Second); err != nil {
					t.Fatal(err)
				}
				for i := uint32(1); i <= 3; i++ {
					if err := tr.WriteMessage(testMsg(i, 300)); err != nil {
						t.Fatal(err)
					}
				}
				if !srv.waitFor(20*time.Second, func() bool { return srv.total() == 3 }) {
					t.Fatalf("server got %d messages, want 3", srv.total())
				}
				srv.mu.Lock()
				cn := srv.conns[0].peerCN
				srv.mu.Unlock()
				if cn != "exporter-1" || hooks != 1 {
					t.Errorf("client certificate CN %q, hooks %d", cn, hooks)
				}
				if err := tr.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			})
			t.Run("without client certificate", func(t *testing.T) {
				tr := newStream(t, StreamConfig{Address: srv.addr(), TLS: p.clientTLS(t, false, ""), Backoff: Backoff{Min: time.Hour, Max: time.Hour}, DialTimeout: 10 * time.Second})
				// Under TLS 1.2 the handshake fails; under 1.3 the
				// client finishes first and learns of the refusal
				// from the collector's alert, at the latest on the
				// next writes.
				var err error
				deadline := time.Now().Add(10 * time.Second)
				if err = connectWithin(t, tr, 10*time.Second); err == nil {
					for err == nil && time.Now().Before(deadline) {
						err = tr.WriteMessage(testMsg(1, 100))
						time.Sleep(5 * time.Millisecond)
					}
				}
				if !errors.Is(err, ErrNoClientCertificate) {
					t.Fatalf("got %v, want ErrNoClientCertificate", err)
				}
				if !strings.Contains(err.Error(), "certificate") {
					t.Errorf("error %q does not say what is wrong", err)
				}
				t.Logf("error: %v", err)
			})
		})
	}
}

// The collector's certificate must carry the name asked for, and be signed
// by the configured CA.
func TestTLSVerifiesCollector(t *testing.T) {
	p := newTestPKI(t)
	srv := startServer(t, "127.0.0.1:0", p.serverTLS(0))
	// One attempt, then back off for good: the error is the handshake's.
	once := Backoff{Min: time.Hour, Max: time.Hour}
	tr := newStream(t, StreamConfig{Address: srv.addr(), TLS: p.clientTLS(t, true, "other.test"), Backoff: once, DialTimeout: 5 * time.Second})
	err := tr.WriteMessage(testMsg(1, 100))
	var hostErr x509.HostnameError
	var ce *ConnError
	if !errors.As(err, &hostErr) || !errors.As(err, &ce) || ce.Op != "tls handshake" {
		t.Errorf("wrong server name: %v, want a hostname error", err)
	}

	// The system roots do not know the test CA.
	tc, err := TLSConfig{CertFile: p.clientCert, KeyFile: p.clientKey}.Load()
	if err != nil {
		t.Fatal(err)
	}
	tr = newStream(t, StreamConfig{Address: srv.addr(), TLS: tc, Backoff: once, DialTimeout: 5 * time.Second})
	err = tr.WriteMessage(testMsg(1, 100))
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("unknown CA: %v, want an unknown authority error", err)
	}
	if srv.total() != 0 {
		t.Errorf("server got %d messages from unverified clients", srv.total())
	}
}

func TestTLSConfigLoad(t *testing.T) {
	p := newTestPKI(t)
	tc, err := TLSConfig{CAFile: p.caFile, ServerName: "collector.test", CertFile: p.clientCert, KeyFile: p.clientKey}.Load()
	if err != nil {
		t.Fatal(err)
	}
	if tc.MinVersion != tls.VersionTLS12 || tc.GetClientCertificate == nil || tc.RootCAs == nil || tc.ServerName != "collector.test" {
		t.Errorf("config %+v", tc)
	}
	for name, bad := range map[string]TLSConfig{
		"missing ca":   {CAFile: filepath.Join(t.TempDir(), "nope.pem")},
		"ca not pem":   {CAFile: p.clientKey},
		"cert no key":  {CertFile: p.clientCert},
		"key no cert":  {KeyFile: p.clientKey},
		"mismatch":     {CertFile: p.clientCert, KeyFile: p.serverKey},
		"missing cert": {CertFile: "/nonexistent", KeyFile: p.clientKey},
	} {
		if _, err := bad.Load(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TLS to an IPv6 collector, server name from the address.
func TestTLSOverIPv6(t *testing.T) {
	p := newTestPKI(t)
	if ln, err := net.Listen("tcp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		ln.Close()
	}
	srv := startServer(t, "[::1]:0", p.serverTLS(0))
	tr := newStream(t, StreamConfig{Address: srv.addr(), TLS: p.clientTLS(t, true, "")})
	if err := tr.WriteMessage(testMsg(7, 64)); err != nil {
		t.Fatal(err)
	}
	if !srv.waitFor(20*time.Second, func() bool { return srv.total() == 1 }) {
		t.Fatal("no message over IPv6")
	}
}

// TestTLSClientCertificateRenewed renews the client certificate at the
// same paths: the next connection presents the new one, and a half-written
// renewal (a key that does not match) keeps the last good pair.
func TestTLSClientCertificateRenewed(t *testing.T) {
	p := newTestPKI(t)
	srv := startServer(t, "127.0.0.1:0", p.serverTLS(0))
	tr := newStream(t, StreamConfig{Address: srv.addr(), TLS: p.clientTLS(t, true, "collector.test")})
	peers := func() []string {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		var out []string
		for _, c := range srv.conns {
			out = append(out, c.peerCN)
		}
		return out
	}
	reconnect := func(step string) {
		t.Helper()
		if err := tr.WriteMessage(testMsg(1, 64)); err != nil {
			t.Fatalf("%s: write: %v", step, err)
		}
		n := len(srv.snapshot())
		if !srv.waitFor(20*time.Second, func() bool { return srv.total() >= n && peers()[n-1] != "" }) {
			t.Fatalf("%s: no verified connection", step)
		}
		srv.kill()
		if !waitUntil(20*time.Second, func() bool { return !tr.Stats().Connected }) {
			t.Fatalf("%s: transport did not notice the collector hang up", step)
		}
		srv.restart()
		time.Sleep(2 * testBackoff.Max)
	}
	reconnect("first")
	p.leaf(t, "exporter-2", x509.ExtKeyUsageClientAuth, "client")
	reconnect("renewed")
	// Half a renewal: a new certificate whose key is not written yet.
	key, err := os.ReadFile(p.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	p.leaf(t, "exporter-3", x509.ExtKeyUsageClientAuth, "client")
	if err := os.WriteFile(p.clientKey, key, 0o600); err != nil {
		t.Fatal(err)
	}
	reconnect("half renewed")
	if got := strings.Join(peers(), " "); got != "exporter-1 exporter-2 exporter-2" {
		t.Errorf("client certificates seen: %s, want exporter-1 exporter-2 exporter-2", got)
	}
}
