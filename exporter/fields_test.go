package exporter

import (
	"strings"
	"testing"

	"github.com/hostflow/hostflow/templates"
)

// TestFlowValuesComplete checks that the codec table has an accessor for
// every flow Value templates can put in a layout.
func TestFlowValuesComplete(t *testing.T) {
	for v := templates.SrcIPv4; v <= templates.TOS; v++ {
		if int(v) >= len(flowValues) || !flowValues[v].defined() {
			t.Errorf("flow value %d has no accessor", v)
		}
	}
	for v := templates.NextHopIPv4; v <= templates.IfName; v++ {
		if int(v) >= len(flowValues) || !flowValues[v].defined() {
			t.Errorf("router value %d has no accessor", v)
		}
	}
	for v := templates.OptInterfaceIndex; v <= templates.OptSystemInitMillis; v++ {
		if int(v) < len(flowValues) && flowValues[v].defined() {
			t.Errorf("options value %d has a flow accessor", v)
		}
	}
}

func TestCompileField(t *testing.T) {
	for _, tt := range []struct {
		f   templates.Field
		err string
	}{
		{templates.Field{ID: 7, Length: 2, Name: "sourceTransportPort", Value: templates.SrcPort}, ""},
		{templates.Field{ID: 7, Length: 1, Name: "sourceTransportPort", Value: templates.SrcPort}, ""},
		{templates.Field{ID: 7, Length: 3, Name: "sourceTransportPort", Value: templates.SrcPort}, "in 3 bytes"},
		{templates.Field{ID: 8, Length: 16, Name: "sourceIPv4Address", Value: templates.SrcIPv4}, "only 4"},
		{templates.Field{ID: 27, Length: 4, Name: "sourceIPv6Address", Value: templates.SrcIPv6}, "only 16"},
		{templates.Field{ID: 82, Length: templates.VariableLength, Name: "interfaceName", Value: templates.IfName}, "variable-length"},
		{templates.Field{ID: 149, Length: 4, Name: "observationDomainId", Value: templates.OptDomain}, "no flow value"},
	} {
		_, err := compileField(tt.f, nil)
		if (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%s in %d bytes: err %v, want %q", tt.f.Name, tt.f.Length, err, tt.err)
		}
	}
}
