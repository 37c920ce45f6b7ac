package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// textMapping is a read-only mapping of the daemon's own executable: its
// code or its read-only data.
type textMapping struct {
	start, end uintptr
}

// readOnlyExeMappings returns the mappings of /proc/self/smaps (or maps;
// read from r) that map the file exe without write permission and hold no
// anonymous pages. Writable mappings (the data and bss segments) hold the
// program's state and are never listed; neither is a read-only one with
// anonymous (copied on write) pages, such as the relocated read-only data
// of a position-independent executable (RELRO): dropping those pages
// would lose what was written to them, not just reread the file.
func readOnlyExeMappings(r io.Reader, exe string) ([]textMapping, error) {
	var out []textMapping
	// last is whether out's last mapping is the one smaps' attribute
	// lines now describe.
	last := false
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if key, val, ok := smapsAttr(sc.Bytes()); ok {
			if last && string(key) == "Anonymous" && !bytes.Equal(bytes.TrimSpace(val), []byte("0 kB")) {
				out = out[:len(out)-1]
				last = false
			}
			continue
		}
		last = false
		// start-end perms offset dev inode path; the path may hold
		// spaces (" (deleted)" when the file was replaced).
		line := sc.Bytes()
		f := make([][]byte, 0, 5)
		for len(f) < 5 {
			line = bytes.TrimLeft(line, " \t")
			field, rest, _ := bytes.Cut(line, []byte(" "))
			if len(field) == 0 {
				break
			}
			f = append(f, field)
			line = rest
		}
		if len(f) < 5 || string(bytes.TrimLeft(line, " \t")) != exe {
			continue
		}
		perms := f[1]
		if len(perms) < 4 || perms[0] != 'r' || perms[1] != '-' || perms[3] != 'p' {
			continue
		}
		lo, hi, ok := bytes.Cut(f[0], []byte("-"))
		if !ok {
			return nil, fmt.Errorf("parse mapping %q: no range", sc.Text())
		}
		start, err := strconv.ParseUint(string(lo), 16, 64)
		if err != nil {
			return nil, fmt.Errorf("parse mapping %q: %w", sc.Text(), err)
		}
		end, err := strconv.ParseUint(string(hi), 16, 64)
		if err != nil || end <= start {
			return nil, fmt.Errorf("parse mapping %q: bad end", sc.Text())
		}
		out = append(out, textMapping{start: uintptr(start), end: uintptr(end)})
		last = true
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mappings: %w", err)
	}
	return out, nil
}

// smapsAttr splits an attribute line of /proc/self/smaps ("Anonymous:
// 0 kB", "VmFlags: rd ex"): its first field ends with a colon, which a
// mapping's range never does.
func smapsAttr(line []byte) (key, val []byte, ok bool) {
	field, rest, _ := bytes.Cut(bytes.TrimLeft(line, " \t"), []byte(" "))
	key, ok = bytes.CutSuffix(field, []byte(":"))
	return key, rest, ok && len(key) > 0
}

// dropStartupText unmaps from the process the pages of its executable's
// code and read-only data, so that only those the steady state runs come
// back (on their next access, from the page cache).
func dropStartupText() error {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return fmt.Errorf("drop startup text: %w", err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return fmt.Errorf("drop startup text: %w", err)
	}
	defer f.Close()
	ms, err := readOnlyExeMappings(f, exe)
	if err != nil {
		return fmt.Errorf("drop startup text: %w", err)
	}
	for _, m := range ms {
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, unix.MADV_DONTNEED); errno != 0 {
			return fmt.Errorf("drop startup text: madvise %#x-%#x: %w", m.start, m.end, errno)
		}
	}
	return nil
}
