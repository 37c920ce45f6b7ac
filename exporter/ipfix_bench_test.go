package exporter

import (
	"io"
	"net"
	"reflect"
	"testing"
	"time"
	"unsafe"

	"github.com/hostflow/hostflow/templates"
	"github.com/vmware/go-ipfix/pkg/entities"
	goexporter "github.com/vmware/go-ipfix/pkg/exporter"
	"github.com/vmware/go-ipfix/pkg/registry"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// drainUDP listens on 127.0.0.1 and reads every datagram until the test
// ends, so senders never see port unreachable.
func drainUDP(b *testing.B) *net.UDPConn {
	b.Helper()
	l, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		buf := make([]byte, 65535)
		for {
			if _, err := l.Read(buf); err != nil {
				return
			}
		}
	}()
	b.Cleanup(func() { l.Close() })
	return l
}

// goIPFIXTemplate is one default template as go-ipfix elements, made once
// and refilled per record: the cheapest way go-ipfix can be driven.
type goIPFIXTemplate struct {
	fields []templates.Field
	elems  []entities.InfoElementWithValue
	record entities.Record
	// src and dst hold the addresses the elements point to: the key's
	// netip.Addr is no byte slice, and a slice of a local would escape.
	src, dst [16]byte
}

func newGoIPFIXTemplate(b *testing.B, t *templates.Template) (*goIPFIXTemplate, entities.Record) {
	g := &goIPFIXTemplate{fields: t.Fields}
	var tmplElems []entities.InfoElementWithValue
	for _, f := range t.Fields {
		ie, err := registry.GetInfoElement(f.Name, registry.IANAEnterpriseID)
		if err != nil {
			b.Fatal(err)
		}
		var v, tv entities.InfoElementWithValue
		switch ie.DataType {
		case entities.Ipv4Address, entities.Ipv6Address:
			v, tv = entities.NewIPAddressInfoElement(ie, nil), entities.NewIPAddressInfoElement(ie, nil)
		case entities.Unsigned8:
			v, tv = entities.NewUnsigned8InfoElement(ie, 0), entities.NewUnsigned8InfoElement(ie, 0)
		case entities.Unsigned16:
			v, tv = entities.NewUnsigned16InfoElement(ie, 0), entities.NewUnsigned16InfoElement(ie, 0)
		case entities.Unsigned32:
			v, tv = entities.NewUnsigned32InfoElement(ie, 0), entities.NewUnsigned32InfoElement(ie, 0)
		case entities.Unsigned64:
			v, tv = entities.NewUnsigned64InfoElement(ie, 0), entities.NewUnsigned64InfoElement(ie, 0)
		case entities.DateTimeMilliseconds:
			v, tv = entities.NewDateTimeMillisecondsInfoElement(ie, 0), entities.NewDateTimeMillisecondsInfoElement(ie, 0)
		default:
			b.Fatalf("%s: type %d", f.Name, ie.DataType)
		}
		g.elems = append(g.elems, v)
		tmplElems = append(tmplElems, tv)
	}
	g.record = entities.NewDataRecordFromElements(t.ID, g.elems)
	tmpl := entities.NewTemplateRecordFromElements(t.ID, tmplElems)
	if err := tmpl.PrepareRecord(); err != nil {
		b.Fatal(err)
	}
	return g, tmpl
}

// fill sets the elements to f's values: what a go-ipfix user writes.
func (g *goIPFIXTemplate) fill(f *Flow) {
	k := &f.Key
	g.src, g.dst = k.Src.As16(), k.Dst.As16()
	for i, fld := range g.fields {
		e := g.elems[i]
		switch fld.Value {
		case templates.SrcIPv4:
			e.SetIPAddressValue(net.IP(g.src[12:16]))
		case templates.DstIPv4:
			e.SetIPAddressValue(net.IP(g.dst[12:16]))
		case templates.SrcIPv6:
			e.SetIPAddressValue(net.IP(g.src[:]))
		case templates.DstIPv6:
			e.SetIPAddressValue(net.IP(g.dst[:]))
		case templates.SrcPort:
			e.SetUnsigned16Value(k.SrcPort)
		case templates.DstPort:
			e.SetUnsigned16Value(k.DstPort)
		case templates.Protocol:
			e.SetUnsigned8Value(k.Proto)
		case templates.TCPFlags:
			e.SetUnsigned16Value(f.TCPFlags)
		case templates.Octets:
			e.SetUnsigned64Value(f.Bytes)
		case templates.Packets:
			e.SetUnsigned64Value(f.Packets)
		case templates.StartMillis:
			e.SetUnsigned64Value(epochMillis(f.Start))
		case templates.EndMillis:
			e.SetUnsigned64Value(epochMillis(f.End))
		case templates.Direction:
			e.SetUnsigned8Value(k.Direction)
		case templates.Interface:
			e.SetUnsigned32Value(k.IfIndex)
		case templates.EndReason:
			e.SetUnsigned8Value(uint8(f.EndReason))
		case templates.ICMPv4TypeCode:
			e.SetUnsigned16Value(icmpTypeCode(k, protoICMP))
		case templates.ICMPv6TypeCode:
			e.SetUnsigned16Value(icmpTypeCode(k, protoICMPv6))
		case templates.VLAN:
			e.SetUnsigned16Value(k.VLAN)
		}
	}
}

// discardConn is a net.Conn whose writes succeed and go nowhere.
type discardConn struct{ net.Conn }

func (discardConn) Write(b []byte) (int, error) { return len(b), nil }
func (discardConn) Close() error                { return nil }

// discardGoIPFIX swaps the UDP socket of go-ipfix's exporting process for
// discardConn. go-ipfix takes no writer, only a collector address, so the
// unexported field is set through reflect; the socket it replaces is
// closed.
func discardGoIPFIX(b *testing.B, ep *goexporter.ExportingProcess) {
	f := reflect.ValueOf(ep).Elem().FieldByName("connToCollector")
	f = reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem()
	if c, ok := f.Interface().(net.Conn); ok {
		c.Close()
	}
	f.Set(reflect.ValueOf(net.Conn(discardConn{})))
}

// cpuTime is the process's user+system CPU time. On a shared machine wall
// time swings with the neighbours' load; records per CPU second does not,
// so the benchmark reports both.
func cpuTime(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportRates(b *testing.B, records int, cpu0 time.Duration) {
	b.ReportMetric(float64(records)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(float64(records)/(cpuTime(b)-cpu0).Seconds(), "records/cpu-s")
}

// BenchmarkEncodeHostflowVsGoIPFIX encodes the same batches of 256 flows of
// the default templates (templates.NumTemplates of them) with hostflow's IPFIX encoder and
// with go-ipfix v0.17.0's BufferedIPFIXExporter, into 1400-byte messages
// sent either to a UDP socket on 127.0.0.1 that a goroutine drains, or to
// a writer that discards them: the same sink for both. Over UDP the
// system calls dominate; hostflow sends its messages in batches (one
// sendmmsg per export, flushed after it as a Collector does, runs of
// equal-length messages in one UDP GSO send each, the messages exactly
// filled to one length: each export one GSO send), go-ipfix one write per
// message; udp-pad is udp with PadForGSO; udp-mmsg is hostflow without
// GSO (so without exact fill), udp-write with one write per message like
// go-ipfix. discard compares the encoders.
//
// go-ipfix is driven the cheapest way it can be: its element and record
// objects are made once per template and refilled per flow.
func BenchmarkEncodeHostflowVsGoIPFIX(b *testing.B) {
	flows := randomFlows(256, 2)
	for _, sink := range []string{"udp", "udp-pad", "udp-mmsg", "udp-write", "discard"} {
		b.Run(sink+"/hostflow", func(b *testing.B) {
			var w MessageWriter = MessageWriterFunc(func([]byte) error { return nil })
			var flush func() error
			if sink != "discard" {
				// udp: batched as the daemon sends (sendmmsg, GSO
				// for runs of equal length), flushed after each
				// export as a Collector does when its queue is
				// empty. udp-mmsg: the same without GSO. udp-write:
				// one write per message.
				cfg := UDPConfig{Batch: DefaultUDPBatch}
				switch sink {
				case "udp-mmsg":
					cfg.NoGSO = true
				case "udp-write":
					cfg.Batch = 0
				}
				l := drainUDP(b)
				cfg.Address = l.LocalAddr().String()
				u, err := NewUDPWriter(cfg)
				if err != nil {
					b.Fatal(err)
				}
				defer u.Close()
				w, flush = u, u.Flush
			}
			e, err := NewIPFIX(IPFIXConfig{Writer: w, MaxMessageSize: 1400, PadForGSO: sink == "udp-pad"})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			cpu0 := cpuTime(b)
			for b.Loop() {
				if err := e.Export(flows); err != nil {
					b.Fatal(err)
				}
				if flush != nil {
					if err := flush(); err != nil {
						b.Fatal(err)
					}
				}
			}
			reportRates(b, b.N*len(flows), cpu0)
		})
		if sink == "udp-pad" || sink == "udp-mmsg" || sink == "udp-write" {
			continue
		}
		b.Run(sink+"/go-ipfix", func(b *testing.B) {
			registry.LoadRegistry()
			// go-ipfix logs through klog; keep benchmark output clean.
			klog.LogToStderr(false)
			klog.SetOutput(io.Discard)
			l := drainUDP(b)
			ep, err := goexporter.InitExportingProcess(goexporter.ExporterInput{
				CollectorAddress: l.LocalAddr().String(), CollectorProtocol: "udp", MaxMsgSize: 1400,
			})
			if err != nil {
				b.Fatal(err)
			}
			defer ep.CloseConnToCollector()
			if sink == "discard" {
				discardGoIPFIX(b, ep)
			}
			be := goexporter.NewBufferedIPFIXExporter(ep)
			set := templates.DefaultSet(templates.IPFIX)
			var gts [templates.NumTemplates]*goIPFIXTemplate
			for i := range set.Templates() {
				g, tmpl := newGoIPFIXTemplate(b, &set.Templates()[i])
				if err := be.AddRecord(tmpl); err != nil {
					b.Fatal(err)
				}
				gts[i] = g
			}
			b.ReportAllocs()
			cpu0 := cpuTime(b)
			for b.Loop() {
				for i := range flows {
					f := &flows[i]
					g := gts[f.Key.variant()]
					g.fill(f)
					if err := be.AddRecord(g.record); err != nil {
						b.Fatal(err)
					}
				}
				if err := be.Flush(); err != nil {
					b.Fatal(err)
				}
			}
			reportRates(b, b.N*len(flows), cpu0)
		})
	}
}
