package config

import (
	"bufio"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// restartValues holds, for every key that needs a restart, a value other
// than its default, as the file writes it.
var restartValues = map[string]string{
	"kernel_map_size": "4096", "ring_buffer_size": "8192", "sampling_algorithm": "count",
	"attach": "clsact", "direction": "ingress", "state_dir": "/tmp/hostflow-state",
	"control_socket": "/tmp/hostflow.sock", "timestamps": "precise", "mode": "router",
	"conntrack": "off", "capture": "socket", "log.format": "json", "metrics.enabled": "false",
	"metrics.listen": "127.0.0.1:9999", "metrics.pprof": "true",
}

// TestKeepRestartOnly: a reload keeps the running value of exactly the
// keys the option table marks restart, and takes every other key.
func TestKeepRestartOnly(t *testing.T) {
	clearEnv(t)
	cur, err := load(t, "--config", writeFile(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	var file strings.Builder
	file.WriteString("sampling: 4\n")
	sections := map[string][]string{"log": {"  level: debug\n"}}
	for _, key := range RestartKeys() {
		v, ok := restartValues[key]
		if !ok {
			t.Fatalf("restart key %s has no test value in restartValues", key)
		}
		if sec, leaf, nested := strings.Cut(key, "."); nested {
			sections[sec] = append(sections[sec], "  "+leaf+": "+v+"\n")
		} else {
			file.WriteString(key + ": " + v + "\n")
		}
	}
	for sec, lines := range sections {
		file.WriteString(sec + ":\n" + strings.Join(lines, ""))
	}
	next, err := load(t, "--config", writeFile(t, file.String()))
	if err != nil {
		t.Fatal(err)
	}
	kept, err := KeepRestartOnly(cur, next)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(kept, RestartKeys()) {
		t.Errorf("kept %v, want %v", kept, RestartKeys())
	}
	for _, o := range options {
		if !reflect.DeepEqual(o.get(next), o.get(cur)) != (o.key == "sampling" || o.key == "log.level") {
			t.Errorf("%s: %v after the reload, running %v", o.key, o.get(next), o.get(cur))
		}
	}
	if kept, err := KeepRestartOnly(cur, next); err != nil || len(kept) != 0 {
		t.Errorf("again: kept %v, err %v: want nothing", kept, err)
	}
}

// TestRestartKeys: the keys hostflow needs a restart to change.
func TestRestartKeys(t *testing.T) {
	want := []string{"kernel_map_size", "ring_buffer_size", "sampling_algorithm", "attach", "direction",
		"state_dir", "control_socket", "timestamps", "mode", "conntrack", "capture", "log.format",
		"metrics.enabled", "metrics.listen", "metrics.pprof"}
	if got := RestartKeys(); !slices.Equal(got, want) {
		t.Errorf("RestartKeys() = %v, want %v", got, want)
	}
	for _, o := range Options() {
		if marked := strings.HasSuffix(o.Usage, " (restart to change)"); marked != o.Restart {
			t.Errorf("%s: usage %q, restart %v", o.Key, o.Usage, o.Restart)
		}
	}
}

// TestReadmeRestartMarks: README's option table marks "(restart)" exactly
// the keys the option table says need a restart, and lists every key.
func TestReadmeRestartMarks(t *testing.T) {
	f, err := os.Open("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	row := regexp.MustCompile("^\\| (`[a-z_.]+`(?:, `[a-z_.]+`)*) \\| `--")
	listed := map[string]bool{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		m := row.FindStringSubmatch(s.Text())
		if m == nil {
			continue
		}
		marked := strings.HasSuffix(s.Text(), "(restart) |")
		for _, k := range strings.Split(m[1], ", ") {
			key := strings.Trim(k, "`")
			listed[key] = true
			if restart := slices.Contains(RestartKeys(), key); restart != marked {
				t.Errorf("README: %s marked restart %v, the option table says %v", key, marked, restart)
			}
		}
	}
	for _, key := range Keys() {
		if !listed[key] {
			t.Errorf("README: no row for %s", key)
		}
	}
}

// TestShippedFileRestartMarks: in etc/hostflow.yaml, the comment above a
// key starts with "restart." exactly when the option table marks it.
func TestShippedFileRestartMarks(t *testing.T) {
	data, err := os.ReadFile("../../etc/hostflow.yaml")
	if err != nil {
		t.Fatal(err)
	}
	keyLine := regexp.MustCompile(`^( *)([a-z_]+):`)
	var comment []string
	section := ""
	seen := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			comment = append(comment, strings.TrimSpace(strings.TrimPrefix(trimmed, "#")))
			continue
		}
		m := keyLine.FindStringSubmatch(line)
		if m == nil {
			comment = nil
			continue
		}
		key := m[2]
		if m[1] == "" {
			section = key
		} else {
			key = section + "." + key
		}
		if slices.Contains(Keys(), key) {
			seen[key] = true
			marked := len(comment) > 0 && strings.HasPrefix(comment[0], "restart.")
			if restart := slices.Contains(RestartKeys(), key); marked != restart {
				t.Errorf("etc/hostflow.yaml: %s marked restart %v, the option table says %v", key, marked, restart)
			}
		}
		comment = nil
	}
	for _, key := range RestartKeys() {
		if !seen[key] {
			t.Errorf("etc/hostflow.yaml: no %s", key)
		}
	}
}
