package exporter

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
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
		cfg.Certificates = []tls.Certificate{cert}
	case c.CertFile != "" || c.KeyFile != "":
		return nil, errors.New("tls client certificate: need both a certificate file and a key file")
	}
	return cfg, nil
}
