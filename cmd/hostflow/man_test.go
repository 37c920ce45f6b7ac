package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"github.com/hostflow/hostflow/internal/config"
	"github.com/hostflow/hostflow/internal/testutil"
	"github.com/spf13/pflag"
)

func manPage(t *testing.T) string {
	t.Helper()
	out, _, err := runCLI(t, "man")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestManCoversEverything: the man page names every flag, key and
// environment variable of the option table, and every subcommand of the
// command table, so that it cannot drift from them.
func TestManCoversEverything(t *testing.T) {
	page := manPage(t)
	want := []string{esc("--config"), esc(config.ConfigEnv)}
	daemonFlags().VisitAll(func(f *pflag.Flag) { want = append(want, bold("--"+f.Name)) })
	for _, o := range config.Options() {
		want = append(want, bold(o.Key), bold(o.Env))
		for _, v := range o.Values {
			want = append(want, bold(v))
		}
	}
	for _, c := range subcommands() {
		if c.hidden {
			if strings.Contains(page, bold(c.name)) {
				t.Errorf("hidden subcommand %s in the man page", c.name)
			}
			continue
		}
		want = append(want, bold("hostflow")+" "+bold(c.name), esc(c.summary))
		if c.flags != nil {
			c.flags().VisitAll(func(f *pflag.Flag) { want = append(want, bold("--"+f.Name)) })
		}
	}
	for _, sec := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "SUBCOMMANDS", "OPTIONS", "ENVIRONMENT",
		"FILES", "SIGNALS", `"EXIT STATUS"`, "EXAMPLES", `"SEE ALSO"`} {
		want = append(want, ".SH "+sec+"\n")
	}
	for _, w := range want {
		if !strings.Contains(page, w) {
			t.Errorf("man page lacks %q", w)
		}
	}
	if !strings.HasPrefix(page, `.TH HOSTFLOW 8 "" "hostflow `+version+`"`) {
		t.Errorf("man page header: %q", strings.SplitN(page, "\n", 2)[0])
	}
}

// TestManRenders formats the page with groff, warnings on: no request or
// escape it does not know, nothing it had to guess.
func TestManRenders(t *testing.T) {
	groff := testutil.RequireTool(t, "groff")
	cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-rLL=200n")
	cmd.Stdin = strings.NewReader(manPage(t))
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil || errOut.Len() > 0 {
		t.Fatalf("groff: %v\n%s", err, errOut.String())
	}
	// The rendered text (no bold or underline) shows flags as typed.
	text := regexpStrip(out.String())
	for _, w := range []string{"--template-refresh-messages int", "HOSTFLOW_TLS_CA_FILE", "hostflow completion bash|zsh|fish"} {
		if !strings.Contains(text, w) {
			t.Errorf("rendered page lacks %q", w)
		}
	}
}

func TestEsc(t *testing.T) {
	for in, want := range map[string]string{
		"--mode":     `\-\-mode`,
		`a\b`:        `a\eb`,
		".TH x":      `\&.TH x`,
		"'br":        `\&'br`,
		"plain text": "plain text",
	} {
		if got := esc(in); got != want {
			t.Errorf("esc(%q) = %q, want %q", in, got, want)
		}
	}
}

// regexpStrip removes the SGR sequences grotty writes for bold and
// italics, and its overstrikes.
func regexpStrip(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == 0x1b && i+1 < len(s) && s[i+1] == '[':
			for i < len(s) && s[i] != 'm' {
				i++
			}
		case s[i] == '\b' && b.Len() > 0:
			str := b.String()
			b.Reset()
			b.WriteString(str[:len(str)-1])
		default:
			b.WriteByte(s[i])
		}
	}
	return strings.ReplaceAll(b.String(), "\u2010", "-")
}
