package exporter

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Interfaces resolves the interface of a flow (its kernel ifindex) to
// what collectors are sent: the interface name, for interfaceName (IPFIX
// 82, v9 IF_NAME) in data records, and the ifIndex of ingressInterface and
// egressInterface in data records and of the interface options table,
// which is the kernel's unless an override names the interface.
//
// It is a cache of the namespace's links: Update replaces it (the daemon
// does at start, on reload and each time it lists the links for the
// options table, every template_refresh), and a look-up of an ifindex it
// does not hold asks Lookup for the links again, at most once per
// MissInterval. Look-ups take no lock and do not allocate: encoders make
// one per record, on their own goroutines.
type Interfaces struct {
	overrides map[string]uint32
	lookup    func() []InterfaceInfo
	log       *slog.Logger
	now       func() time.Time

	cur atomic.Pointer[ifaceSnapshot]

	// nextMiss is when, in Unix ns, a miss may list the links again.
	nextMiss  atomic.Int64
	mu        sync.Mutex // guards conflicts
	conflicts string     // last conflicts logged
}

// ifaceSnapshot is one listing of the links, never modified once stored.
// Linux hands out ifindexes from 1 upwards, so they are looked up in a
// slice indexed by ifindex; the few beyond maxDenseIfindex (a namespace
// that churned through that many links) in a map.
type ifaceSnapshot struct {
	dense  []ifaceEntry
	sparse map[uint32]ifaceEntry
}

type ifaceEntry struct {
	name  string
	index uint32 // exported ifIndex: the override, else the kernel's
	ok    bool
}

const maxDenseIfindex = 1 << 16

func (s *ifaceSnapshot) get(idx uint32) ifaceEntry {
	if idx < uint32(len(s.dense)) {
		return s.dense[idx]
	}
	return s.sparse[idx]
}

// MissInterval bounds how often a look-up of an unknown ifindex lists the
// links again.
const MissInterval = time.Second

// InterfacesConfig configures Interfaces.
type InterfacesConfig struct {
	// Overrides maps interface names to the ifIndex exported for them.
	// Indexes must be unique and nonzero (0 means "unknown" in
	// ingressInterface/egressInterface). Interfaces not named keep
	// their kernel ifindex.
	Overrides map[string]uint32
	// Lookup lists the links on a miss. Nil: only Update fills the
	// cache.
	Lookup func() []InterfaceInfo
	// Logger warns when an override's index is another link's kernel
	// ifindex (two interfaces would export the same index). Default:
	// discard.
	Logger *slog.Logger
	// Now is the clock of the miss limit, injected for tests.
	Now func() time.Time
}

// NewInterfaces returns an empty cache with cfg's overrides.
func NewInterfaces(cfg InterfacesConfig) (*Interfaces, error) {
	seen := map[uint32]string{}
	for _, name := range slices.Sorted(maps.Keys(cfg.Overrides)) {
		idx := cfg.Overrides[name]
		if idx == 0 {
			return nil, fmt.Errorf("interface index %s: 0 is no index", name)
		}
		if other, ok := seen[idx]; ok {
			return nil, fmt.Errorf("interface index %d: given to %s and %s", idx, other, name)
		}
		seen[idx] = name
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	t := &Interfaces{overrides: maps.Clone(cfg.Overrides), lookup: cfg.Lookup, log: cfg.Logger, now: cfg.Now}
	t.cur.Store(&ifaceSnapshot{})
	return t, nil
}

// Overridden reports whether any override is configured: without, the
// exported ifIndex is always the kernel's.
func (t *Interfaces) Overridden() bool { return t != nil && len(t.overrides) > 0 }

// Update replaces the cache with links.
func (t *Interfaces) Update(links []InterfaceInfo) {
	s := &ifaceSnapshot{}
	n := 0
	for _, l := range links {
		if l.Index < maxDenseIfindex {
			n = max(n, int(l.Index)+1)
		}
	}
	s.dense = make([]ifaceEntry, n)
	var conflicts []string
	for _, l := range links {
		e := ifaceEntry{name: l.Name, index: l.Index, ok: true}
		if idx, ok := t.overrides[l.Name]; ok {
			e.index = idx
		}
		if l.Index < maxDenseIfindex {
			s.dense[l.Index] = e
			continue
		}
		if s.sparse == nil {
			s.sparse = map[uint32]ifaceEntry{}
		}
		s.sparse[l.Index] = e
	}
	for _, l := range links {
		if _, ok := t.overrides[l.Name]; ok {
			continue
		}
		for name, idx := range t.overrides {
			if idx == l.Index {
				conflicts = append(conflicts, fmt.Sprintf("%s exports %d, the ifindex of %s", name, idx, l.Name))
			}
		}
	}
	t.cur.Store(s)
	slices.Sort(conflicts)
	c := fmt.Sprint(conflicts)
	t.mu.Lock()
	if len(conflicts) > 0 && c != t.conflicts {
		t.log.Warn("interface_index: an override is another interface's ifindex: both export it; give that one an index too", "conflicts", conflicts)
	}
	t.conflicts = c
	t.mu.Unlock()
}

// Name returns the name of the interface of kernel ifindex idx, "" if
// unknown.
func (t *Interfaces) Name(idx uint32) string {
	if t == nil || idx == 0 {
		return ""
	}
	if e := t.cur.Load().get(idx); e.ok {
		return e.name
	}
	t.miss()
	return t.cur.Load().get(idx).name
}

// Index returns the ifIndex exported for kernel ifindex idx: its override,
// else idx. 0 (unknown) stays 0.
func (t *Interfaces) Index(idx uint32) uint32 {
	if !t.Overridden() || idx == 0 {
		return idx
	}
	e := t.cur.Load().get(idx)
	if !e.ok {
		t.miss()
		if e = t.cur.Load().get(idx); !e.ok {
			return idx
		}
	}
	return e.index
}

// miss lists the links again, unless it did less than MissInterval ago.
// It takes no lock: of misses racing past the limit, one lists.
func (t *Interfaces) miss() {
	if t.lookup == nil {
		return
	}
	now, next := t.now().UnixNano(), t.nextMiss.Load()
	if now < next || !t.nextMiss.CompareAndSwap(next, now+int64(MissInterval)) {
		return
	}
	t.Update(t.lookup())
}
