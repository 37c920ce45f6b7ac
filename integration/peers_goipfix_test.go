package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vmware/go-ipfix/pkg/collector"
	"github.com/vmware/go-ipfix/pkg/entities"
	"github.com/vmware/go-ipfix/pkg/registry"
	"k8s.io/klog/v2"

	"github.com/hostflow/hostflow/exporter"
	"github.com/hostflow/hostflow/templates"
)

// go-ipfix v0.17.0's collecting process decodes exactly one set per
// message, and one template record per template set (pkg/collector,
// decodePacket: "At the moment we assume exactly one set per IPFIX
// message"); it has no options templates (set ID 3) at all. hostflow, like
// most exporters, packs several sets per message (RFC 7011 section 3), so
// the test puts oneSetPerMessage between the encoder and the transport:
// it reframes each message into one message per set (one per template
// record for template sets) and leaves out options templates and their
// records. Every byte of every flow record is hostflow's; only the framing
// is the adapter's, and the framing itself is what nfdump, nfacctd,
// ipfixDump and Wireshark check. Without the adapter, the collector
// panics on hostflow's first message ("index out of range [1] with length
// 0" in entities.DecodeAndCreateInfoElementWithValue, from decodeDataSet
// reading the next set's header as record fields).
type oneSetPerMessage struct {
	w        exporter.MessageWriter
	options  map[uint16]bool // options template IDs
	records  uint32          // data records forwarded: the next sequence number
	messages int
}

func (o *oneSetPerMessage) WriteMessage(msg []byte) error {
	be := binary.BigEndian
	_, sets, err := splitIPFIX(msg)
	if err != nil {
		return err
	}
	emit := func(setID uint16, body []byte, records int) error {
		m := make([]byte, 0, 20+len(body))
		m = append(m, msg[:16]...)
		be.PutUint16(m[2:], uint16(20+len(body)))
		be.PutUint32(m[8:], o.records)
		m = be.AppendUint16(m, setID)
		m = be.AppendUint16(m, uint16(4+len(body)))
		m = append(m, body...)
		o.records += uint32(records)
		o.messages++
		return o.w.WriteMessage(m)
	}
	for _, s := range sets[0] {
		switch {
		case s.id == 2:
			for b := s.body; len(b) >= 4; {
				n := 4 + 4*int(be.Uint16(b[2:])) // no enterprise fields here
				if err := emit(2, b[:n], 0); err != nil {
					return err
				}
				b = b[n:]
			}
		case s.id == 3:
			for _, id := range templateIDs(s) {
				o.options[id] = true
			}
		case o.options[s.id]:
		default:
			if err := emit(s.id, s.body, 0); err != nil {
				return err
			}
		}
	}
	return nil
}

// goIPFIXCollector runs go-ipfix's collecting process over TCP (or TLS)
// on 127.0.0.1 and gathers the data records it decodes.
type goIPFIXCollector struct {
	cp      *collector.CollectingProcess
	mu      sync.Mutex
	records []entities.Record
	done    chan struct{}
}

func startGoIPFIX(t *testing.T, input collector.CollectorInput) *goIPFIXCollector {
	t.Helper()
	registry.LoadRegistry()
	if !testing.Verbose() {
		klog.LogToStderr(false) // go-ipfix logs every connection
		klog.SetOutput(io.Discard)
	}
	input.Address, input.Protocol = "127.0.0.1:0", "tcp"
	cp, err := collector.InitCollectingProcess(input)
	if err != nil {
		t.Fatal(err)
	}
	c := &goIPFIXCollector{cp: cp, done: make(chan struct{})}
	go cp.Start()
	go func() {
		defer close(c.done)
		for msg := range cp.GetMsgChan() {
			if set := msg.GetSet(); set.GetSetType() == entities.Data {
				c.mu.Lock()
				c.records = append(c.records, set.GetRecords()...)
				c.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		cp.Stop()
		<-c.done
	})
	for deadline := time.Now().Add(5 * time.Second); cp.GetAddress() == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("go-ipfix collector did not listen")
		}
	}
	return c
}

func (c *goIPFIXCollector) addr() string { return c.cp.GetAddress().String() }

func (c *goIPFIXCollector) wait(n int, limit time.Duration) []entities.Record {
	deadline := time.Now().Add(limit)
	for {
		c.mu.Lock()
		got := append([]entities.Record(nil), c.records...)
		c.mu.Unlock()
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// goIPFIXFlow is a data record as go-ipfix decoded it.
type goIPFIXFlow map[string]entities.InfoElementWithValue

func (g goIPFIXFlow) u(name string) uint64 {
	e, ok := g[name]
	if !ok {
		return 1<<64 - 1
	}
	switch e.GetInfoElement().DataType {
	case entities.Unsigned8:
		return uint64(e.GetUnsigned8Value())
	case entities.Unsigned16:
		return uint64(e.GetUnsigned16Value())
	case entities.Unsigned32:
		return uint64(e.GetUnsigned32Value())
	default:
		return e.GetUnsigned64Value()
	}
}

func (g goIPFIXFlow) addr(name string) netip.Addr {
	e, ok := g[name]
	if !ok {
		return netip.Addr{}
	}
	a, _ := netip.AddrFromSlice(e.GetIPAddressValue())
	return a.Unmap()
}

// checkGoIPFIXRecords requires every fixture flow decoded once, with
// every field of the default template right.
func checkGoIPFIXRecords(t *testing.T, flows []peerFlow, recs []entities.Record) {
	t.Helper()
	if len(recs) != len(flows) {
		t.Errorf("go-ipfix decoded %d data records, want %d", len(recs), len(flows))
	}
	var decoded []goIPFIXFlow
	for _, r := range recs {
		g := goIPFIXFlow{}
		for _, e := range r.GetOrderedElementList() {
			g[e.GetInfoElement().Name] = e
		}
		decoded = append(decoded, g)
	}
	for _, f := range flows {
		fam, ifName, icmp := "IPv4", "ingressInterface", "icmpTypeCodeIPv4"
		if f.src.Is6() {
			fam, icmp = "IPv6", "icmpTypeCodeIPv6"
		}
		if f.egress {
			ifName = "egressInterface"
		}
		var got []goIPFIXFlow
		for _, g := range decoded {
			// ICMP records have the type and code and no ports,
			// the others the ports and no ICMP element.
			const absent = 1<<64 - 1
			sport, dport, tc := uint64(f.sport), uint64(f.dport), uint64(absent)
			if f.isICMP() {
				sport, dport, tc = absent, absent, uint64(f.icmpType)<<8|uint64(f.icmpCode)
			}
			if g.addr("source"+fam+"Address") == f.src && g.addr("destination"+fam+"Address") == f.dst &&
				g.u("protocolIdentifier") == uint64(f.proto) && g.u("sourceTransportPort") == sport &&
				g.u("destinationTransportPort") == dport && g.u("flowDirection") == uint64(f.dir()) &&
				g.u(icmp) == tc {
				got = append(got, g)
			}
		}
		if len(got) != 1 {
			t.Errorf("%s: %d records, want 1", f, len(got))
			continue
		}
		g := got[0]
		for _, c := range []struct {
			name string
			want uint64
		}{
			{"packetDeltaCount", f.packets},
			{"octetDeltaCount", f.bytes},
			{"tcpControlBits", uint64(f.flags)},
			{ifName, uint64(f.ifindex)},
			{"flowStartMilliseconds", uint64(f.start.UnixMilli())},
			{"flowEndMilliseconds", uint64(f.end.UnixMilli())},
			{"flowEndReason", uint64(f.reason)},
			{"vlanId", 0},
			{"ipClassOfService", uint64(f.tos)},
		} {
			if v := g.u(c.name); v != c.want {
				t.Errorf("%s: %s = %d, want %d", f, c.name, v, c.want)
			}
		}
		want := 15
		if f.isICMP() {
			want = 14
		}
		if len(g) != want {
			t.Errorf("%s: %d elements, want %d", f, len(g), want)
		}
	}
}

// TestPeerGoIPFIX exports over TCP and over TLS with mutual
// authentication to go-ipfix v0.17.0's collecting process, and requires
// every flow decoded with every value right; over TLS, an exporter
// without a client certificate must be refused and deliver nothing.
func TestPeerGoIPFIX(t *testing.T) {
	pki := newPeerPKI(t)
	for _, mode := range []string{"tcp", "tls"} {
		t.Run(mode, func(t *testing.T) {
			input := collector.CollectorInput{}
			var tc *tls.Config
			if mode == "tls" {
				input.IsEncrypted = true
				input.CACert, input.ServerCert, input.ServerKey = pki.caPEM, pki.serverPEM, pki.serverKeyPEM
				tc = pki.client(t, true)
			}
			c := startGoIPFIX(t, input)
			now := peerClock()
			flows := peerFlows(now)
			var adapter *oneSetPerMessage
			cs, es := exportStream(t, c.addr(), tc, now, flows, func(w exporter.MessageWriter) exporter.MessageWriter {
				adapter = &oneSetPerMessage{w: w, options: map[uint16]bool{}}
				return adapter
			})
			if es.Records != uint64(len(flows)) || es.SendErrors != 0 || cs.Transport.Lost != 0 {
				t.Fatalf("export: %+v, collector %+v", es, cs)
			}
			recs := c.wait(len(flows), 10*time.Second)
			checkGoIPFIXRecords(t, flows, recs)
			t.Logf("%s: hostflow sent %d messages (%d after reframing), go-ipfix decoded %d data records of %d messages",
				mode, es.Messages, adapter.messages, len(recs), c.cp.GetNumMessagesReceived())
		})
	}
	t.Run("tls without client certificate", func(t *testing.T) {
		c := startGoIPFIX(t, collector.CollectorInput{IsEncrypted: true, CACert: pki.caPEM, ServerCert: pki.serverPEM, ServerKey: pki.serverKeyPEM})
		tr, err := exporter.NewStreamTransport(exporter.StreamConfig{Address: c.addr(), TLS: pki.client(t, false), DialTimeout: 2 * time.Second,
			Backoff: exporter.Backoff{Min: 50 * time.Millisecond, Max: 100 * time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tr.Close() })
		now := peerClock()
		flows := peerFlows(now)
		enc := peerSink(t, templates.IPFIX, &oneSetPerMessage{w: tr, options: map[uint16]bool{}}, now, -1).(*exporter.IPFIX)
		tr.SetOnConnect(func() { enc.WriteTemplates() })
		// The handshake may complete on the client side (TLS 1.3 sends
		// the client certificate after the server's Finished): the
		// refusal then shows up on the connection right after. Whatever
		// the timing, some export must fail and nothing be decoded.
		var failed error
		for i := 0; i < 20 && failed == nil; i++ {
			failed = enc.Export(exporterFlows(flows))
			time.Sleep(50 * time.Millisecond)
		}
		if failed == nil {
			t.Fatalf("exports without a client certificate never failed: %+v", tr.Stats())
		}
		if !errors.Is(failed, exporter.ErrNoClientCertificate) {
			t.Logf("export failed with %v (not ErrNoClientCertificate)", failed)
		}
		time.Sleep(200 * time.Millisecond)
		if n := c.cp.GetNumRecordsReceived(); n != 0 {
			t.Errorf("go-ipfix decoded %d records from an exporter without a certificate", n)
		}
		t.Logf("refused: %v; transport %+v", failed, tr.Stats())
	})
}

// peerPKI is a CA, a collector certificate for 127.0.0.1 and an exporter
// (client) certificate, as PEM.
type peerPKI struct {
	caPEM, serverPEM, serverKeyPEM []byte
	caFile, clientCert, clientKey  string
}

func newPeerPKI(t *testing.T) *peerPKI {
	t.Helper()
	dir := t.TempDir()
	now := time.Now()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey := key()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hostflow peer test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(serial int64, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
		k := key()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: fmt.Sprintf("peer-%d", serial)},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kd, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
	}
	p := &peerPKI{caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})}
	p.serverPEM, p.serverKeyPEM = leaf(2, x509.ExtKeyUsageServerAuth)
	clientPEM, clientKeyPEM := leaf(3, x509.ExtKeyUsageClientAuth)
	write := func(name string, b []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	p.caFile = write("ca.pem", p.caPEM)
	p.clientCert = write("client.pem", clientPEM)
	p.clientKey = write("client-key.pem", clientKeyPEM)
	return p
}

// client is the exporter's TLS config, through hostflow's TLSConfig.
func (p *peerPKI) client(t *testing.T, withCert bool) *tls.Config {
	t.Helper()
	c := exporter.TLSConfig{CAFile: p.caFile}
	if withCert {
		c.CertFile, c.KeyFile = p.clientCert, p.clientKey
	}
	tc, err := c.Load()
	if err != nil {
		t.Fatal(err)
	}
	return tc
}
