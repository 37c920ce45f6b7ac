package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// miniPKI issues certificates from a test CA into PEM files.
type miniPKI struct {
	t      *testing.T
	dir    string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	pool   *x509.CertPool
	serial int64
}

func newMiniPKI(t *testing.T) *miniPKI {
	p := &miniPKI{t: t, dir: t.TempDir(), pool: x509.NewCertPool()}
	var err error
	if p.caKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &p.caKey.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	if p.ca, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	p.pool.AddCert(p.ca)
	p.write("ca.pem", "CERTIFICATE", der)
	p.serial = 1
	return p
}

func (p *miniPKI) write(name, typ string, der []byte) string {
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		p.t.Fatal(err)
	}
	return path
}

// issue writes name.pem and name-key.pem for cn, replacing earlier ones.
func (p *miniPKI) issue(cn, name string, server bool) (string, string) {
	p.serial++
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(p.serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		p.t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		p.t.Fatal(err)
	}
	return p.write(name+".pem", "CERTIFICATE", der), p.write(name+"-key.pem", "EC PRIVATE KEY", keyDER)
}

// TestReloadRenewedTLSCertificate renews the client certificate at the
// same paths and reloads: the collector's exporter is rebuilt and the
// collector sees the new certificate at once, on a new connection. A
// reload with the same files keeps the exporter.
func TestReloadRenewedTLSCertificate(t *testing.T) {
	p := newMiniPKI(t)
	serverCert, err := tls.LoadX509KeyPair(p.issue("127.0.0.1", "server", true))
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := p.issue("exporter-1", "client", false)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{serverCert},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: p.pool})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var peers []string
	var conns []net.Conn
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				tc := c.(*tls.Conn)
				if tc.Handshake() != nil {
					return
				}
				mu.Lock()
				peers = append(peers, tc.ConnectionState().PeerCertificates[0].Subject.CommonName)
				mu.Unlock()
				io.Copy(io.Discard, tc)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	seen := func(n int) []string {
		deadline := time.Now().Add(5 * time.Second)
		for {
			mu.Lock()
			out := append([]string(nil), peers...)
			mu.Unlock()
			if len(out) >= n || time.Now().After(deadline) {
				return out
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	env := sinkEnv{log: log}
	args := []string{"--collector", "ipfix+tls://" + ln.Addr().String(),
		"--tls-ca-file", filepath.Join(p.dir, "ca.pem"), "--tls-cert-file", certFile, "--tls-key-file", keyFile}
	first, _, _, err := buildSinks(sinkConfig(t, args...), nil, env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { first.Close() })
	if err := first.Export(streamFlows(3)); err != nil {
		t.Fatal(err)
	}
	if got := seen(1); len(got) != 1 || got[0] != "exporter-1" {
		t.Fatalf("collector saw %v, want [exporter-1]", got)
	}

	same, unused, created, err := buildSinks(sinkConfig(t, args...), first, env)
	if err != nil || len(created) != 0 || len(unused) != 0 || same[0] != first[0] {
		t.Fatalf("reload with the same files: created %d unused %d err %v, want the exporter kept", len(created), len(unused), err)
	}

	p.issue("exporter-2", "client", false) // renewed at the same paths
	second, unused, created, err := buildSinks(sinkConfig(t, args...), same, env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { second.Close() })
	if len(created) != 1 || len(unused) != 1 {
		t.Fatalf("reload with renewed files: created %d unused %d, want the exporter rebuilt", len(created), len(unused))
	}
	if err := unused.Close(); err != nil {
		t.Fatal(err)
	}
	if err := second.Export(streamFlows(3)); err != nil {
		t.Fatal(err)
	}
	if got := seen(2); len(got) != 2 || got[1] != "exporter-2" {
		t.Errorf("collector saw %v, want [exporter-1 exporter-2]", got)
	}
}
