package exporter

import (
	"testing"

	"github.com/hostflow/hostflow/templates"
)

// TestTemplateBlockSize pins the sizes DefaultTemplateRefreshMessages's
// doc gives for the default templates, alone and with the options
// templates: change both together.
func TestTemplateBlockSize(t *testing.T) {
	for _, tc := range []struct {
		p                   templates.ExportProtocol
		w                   wireFormat
		templates, withOpts int
	}{
		{templates.IPFIX, ipfixWire{}, 500, 586},
		{templates.NetFlowV9, v9Wire{}, 468, 544},
	} {
		set := templates.DefaultSet(tc.p)
		b, n, err := encodeTemplateBlock(tc.w, set.Templates(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != tc.templates || n != templates.NumTemplates {
			t.Errorf("%v: %d templates in %d bytes, want %d in %d", tc.p, n, len(b), templates.NumTemplates, tc.templates)
		}
		o, err := newOptions(OptionsConfig{}, tc.p)
		if err != nil {
			t.Fatal(err)
		}
		if b, _, err = encodeTemplateBlock(tc.w, set.Templates(), o.templates); err != nil || len(b) != tc.withOpts {
			t.Errorf("%v: with the options templates %d bytes (%v), want %d", tc.p, len(b), err, tc.withOpts)
		}
	}
}
