package exporter

import (
	"bytes"
	"testing"

	"github.com/hostflow/hostflow/bpf"
	"github.com/hostflow/hostflow/templates"
	"github.com/netsampler/goflow2/v2/decoders/netflow"
	protoproducer "github.com/netsampler/goflow2/v2/producer/proto"
)

// goflow2Rates runs msgs through goflow2's producer, as its netflow://
// listener does, and returns the SamplingRate of every flow it produced.
func goflow2Rates(t *testing.T, msgs [][]byte) []uint64 {
	t.Helper()
	ts := netflow.CreateTemplateSystem()
	rates := protoproducer.CreateSamplingSystem()
	var out []uint64
	for i, msg := range msgs {
		var v9 netflow.NFv9Packet
		var ipfix netflow.IPFIXPacket
		if err := netflow.DecodeMessageVersion(bytes.NewBuffer(msg), ts, &v9, &ipfix); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		var err error
		var produced []interface {
			GetFlowMessage() *protoproducer.ProtoProducerMessage
		}
		if msg[1] == 9 {
			ms, e := protoproducer.ProcessMessageNetFlowV9Config(&v9, rates, nil)
			err = e
			for _, m := range ms {
				produced = append(produced, m.(*protoproducer.ProtoProducerMessage))
			}
		} else {
			ms, e := protoproducer.ProcessMessageIPFIXConfig(&ipfix, rates, nil)
			err = e
			for _, m := range ms {
				produced = append(produced, m.(*protoproducer.ProtoProducerMessage))
			}
		}
		if err != nil {
			t.Fatalf("message %d: goflow2 producer: %v", i, err)
		}
		for _, m := range produced {
			out = append(out, m.GetFlowMessage().SamplingRate)
		}
	}
	return out
}

// TestGoflow2SamplingRate: goflow2 reads the sampling rate of 1-in-10
// sampling as 10, for random and count-based sampling, IPFIX and v9.
func TestGoflow2SamplingRate(t *testing.T) {
	for _, proto := range []templates.ExportProtocol{templates.IPFIX, templates.NetFlowV9} {
		for _, alg := range []struct {
			name string
			a    bpf.SamplingAlgorithm
		}{{"random", bpf.SamplingRandom}, {"count", bpf.SamplingCount}} {
			t.Run(proto.String()+"/"+alg.name, func(t *testing.T) {
				w := &captureWriter{}
				opts := testOptions()
				opts.SamplingInterval, opts.SamplingAlgorithm = 10, alg.a
				e, _ := newOptionsExporter(t, proto, w, 0, opts)
				if err := e.Export(sampleFlows()); err != nil {
					t.Fatal(err)
				}
				rates := goflow2Rates(t, w.msgs)
				if len(rates) != len(sampleFlows()) {
					t.Fatalf("goflow2 produced %d flows, want %d", len(rates), len(sampleFlows()))
				}
				for i, r := range rates {
					if r != 10 {
						t.Errorf("flow %d: goflow2 sampling rate %d, want 10", i, r)
					}
				}
			})
		}
	}
}
