package main

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestReadOnlyExeMappings(t *testing.T) {
	const exe = "/usr/sbin/hostflow"
	maps := strings.Join([]string{
		"00400000-00a1e000 r-xp 00000000 fe:01 123 /usr/sbin/hostflow",
		"00a1e000-010a7000 r--p 0061e000 fe:01 123 /usr/sbin/hostflow",
		"010a7000-0114c000 rw-p 00ca7000 fe:01 123 /usr/sbin/hostflow",
		"0114c000-03191000 rw-p 00000000 00:00 0",
		"7ff74a845000-7ff74aa46000 r--s 00000000 00:0f 42 anon_inode:bpf-map",
		"7ff791613000-7ff791639000 r--p 00000000 fe:01 77 /usr/sbin/hostflow-other",
		"7ff791700000-7ff791701000 r-xp 00000000 fe:01 123 /usr/sbin/hostflow (deleted)",
		"7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]",
	}, "\n") + "\n"
	got, err := readOnlyExeMappings(strings.NewReader(maps), exe)
	if err != nil {
		t.Fatal(err)
	}
	want := []textMapping{{0x400000, 0xa1e000}, {0xa1e000, 0x10a7000}}
	if len(got) != len(want) {
		t.Fatalf("got %x, want %x", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("mapping %d: got %x, want %x", i, got[i], want[i])
		}
	}
}

func TestReadOnlyExeMappingsBadLine(t *testing.T) {
	for _, line := range []string{
		"00400000 r-xp 00000000 fe:01 123 /x",
		"zz-00a1e000 r-xp 00000000 fe:01 123 /x",
		"00a1e000-00400000 r-xp 00000000 fe:01 123 /x",
	} {
		if _, err := readOnlyExeMappings(strings.NewReader(line+"\n"), "/x"); err == nil {
			t.Errorf("%q: no error", line)
		}
	}
}

func FuzzReadOnlyExeMappings(f *testing.F) {
	f.Add("00400000-00a1e000 r-xp 00000000 fe:01 123 /x\n", "/x")
	f.Add("00a1e000-00400000 r--p 0 0 0 /x\n", "/x")
	f.Fuzz(func(t *testing.T, maps, exe string) {
		ms, err := readOnlyExeMappings(strings.NewReader(maps), exe)
		if err != nil {
			return
		}
		for _, m := range ms {
			if m.end <= m.start {
				t.Fatalf("mapping %x: end not after start", m)
			}
		}
	})
}

// exeRSS sums the resident kB of this process's read-only mappings of its
// executable (smaps).
func exeRSS(t *testing.T) int {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kb, in := 0, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		switch {
		case len(fl) >= 6 && strings.Contains(fl[0], "-") && !strings.HasSuffix(fl[0], ":"):
			in = fl[5] == exe && len(fl[1]) == 4 && fl[1][1] == '-'
		case in && fl[0] == "Rss:":
			n, err := strconv.Atoi(fl[1])
			if err != nil {
				t.Fatal(err)
			}
			kb += n
		}
	}
	return kb
}

func TestDropStartupText(t *testing.T) {
	before := exeRSS(t)
	if err := dropStartupText(); err != nil {
		t.Fatal(err)
	}
	after := exeRSS(t)
	t.Logf("executable's read-only pages resident: %d kB before, %d kB after", before, after)
	if after >= before {
		t.Errorf("resident %d kB after, %d before: nothing dropped", after, before)
	}
}

// A read-only mapping of the executable with anonymous pages (relocated
// RELRO data of a PIE, written before it was made read-only) is never
// dropped: its pages are not the file's.
func TestReadOnlyExeMappingsSkipsAnonymous(t *testing.T) {
	const exe = "/usr/sbin/hostflow"
	smaps := strings.Join([]string{
		"00400000-00a1e000 r-xp 00000000 fe:01 123 /usr/sbin/hostflow",
		"Size:               6264 kB",
		"Rss:                4000 kB",
		"Anonymous:             0 kB",
		"VmFlags: rd ex mr mw me",
		"00a1e000-010a7000 r--p 0061e000 fe:01 123 /usr/sbin/hostflow",
		"Size:               6692 kB",
		"Anonymous:            84 kB",
		"VmFlags: rd mr mw me",
		"010a7000-010b0000 r--p 00ca7000 fe:01 123 /usr/sbin/hostflow",
		"Anonymous:             0 kB",
		"010b0000-0114c000 rw-p 00cb0000 fe:01 123 /usr/sbin/hostflow",
		"Anonymous:           300 kB",
	}, "\n") + "\n"
	got, err := readOnlyExeMappings(strings.NewReader(smaps), exe)
	if err != nil {
		t.Fatal(err)
	}
	want := []textMapping{{0x400000, 0xa1e000}, {0x10a7000, 0x10b0000}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("got %x, want %x", got, want)
	}
}
