package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/hostflow/hostflow/internal/config"
	"github.com/spf13/pflag"
)

// writeMan writes the man page hostflow(8) in roff (man macros). Its
// synopsis, subcommands and options come from the command table and the
// configuration's option table, so that it cannot drift from them; `make
// package` runs `hostflow man` to build the page it installs.
func writeMan(w io.Writer) error {
	m := &roff{}
	m.macro("TH", "HOSTFLOW", "8", "", "hostflow "+version, "System Administration")
	m.macro("ad", "l")

	m.section("NAME")
	m.line("hostflow \\- eBPF flow probe exporting IPFIX and NetFlow v9")

	m.section("SYNOPSIS")
	m.synopsis("", "[flags]")
	for _, c := range visibleCommands() {
		m.synopsis(c.name, c.args)
	}

	m.section("DESCRIPTION")
	m.text(description)
	m.para()
	m.text(`It runs as a systemd service (Type=notify) with only the capabilities
CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON, reloads its configuration on SIGHUP
without losing a count, and serves Prometheus metrics.`)

	m.section("SUBCOMMANDS")
	daemon := daemonFlags()
	for _, c := range visibleCommands() {
		m.macro("TP")
		m.line(bold(c.name) + args(c.args))
		m.text(c.summary + ".")
		if c.flags == nil {
			continue
		}
		own := c.flags()
		var shared bool
		own.VisitAll(func(f *pflag.Flag) {
			if daemon.Lookup(f.Name) != nil {
				shared = true
				return
			}
			m.macro("RS")
			m.macro("TP")
			m.line(flagTag(f.Name, f.Value.Type()))
			m.text(f.Usage)
			m.macro("RE")
		})
		if shared {
			m.text("It takes the flags of the daemon (OPTIONS).")
		}
	}

	m.section("OPTIONS")
	m.text(`Each option is a flag, a key of the configuration file and an environment
variable. A flag beats the environment, which beats the file, which beats the
default. Nested keys are written with a dot here (tls.ca_file is ca_file under
tls: in the file). Flags also take a single dash (-mode router). A list is
comma-separated, or given as a YAML list in the file; a duration is written
like 500ms, 15s or 1m30s.`)
	m.macro("TP")
	m.line(flagTag("config", "FILE"))
	m.text("The configuration file (YAML). Default " + config.DefaultPath +
		", which may be missing; a file named by --config or " + config.ConfigEnv + " must exist.")
	m.indented()
	m.line("Environment: " + bold(config.ConfigEnv) + ".")
	for _, o := range config.Options() {
		m.macro("TP")
		m.line(flagTag(o.Flag, o.Type))
		m.text(o.Usage + ".")
		m.indented()
		m.line("Key: " + bold(o.Key) + ". Environment: " + bold(o.Env) + ".")
		if o.Default != "" {
			m.line("Default: " + esc(o.Default) + ".")
		}
		if o.Values != nil {
			m.line("Values: " + strings.Join(mapStrings(o.Values, bold), ", ") + ".")
		}
		if o.Repeatable {
			m.line("The flag may be repeated.")
		}
	}

	m.section("ENVIRONMENT")
	m.text(`Each key above has its variable, named HOSTFLOW_ and the key in capitals, a
dot made an underscore. A HOSTFLOW_ variable that is no key is an error (the
variables Kubernetes sets for a Service named hostflow excepted).`)
	m.macro("TP")
	m.line(bold("NOTIFY_SOCKET"))
	m.text("Set by systemd: hostflow reports READY=1, RELOADING=1 and STOPPING=1 there.")
	m.macro("TP")
	m.line(bold("WATCHDOG_USEC") + ", " + bold("WATCHDOG_PID"))
	m.text(`Set by systemd from WatchdogSec=: the main loop sends WATCHDOG=1 at most
every half interval, and only while it makes progress, so that a stuck loop
gets the service restarted.`)
	m.macro("TP")
	m.line(bold("GOGC") + ", " + bold("GOMEMLIMIT"))
	m.text("The Go garbage collector's settings; without GOGC hostflow uses 50.")

	m.section("FILES")
	for _, f := range [][2]string{
		{config.DefaultPath, "the configuration; every key documented"},
		{"/usr/lib/systemd/system/hostflow.service", "the systemd unit"},
		{"/run/hostflow", "state_dir: the clsact qdiscs hostflow created, removed by the next start after a crash"},
		{"/usr/lib/sysusers.d/hostflow.conf", "the hostflow system user"},
	} {
		m.macro("TP")
		m.line(italic(f[0]))
		m.text(f[1] + ".")
	}

	m.section("SIGNALS")
	for _, s := range [][2]string{
		{"SIGHUP", "Reload the configuration file, the environment and the flags; keys marked (restart to change) keep their value, and no flow is lost."},
		{"SIGTERM, SIGINT", "Detach from the interfaces, export every cached flow (flowEndReason 4, forced end), flush the collectors and exit 0."},
	} {
		m.macro("TP")
		m.line(bold(s[0]))
		m.text(s[1])
	}

	m.section("EXIT STATUS")
	for _, s := range [][2]string{
		{"0", "Success, or a clean stop on SIGTERM."},
		{"1", "A runtime error: a missing capability, the eBPF programs fail to load, a port is taken."},
		{"2", "A configuration error (bad flag, key or value): nothing was started. The unit does not restart on it."},
	} {
		m.macro("TP")
		m.line(bold(s[0]))
		m.text(s[1])
	}

	m.section("EXAMPLES")
	for _, e := range [][2]string{
		{"Print each finished flow of eth0 as a JSON line:", "hostflow --interfaces eth0"},
		{"Export IPFIX over UDP to nfcapd and NetFlow v9 to a second collector:", "hostflow --collector ipfix+udp://192.0.2.10:4739 --collector netflow9+udp://192.0.2.11:2055"},
		{"Count forwarded traffic once, like a router's NetFlow:", "hostflow --mode router --collector ipfix+udp://192.0.2.10:4739"},
		{"Validate the installed configuration and print it:", "hostflow check-config"},
		{"Apply a changed configuration without losing a count:", "systemctl reload hostflow"},
		{"Enable completion in the current bash:", "source <(hostflow completion bash)"},
	} {
		m.para()
		m.text(e[0])
		m.macro("RS")
		m.macro("EX")
		m.line(esc(e[1]))
		m.macro("EE")
		m.macro("RE")
	}

	m.section("SEE ALSO")
	m.line(strings.Join(mapStrings([]string{"nfcapd(1)", "nfdump(1)", "nfacctd(8)", "softflowd(8)",
		"systemctl(1)", "systemd.service(5)", "journalctl(1)", "tc(8)"}, manRef), ",\n"))
	m.para()
	m.text("The README and docs/architecture.md of https://github.com/hostflow/hostflow.")

	_, err := io.WriteString(w, m.b.String())
	if err != nil {
		return fmt.Errorf("write man page: %w", err)
	}
	return nil
}

func visibleCommands() []command {
	var out []command
	for _, c := range subcommands() {
		if !c.hidden {
			out = append(out, c)
		}
	}
	return out
}

// roff builds a man(7) page. Text goes through esc, so that no input can
// start a request or an escape.
type roff struct{ b strings.Builder }

func (m *roff) macro(name string, args ...string) {
	m.b.WriteString("." + name)
	for _, a := range args {
		a = strings.ReplaceAll(esc(a), `"`, `\(dq`)
		if a == "" || strings.Contains(a, " ") {
			a = `"` + a + `"`
		}
		m.b.WriteString(" " + a)
	}
	m.b.WriteString("\n")
}

// section starts a section. Hyphenation is switched off in each, as the
// man macros may switch it on again: flags and keys stay whole.
func (m *roff) section(name string) {
	m.macro("SH", name)
	m.macro("nh")
}

func (m *roff) para() { m.macro("PP") }

// indented starts a paragraph at the indent of the .TP text above.
func (m *roff) indented() { m.macro("IP") }

// line writes already escaped roff, one output line.
func (m *roff) line(s string) { m.b.WriteString(s + "\n") }

// text writes plain text, filled.
func (m *roff) text(s string) {
	for _, l := range strings.Split(s, "\n") {
		m.line(esc(l))
	}
}

func (m *roff) synopsis(name, a string) {
	m.macro("br")
	s := bold("hostflow")
	if name != "" {
		s += " " + bold(name)
	}
	m.line(s + args(a))
}

// esc escapes text for roff: backslashes, dashes (so that flags are
// copied as typed) and a leading dot or quote, which would be a request.
func esc(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

func bold(s string) string   { return `\fB` + esc(s) + `\fR` }
func italic(s string) string { return `\fI` + esc(s) + `\fR` }

func manRef(s string) string {
	name, sec, _ := strings.Cut(s, "(")
	return bold(name) + "(" + sec
}

// args renders a synopsis' arguments: words in capitals or brackets are
// placeholders.
func args(a string) string {
	if a == "" {
		return ""
	}
	return " " + italic(a)
}

// flagTag is "--name type" for a .TP tag; bool flags take no value.
func flagTag(name, typ string) string {
	s := bold("--" + name)
	switch typ {
	case "bool":
		return s
	case "stringArray", "list":
		typ = "list"
	}
	return s + " " + italic(typ)
}

func mapStrings(in []string, f func(string) string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = f(s)
	}
	return out
}
