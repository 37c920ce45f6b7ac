package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/hostflow/hostflow/internal/config"
	"github.com/hostflow/hostflow/internal/control"
	"github.com/spf13/pflag"
)

const ctlUsage = `Usage:
  hostflow flows [--json] [--sort bytes|packets] [--top N]   list the flows in the daemon's cache
  hostflow stats [--json]                                    print the daemon's counters
  hostflow expire                                            export every cached flow now (forced end)

They ask the running daemon over its control socket: --control-socket, else
control_socket of the configuration file (--config), else ` + defaultControlSocket + `.
The socket is mode 0660: run them as root or as a member of group hostflow.

Flags:
`

const defaultControlSocket = "/run/hostflow/control.sock"

// ctlOptions are the client's flags.
type ctlOptions struct {
	socket string
	json   bool
	sort   string
	top    int
}

// ctlFlags is the flag set of one control subcommand, filling o and
// configPath; the command table uses it for the man page and completions.
func ctlFlags(command string, o *ctlOptions, configPath *string, stderr io.Writer) *pflag.FlagSet {
	fset := pflag.NewFlagSet("hostflow "+command, pflag.ContinueOnError)
	fset.SetOutput(stderr)
	fset.SortFlags = false
	fset.Usage = func() {
		fmt.Fprint(stderr, ctlUsage)
		fset.PrintDefaults()
	}
	fset.StringVar(&o.socket, "control-socket", "", "the daemon's control socket (default: control_socket of --config)")
	fset.StringVar(configPath, "config", config.DefaultPath, "configuration file naming the control socket")
	_ = fset.SetAnnotation("control-socket", config.AnnotationFile, []string{"true"})
	_ = fset.SetAnnotation("config", config.AnnotationFile, []string{"true"})
	if command != "expire" {
		fset.BoolVar(&o.json, "json", false, "one JSON object per line, field names as hostflow's JSON lines")
	}
	if command == "flows" {
		fset.StringVar(&o.sort, "sort", "bytes", "order, largest first: bytes or packets")
		_ = fset.SetAnnotation("sort", config.AnnotationValues, []string{"bytes", "packets"})
		fset.IntVar(&o.top, "top", 0, "list only the first N flows (0: all)")
	}
	return fset
}

// runCtl runs one control subcommand.
func runCtl(ctx context.Context, command string, args []string, stdout, stderr io.Writer) error {
	var o ctlOptions
	configPath := new(string)
	fset := ctlFlags(command, &o, configPath, stderr)
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil
		}
		return &config.Error{Err: err}
	}
	if fset.NArg() > 0 {
		return &config.Error{Err: fmt.Errorf("unexpected argument %q", fset.Arg(0))}
	}
	if o.sort != "" && o.sort != "bytes" && o.sort != "packets" {
		return &config.Error{Err: fmt.Errorf("--sort %q: want bytes or packets", o.sort)}
	}
	if o.top < 0 {
		return &config.Error{Err: fmt.Errorf("--top %d: want 0 or more", o.top)}
	}
	if o.socket == "" {
		var err error
		if o.socket, err = socketFromConfig(*configPath, fset.Changed("config")); err != nil {
			return err
		}
	}
	c := &control.Client{Path: o.socket}
	switch command {
	case "flows":
		flows, err := c.Flows(ctx)
		if err != nil {
			return err
		}
		return writeFlows(stdout, flows, o)
	case "stats":
		st, err := c.Stats(ctx)
		if err != nil {
			return err
		}
		if o.json {
			return json.NewEncoder(stdout).Encode(st)
		}
		return writeStats(stdout, st)
	default:
		n, err := c.Expire(ctx)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "exported %d flows (flowEndReason forced end)\n", n)
		return err
	}
}

// socketFromConfig returns control_socket of the configuration (the file,
// then the environment). A configuration that cannot be read (the file is
// the daemon's, not the operator's) gives the default path, unless it was
// named with --config.
func socketFromConfig(path string, explicit bool) (string, error) {
	cfg, err := config.Load([]string{"--config", path}, "", io.Discard)
	if err != nil {
		if explicit {
			return "", err
		}
		return defaultControlSocket, nil
	}
	if cfg.ControlSocket == "" {
		return "", fmt.Errorf("control_socket is empty in %s: the daemon has no control socket", cmp.Or(cfg.File, "the configuration"))
	}
	return cfg.ControlSocket, nil
}

// sortFlows orders flows largest first by o.sort (bytes by default), then
// by the other count and the key text, so that equal flows list in a
// stable order, and keeps the first o.top.
func sortFlows(flows []control.Flow, o ctlOptions) []control.Flow {
	by := func(f *control.Flow) (uint64, uint64) { return f.Bytes, f.Packets }
	if o.sort == "packets" {
		by = func(f *control.Flow) (uint64, uint64) { return f.Packets, f.Bytes }
	}
	slices.SortStableFunc(flows, func(a, b control.Flow) int {
		a1, a2 := by(&a)
		b1, b2 := by(&b)
		if c := cmp.Compare(b1, a1); c != 0 {
			return c
		}
		if c := cmp.Compare(b2, a2); c != 0 {
			return c
		}
		return strings.Compare(flowKey(&a), flowKey(&b))
	})
	if o.top > 0 && len(flows) > o.top {
		flows = flows[:o.top]
	}
	return flows
}

func flowKey(f *control.Flow) string {
	return fmt.Sprint(f.Src, f.SrcPort, f.Dst, f.DstPort, f.Proto, f.IfIndex, f.Direction, f.VLAN, f.ICMPType, f.ICMPCode, f.TOS)
}

// writeFlows writes the flows as a table, or as JSON lines.
func writeFlows(w io.Writer, flows []control.Flow, o ctlOptions) error {
	flows = sortFlows(flows, o)
	if o.json {
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		for i := range flows {
			if err := enc.Encode(&flows[i]); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SRC\tDST\tPROTO\tINTERFACE\tDIR\tPACKETS\tBYTES\tFIRST\tLAST")
	for i := range flows {
		f := &flows[i]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", endpoint(f.Src, f.SrcPort, f.Proto), endpoint(f.Dst, f.DstPort, f.Proto),
			protoName(f), ifaceName(f), f.Direction, f.Packets, f.Bytes, f.Start, f.End)
	}
	return tw.Flush()
}

// endpoint is addr:port for protocols with ports, the address alone
// otherwise.
func endpoint(addr string, port uint16, proto uint8) string {
	switch proto {
	case 6, 17, 132, 136: // TCP, UDP, SCTP, UDP-Lite
		if a, err := netip.ParseAddr(addr); err == nil {
			return netip.AddrPortFrom(a, port).String()
		}
	}
	return addr
}

// protoName is the protocol's name, with ICMP type/code and the VLAN.
func protoName(f *control.Flow) string {
	var s string
	switch f.Proto {
	case 1:
		s = fmt.Sprintf("icmp %d/%d", f.ICMPType, f.ICMPCode)
	case 58:
		s = fmt.Sprintf("icmpv6 %d/%d", f.ICMPType, f.ICMPCode)
	case 6:
		s = "tcp"
	case 17:
		s = "udp"
	case 132:
		s = "sctp"
	default:
		s = strconv.Itoa(int(f.Proto))
	}
	if f.VLAN != 0 {
		s += fmt.Sprintf(" vlan %d", f.VLAN)
	}
	return s
}

// ifaceName is name(index), or the index alone if the name is unknown.
func ifaceName(f *control.Flow) string {
	if f.IfName == "" {
		return strconv.FormatUint(uint64(f.IfIndex), 10)
	}
	return fmt.Sprintf("%s(%d)", f.IfName, f.IfIndex)
}

// endReasons are flows_exported's keys in flowEndReason order.
var endReasons = []string{"idle", "active", "end", "forced", "lack-of-resources"}

// writeStats writes the counters, one per line.
func writeStats(w io.Writer, st control.Stats) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	p := func(name string, v any) { fmt.Fprintf(tw, "%s\t%v\n", name, v) }
	p("packets seen", st.PacketsSeen)
	p("bytes seen", st.BytesSeen)
	p("packets exported", st.Packets)
	p("bytes exported", st.Bytes)
	p("flows active", st.FlowsActive)
	for _, r := range endReasons {
		p("flows exported "+r, st.FlowsExported[r])
	}
	p("direct records", st.DirectRecords)
	p("drain errors", st.DrainErrors)
	p("export errors", st.ExportErrors)
	if st.KernelError != "" {
		p("kernel counters", "unreadable: "+st.KernelError)
	} else {
		k := st.Kernel
		p("kernel map full (diverted to ring buffer)", k.MapFull)
		p("kernel ring buffer full (lost)", k.RingBufFull)
		p("kernel not IP", k.NotIP)
		p("kernel malformed", k.Malformed)
		p("kernel no map", k.NoMap)
		p("kernel sampled out", k.SampledOut)
		p("kernel fate malformed (router mode)", k.FateMalformed)
	}
	if len(st.Collectors) == 0 {
		p("collectors", "none (JSON lines on stdout)")
	}
	for _, c := range st.Collectors {
		fmt.Fprintf(tw, "collector %s\t%s\n", c.URL, c.State)
		cp := func(name string, v any) { fmt.Fprintf(tw, "  %s\t%v\n", name, v) }
		cp("queued records", c.Queued)
		cp("messages", c.Messages)
		cp("records", c.Records)
		cp("send errors", c.SendErrors)
		cp("records lost", c.RecordsLost)
		cp("dropped records (queue full)", c.Dropped)
		cp("unreachable", c.Unreachable)
		cp("reconnects", c.Reconnects)
	}
	return tw.Flush()
}
