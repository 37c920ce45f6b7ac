package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/hostflow/hostflow/internal/config"
	"github.com/hostflow/hostflow/internal/testutil"
)

func completionScript(t *testing.T, shell string) string {
	t.Helper()
	out, _, err := runCLI(t, "completion", shell)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "hostflow."+shell)
	if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// visibleNames are the subcommands completions must offer.
func visibleNames() []string {
	var out []string
	for _, c := range visibleCommands() {
		out = append(out, c.name)
	}
	return out
}

// allFlags are the daemon's flags as typed.
func allFlags() []string {
	out := []string{"--config", "--help"}
	for _, o := range config.Options() {
		out = append(out, "--"+o.Flag)
	}
	return out
}

// completionCases are command lines (the last word being completed) and
// what must be offered, and what must not.
var completionCases = []struct {
	line        string
	want, not   []string
	wantAllFlag bool
}{
	{line: "hostflow ", want: []string{"check-config", "version", "completion", "help"}, not: []string{"man"}},
	{line: "hostflow --", wantAllFlag: true},
	{line: "hostflow --att", want: []string{"--attach"}, not: []string{"--mode"}},
	{line: "hostflow --attach ", want: []string{"auto", "tcx", "clsact"}, not: []string{"check-config"}},
	{line: "hostflow --interfaces eth0 --mode ", want: []string{"host", "router"}},
	{line: "hostflow check-config --log-level ", want: []string{"debug", "info", "warn", "error"}},
	{line: "hostflow check-config --l", want: []string{"--log-level", "--log-format"}},
	{line: "hostflow completion ", want: []string{"bash", "zsh", "fish"}},
	{line: "hostflow --sampling ", not: []string{"check-config", "--mode"}},
	{line: "hostflow --mode=", want: []string{"host", "router"}},
	{line: "hostflow --mode host ", not: []string{"check-config", "version"}},
	{line: "hostflow check-config --log-format=j", want: []string{"json"}, not: []string{"text"}},
}

func TestBashCompletion(t *testing.T) {
	bash := testutil.RequireTool(t, "bash")
	script := completionScript(t, "bash")
	if out, err := exec.Command(bash, "-c", "source "+script+"; complete -p hostflow").CombinedOutput(); err != nil ||
		strings.TrimSpace(string(out)) != "complete -F _hostflow hostflow" {
		t.Fatalf("complete -p hostflow: %v %q", err, out)
	}
	for _, tc := range completionCases {
		words := bashWords(tc.line)
		argv := append([]string{"-c", `source "$0"; COMP_WORDS=("$@"); COMP_CWORD=$(($#-1)); _hostflow; printf '%s\n' "${COMPREPLY[@]}"`, script}, words...)
		cmd := exec.Command(bash, argv...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%q: %v\n%s", tc.line, err, out)
		}
		checkOffered(t, "bash", tc.line, strings.Fields(string(out)), tc.want, tc.not, tc.wantAllFlag)
	}
}

func TestFishCompletion(t *testing.T) {
	fish := testutil.RequireTool(t, "fish")
	script := completionScript(t, "fish")
	if out, err := exec.Command(fish, "--no-execute", script).CombinedOutput(); err != nil {
		t.Fatalf("fish -n: %v\n%s", err, out)
	}
	for _, tc := range completionCases {
		out, err := exec.Command(fish, "--no-config", "-c", `source $argv[1]; complete -C $argv[2]`, script, tc.line).CombinedOutput()
		if err != nil {
			t.Fatalf("%q: %v\n%s", tc.line, err, out)
		}
		var got []string
		for _, l := range strings.Split(string(out), "\n") {
			if l == "" {
				continue
			}
			w := strings.SplitN(l, "\t", 2)[0] // word<TAB>description
			if _, v, ok := strings.Cut(w, "="); ok && strings.HasPrefix(w, "--") {
				w = v // fish completes --flag=value as one word
			}
			got = append(got, w)
		}
		checkOffered(t, "fish", tc.line, got, tc.want, tc.not, tc.wantAllFlag)
	}
}

func TestZshCompletion(t *testing.T) {
	zsh := testutil.RequireTool(t, "zsh")
	script := completionScript(t, "zsh")
	if out, err := exec.Command(zsh, "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("zsh -n: %v\n%s", err, out)
	}
	out, err := exec.Command(zsh, "-f", "-c", `autoload -U compinit; compinit -u -D; source $1; print -r -- $_comps[hostflow]`, "zsh", script).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "_hostflow" {
		t.Fatalf("zsh compdef: %v %q", err, out)
	}
	// _hostflow's dispatch, with zsh's _describe and _arguments stubbed to
	// print what they were given: which command's specs for which line.
	for _, tc := range []struct {
		words         string
		current       int
		want, notWant string
	}{
		{"hostflow ''", 2, "describe: check-config:validate", "args:"},
		{"hostflow --mode ''", 3, "args: --mode=[", "describe:"},
		{"hostflow check-config --l", 3, "words: check-config --l\n", "describe:"},
		{"hostflow check-config --l", 3, "args: --log-level=[", "1:shell:"},
		{"hostflow completion ''", 3, "args: 1:shell:(bash fish zsh)", "--mode=["},
		{"hostflow version ''", 3, "args: --help[", "--mode=["},
	} {
		prog := `compdef() { : }
_describe() { print -r -- "describe: ${(@P)${@[-1]}}" }
_arguments() { print -r -- "words: $words"; local a; for a in "$@"; do print -r -- "args: $a"; done }
source $1
words=(` + tc.words + `); CURRENT=` + strconv.Itoa(tc.current) + `
_hostflow`
		out, err := exec.Command(zsh, "-f", "-c", prog, "zsh", script).CombinedOutput()
		if err != nil {
			t.Fatalf("zsh %s: %v\n%s", tc.words, err, out)
		}
		if !strings.Contains(string(out), tc.want) || strings.Contains(string(out), tc.notWant) {
			t.Errorf("zsh %s (CURRENT=%d): want %q and no %q in:\n%s", tc.words, tc.current, tc.want, tc.notWant, out)
		}
	}
	body, _ := os.ReadFile(script)
	for _, w := range append(visibleNames(), "'--attach=[", ":attach:(auto tcx clsact)'", "'*--collector=[", ":config:_files'", "'1:shell:(bash fish zsh)'") {
		if !strings.Contains(string(body), w) {
			t.Errorf("zsh completion lacks %q", w)
		}
	}
	for _, f := range allFlags() {
		if !strings.Contains(string(body), "'"+f+"[") && !strings.Contains(string(body), f+"=[") {
			t.Errorf("zsh completion lacks %s", f)
		}
	}
}

func TestShortUsage(t *testing.T) {
	for in, want := range map[string]string{
		"send flow records to this collector, e.g. ipfix+udp://127.0.0.1:4739 (repeatable; none: print JSON lines on stdout)": "send flow records to this collector, e.g. ipfix+udp://127.0.0.1:4739",
		"configuration file (YAML); env HOSTFLOW_CONFIG":                                                                      "configuration file",
		"interfaces to capture on: comma-separated names":                                                                     "interfaces to capture on",
		"debug, info, warn or error":                                                                                          "debug, info, warn or error",
		"flow start/end clock in the kernel: coarse (the last timer tick)":                                                    "flow start/end clock in the kernel",
	} {
		if got := shortUsage(in); got != want {
			t.Errorf("shortUsage(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCompletionBadShell(t *testing.T) {
	for _, args := range [][]string{{"completion"}, {"completion", "tcsh"}, {"completion", "bash", "zsh"}} {
		_, _, err := runCLI(t, args...)
		if _, ok := err.(*config.Error); !ok {
			t.Errorf("%v: %v, want a usage error (exit 2)", args, err)
		}
	}
}

// bashWords splits a line as bash does for COMP_WORDS: at spaces, and
// around an = (in COMP_WORDBREAKS); the last word may be "".
func bashWords(line string) []string {
	var out []string
	for _, w := range strings.Split(line, " ") {
		before, after, ok := strings.Cut(w, "=")
		if !ok {
			out = append(out, w)
			continue
		}
		out = append(out, before, "=")
		if after != "" {
			out = append(out, after)
		}
	}
	return out
}

func checkOffered(t *testing.T, shell, line string, got, want, not []string, all bool) {
	t.Helper()
	if all {
		want = allFlags()
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("%s %q: %q not offered (got %q)", shell, line, w, got)
		}
	}
	for _, n := range not {
		if slices.Contains(got, n) {
			t.Errorf("%s %q: %q offered", shell, line, n)
		}
	}
	if len(want) == 0 && len(not) > 0 && len(got) > 0 {
		t.Errorf("%s %q: offered %q, want nothing", shell, line, got)
	}
}
