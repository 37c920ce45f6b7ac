package bpf

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/cilium/ebpf"
)

// fetcherCore is what FlowFetcher and SockFlowFetcher share: the loaded
// programs and maps, the load-time configuration, the sampling rate in
// force and the interfaces attached. P is the fetcher's set of programs,
// A what it puts on one interface; how a program is put on a hook is A's
// business, and so is everything about attaching.
type fetcherCore[P programs, A attachment[P]] struct {
	*flowMaps
	kind kind[P]
	cfg  fetcherConfig
	objs objects[P] // the maps and variables; the programs are in progs

	hooksMu  sync.Mutex // guards progs, sampling, attached (and the TC attach mode)
	progs    P
	sampling int
	attached map[int]A
}

// programs is one loaded set of a fetcher's programs: *NetPrograms or
// *NetSkPrograms.
type programs interface{ io.Closer }

// kind is what tells the fetchers' programs apart at load.
type kind[P programs] struct {
	what     string                               // in errors: "programs" or "socket programs"
	progType ebpf.ProgramType                     // for the clock probe
	spec     func() (*ebpf.CollectionSpec, error) // LoadNet or LoadNetSk
	newProgs func() P
}

// objects is a bpf2go objects struct: *NetObjects or *NetSkObjects.
type objects[P programs] interface {
	io.Closer
	shared() sharedMaps
	// takePrograms moves the programs out, so that Close closes the
	// maps only.
	takePrograms() P
}

// attachment is what a fetcher put on one interface.
type attachment[P programs] interface {
	iface() string
	hooks() []hook[P]
	close() error
}

// hook is one place a program runs: a tcx link, a cls_bpf filter or a
// packet socket.
type hook[P programs] interface {
	// update puts the hook's program of progs on it in place: no packet
	// passes unseen or is seen twice.
	update(progs P) error
}

// init resolves the clock, loads k's objects into objs for cfg and opens
// the maps. On an error nothing stays loaded.
func (c *fetcherCore[P, A]) init(k kind[P], cfg fetcherConfig, objs objects[P]) error {
	if err := cfg.resolveClock(k.progType); err != nil {
		return err
	}
	if cfg.stateDir != "" {
		if err := os.MkdirAll(cfg.stateDir, 0o755); err != nil {
			return fmt.Errorf("state dir: %w", err)
		}
	}
	c.kind, c.cfg, c.sampling = k, cfg, cfg.sampling
	c.attached = make(map[int]A)
	spec, err := c.spec(cfg.sampling)
	if err != nil {
		return err
	}
	if err := spec.LoadAndAssign(objs, nil); err != nil {
		return fmt.Errorf("load %s: %w", k.what, err)
	}
	c.objs, c.progs = objs, objs.takePrograms()
	if c.flowMaps, err = newFlowMaps(objs.shared(), cfg.mapSize, cfg); err != nil {
		return errors.Join(err, c.progs.Close(), objs.Close())
	}
	return nil
}

// spec returns the collection spec with the load-time settings applied.
func (c *fetcherCore[P, A]) spec(sampling int) (*ebpf.CollectionSpec, error) {
	spec, err := c.kind.spec()
	if err != nil {
		return nil, err
	}
	return configure(spec, sampling, c.cfg.mapSize, c.cfg)
}

// PreciseClock reports whether the programs stamp flows with the precise
// clock, and whether that is a fallback: the coarse one was asked for but
// the kernel lacks it (Linux < 5.11).
func (c *fetcherCore[P, A]) PreciseClock() (precise, fallback bool) {
	return c.cfg.preciseClock, c.cfg.clockFallback
}

// Sampling returns N of the 1-in-N sampling in force.
func (c *fetcherCore[P, A]) Sampling() int {
	c.hooksMu.Lock()
	defer c.hooksMu.Unlock()
	return c.sampling
}

// SetSampling changes the sampling rate while attached. Sampling is a
// load-time constant of the programs (the verifier prunes the sampling
// branch when it is off), so new programs are loaded on the same maps and
// swapped into every hook in place (a tcx link or cls_bpf filter update,
// or SO_ATTACH_BPF on a packet socket, which replaces its filter in one
// pointer swap): no flow is lost and no packet is counted twice.
//
// If a hook refuses the new program, the hooks already updated get the old
// one back and the error is returned: every hook samples at the rate
// Sampling reports. The new programs count into the spare map of each
// pair, so that a flow's counts at the two rates never mix: the next Drain
// waits for the old programs still running and hands out only what they
// counted (at the old rate); the Drain after it, the new programs' counts.
func (c *fetcherCore[P, A]) SetSampling(sampling int) error {
	if err := checkSampling(sampling); err != nil {
		return err
	}
	c.hooksMu.Lock()
	defer c.hooksMu.Unlock()
	if sampling == c.sampling {
		return nil
	}
	spec, err := c.spec(sampling)
	if err != nil {
		return err
	}
	// The new programs count into the spare maps (flowMaps.swapToSpare).
	maps, err := c.spareReplacements()
	if err != nil {
		return err
	}
	progs := c.kind.newProgs()
	if err := spec.LoadAndAssign(progs, maps); err != nil {
		return fmt.Errorf("load %s for sampling %d: %w", c.kind.what, sampling, err)
	}
	if err := c.swapToSpare(func() error { return c.swap(progs) }); err != nil {
		_ = progs.Close()
		return err
	}
	old := c.progs
	c.progs, c.sampling = progs, sampling
	return old.Close()
}

// swap puts progs on every hook. On an error, the hooks already updated
// get the running programs back.
func (c *fetcherCore[P, A]) swap(progs P) error {
	type done struct {
		a A
		h hook[P]
	}
	var updated []done
	for _, a := range c.attached {
		for _, h := range a.hooks() {
			err := h.update(progs)
			if err == nil {
				updated = append(updated, done{a, h})
				continue
			}
			errs := []error{fmt.Errorf("update %s: %w", a.iface(), err)}
			for _, u := range updated {
				if err := u.h.update(c.progs); err != nil {
					errs = append(errs, fmt.Errorf("restore the old program on %s: %w", u.a.iface(), err))
				}
			}
			return errors.Join(errs...)
		}
	}
	return nil
}

// attach records what open puts on interface ifindex, unless something is
// there already. open runs under hooksMu.
func (c *fetcherCore[P, A]) attach(ifindex int, name string, open func() (A, error)) error {
	c.hooksMu.Lock()
	defer c.hooksMu.Unlock()
	if _, ok := c.attached[ifindex]; ok {
		return fmt.Errorf("%s (ifindex %d): %w", name, ifindex, ErrAlreadyAttached)
	}
	a, err := open()
	if err != nil {
		return err
	}
	c.attached[ifindex] = a
	c.hooks.Store(int32(len(c.attached)))
	return nil
}

// Detach removes the programs from interface ifindex. An interface that
// has gone away is no error: the kernel removed its hooks with it.
func (c *fetcherCore[P, A]) Detach(ifindex int) error {
	c.hooksMu.Lock()
	defer c.hooksMu.Unlock()
	a, ok := c.attached[ifindex]
	if !ok {
		return fmt.Errorf("ifindex %d: %w", ifindex, ErrNotAttached)
	}
	delete(c.attached, ifindex)
	c.hooks.Store(int32(len(c.attached)))
	c.detached.Store(true)
	if err := a.close(); err != nil {
		return fmt.Errorf("detach %s: %w", a.iface(), err)
	}
	return nil
}

// Attached returns the indexes and names of the interfaces the programs
// are on.
func (c *fetcherCore[P, A]) Attached() map[int]string {
	c.hooksMu.Lock()
	defer c.hooksMu.Unlock()
	out := make(map[int]string, len(c.attached))
	for i, a := range c.attached {
		out[i] = a.iface()
	}
	return out
}

// Close detaches every interface and frees the programs and maps.
func (c *fetcherCore[P, A]) Close() error {
	c.hooksMu.Lock()
	defer c.hooksMu.Unlock()
	var errs []error
	for _, a := range c.attached {
		errs = append(errs, a.close())
	}
	c.attached = map[int]A{}
	if c.flowMaps != nil {
		c.hooks.Store(0)
		errs = append(errs, c.flowMaps.close(), c.progs.Close(), c.objs.Close())
	}
	return errors.Join(errs...)
}
