package main

import (
	"fmt"
	"io"

	"github.com/hostflow/hostflow/ifaces"
	"github.com/hostflow/hostflow/internal/config"
)

// checkConfig prints the effective configuration, then, as YAML comments
// (the output still loads back), the interfaces of this network namespace
// and whether the daemon would capture on each now, on which hooks and
// why.
func checkConfig(w io.Writer, cfg *config.Config) error {
	if err := cfg.WriteYAML(w); err != nil {
		return err
	}
	fmt.Fprintf(w, "#\n# interfaces captured now (%s mode, interfaces: %s):\n", cfg.Mode, cfg.Rules())
	ds, err := ifaces.Plan(cfg.Rules(), cfg.Ingress(), cfg.Egress(), cfg.Capture == config.CaptureTC)
	if err != nil {
		_, err = fmt.Fprintf(w, "# %v\n", err)
		return err
	}
	return ifaces.WriteDecisions(w, "# ", ds)
}
