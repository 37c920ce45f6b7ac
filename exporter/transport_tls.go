package exporter

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
)

// TLSConfig names the files of a TLS transport (RFC 7011 section 11: the
// exporter verifies the collector's certificate, and presents its own so
// the collector can verify it in turn).
type TLSConfig struct {
	// CAFile holds the PEM certificates of the authorities that sign the
	// collector's certificate. Empty: the system roots.
	CAFile string
	// ServerName is the name the collector's certificate must carry.
	// Empty: the host part of the collector's address.
	ServerName string
	// CertFile and KeyFile hold the exporter's PEM certificate chain and
	// private key, for mutual authentication. Both or neither.
	CertFile string
	KeyFile  string
}

// Load reads the files into a *tls.Config for StreamConfig.TLS. The
// version floor is TLS 1.2: RFC 7011 section 11 asks for TLS 1.1 or later,
// and nothing before 1.2 is still considered safe (RFC 8996).
//
// The client certificate is read again at every handshake, so a
// certificate renewed at the same paths is presented on the next
// connection. If the files cannot be read or do not match then (a renewal
// half done), the last pair that did is presented. The CA file is read
// here only: Fingerprint tells when it, or the pair, changed.
func (c TLSConfig) Load() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls ca file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls ca file %s: no PEM certificate found", c.CAFile)
		}
		cfg.RootCAs = pool
	}
	switch {
	case c.CertFile != "" && c.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls client certificate: %w", err)
		}
		kp := &keyPair{certFile: c.CertFile, keyFile: c.KeyFile, last: &cert}
		cfg.GetClientCertificate = kp.get
	case c.CertFile != "" || c.KeyFile != "":
		return nil, errors.New("tls client certificate: need both a certificate file and a key file")
	}
	return cfg, nil
}

// keyPair reads a certificate and key pair at each handshake.
type keyPair struct {
	certFile, keyFile string
	mu                sync.Mutex
	last              *tls.Certificate
}

func (k *keyPair) get(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if cert, err := tls.LoadX509KeyPair(k.certFile, k.keyFile); err == nil {
		k.last = &cert
	}
	return k.last, nil
}

// Fingerprint returns a digest of the contents of the configured files, so
// that a reload can tell files renewed at the same paths from unchanged
// ones. A file that cannot be read counts as its error text: Load reports
// it.
func (c TLSConfig) Fingerprint() string {
	h := sha256.New()
	for _, name := range []string{c.CAFile, c.CertFile, c.KeyFile} {
		fmt.Fprintf(h, "%q\n", name)
		if name == "" {
			continue
		}
		b, err := os.ReadFile(name)
		if err != nil {
			fmt.Fprintf(h, "error %v\n", err)
			continue
		}
		sum := sha256.Sum256(b)
		h.Write(sum[:])
	}
	return hex.EncodeToString(h.Sum(nil))
}
