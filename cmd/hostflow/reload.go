package main

import (
	"fmt"
	"io"
	"time"

	"github.com/hostflow/hostflow/exporter"
	"github.com/hostflow/hostflow/internal/config"
)

// reload loads the configuration again (same command line, the file and
// the environment as they are now) and applies it. An invalid configuration
// or one that cannot be applied is logged and changes nothing.
func (d *daemon) reload() {
	if err := d.notify.reloading(); err != nil {
		d.log.Warn("systemd notify", "err", err)
	}
	d.log.Info("reloading", "config", d.cfg.File)
	next, err := config.Load(d.args, usage(), io.Discard)
	if err == nil {
		err = checkEncoders(next)
	}
	if err == nil {
		err = d.apply(next)
	}
	d.mu.Lock()
	if err != nil {
		d.reloads.Failure++
	} else {
		d.reloads.Success++
		d.reloads.LastSuccess = time.Now()
	}
	d.mu.Unlock()
	if err != nil {
		d.log.Error("reload rejected: the running configuration stays", "err", err)
	} else {
		d.log.Info("reloaded", "interfaces", len(d.fetcher.Attached()), "collectors", len(d.sinks),
			"sampling", d.cfg.Sampling, "active_timeout", d.cfg.ActiveTimeout, "idle_timeout", d.cfg.IdleTimeout)
	}
	if err := d.notify.ready(d.status()); err != nil {
		d.log.Warn("systemd notify", "err", err)
	}
}

// fateSampling refuses a sampling change from cur to next that router
// mode cannot apply without a restart: fates are counted only when every
// packet is (routerFates), and whether they are is chosen at start, with
// the programs loaded and the cache's bookkeeping. Sampling while fates
// are counted would match sampled arrivals with fates sampled apart and
// unsampled drops; stopping it would leave the fallback running.
func (d *daemon) fateSampling(cur, next int) error {
	switch {
	case d.fates && next > 1:
		return fmt.Errorf("change sampling from %d to %d: router mode counts packets' fates only without sampling: "+
			"restart hostflow to sample (it then reports the forwarding status from route lookups)", cur, next)
	case d.sampledNoFates && next <= 1:
		return fmt.Errorf("change sampling from %d to %d: router mode started sampled, without packets' fates: "+
			"restart hostflow to count every packet and their fates", cur, next)
	}
	return nil
}

// apply switches to next. What can fail (collector sockets, the cache, the
// kernel's sampling rate) is done first and undone on error, which rejects
// the whole reload; a named link that does not exist yet is only warned of
// (see ifaces.Manager.SetRules); the switch itself cannot
// lose a flow: the kernel map is drained before the cache is replaced, and
// the old cache's flows go to the old sinks before those close. A sampling
// change flushes the cache to the old sinks too: flows counted at the old
// rate are never exported under the new one. In router mode with fates,
// the flush leaves the arrivals whose fates may still come unsettled and
// the new cache takes them over (exporter.Cache.TakeFates): the kernel
// keeps counting, and settling them now would export them consumed, then
// again with their fates. A sampling change between unsampled (0 or 1)
// and sampled is refused in router mode (fateSampling).
func (d *daemon) apply(next *config.Config) error {
	cur := d.cfg
	// The option table says which keys need a restart: they keep their
	// running value.
	kept, err := config.KeepRestartOnly(cur, next)
	if err != nil {
		return err
	}
	for _, key := range kept {
		d.log.Warn("setting changed: restart hostflow to apply it", "key", key)
	}
	if err := d.fateSampling(cur.Sampling, next.Sampling); err != nil {
		return err
	}

	sinks, unused, created, err := buildSinks(next, d.sinks, d.sinkEnv())
	if err != nil {
		return err
	}
	var cache *exporter.Cache
	if d.cacheConfig(next) != d.cacheConfig(cur) {
		if cache, err = exporter.NewCache(d.cacheConfig(next), exporter.SystemClock{}); err != nil {
			created.Close()
			return fmt.Errorf("flow cache: %w", err)
		}
	}

	// The sampling rate changes last of what can fail: the exporters
	// built above advertise next.Sampling in their options records, so
	// they may replace the running ones only if the kernel samples at
	// that rate.
	if next.Sampling != cur.Sampling {
		if err := d.fetcher.SetSampling(next.Sampling); err != nil {
			created.Close()
			return fmt.Errorf("change sampling from %d to %d: %w", cur.Sampling, next.Sampling, err)
		}
	}

	// From here on nothing is undone. An interface that fails to attach
	// is logged and shown in hostflow_interface_attached; the others
	// capture.
	d.followLinksAgain()
	if err := d.links.SetRules(next.Rules()); err != nil {
		d.log.Error("apply interface rules", "err", err)
	}
	// The old sinks advertise the old sampling rate: every flow counted
	// at that rate (the kernel's, read after the programs were swapped,
	// the ring buffer's and the cached ones) goes to them as forced end before the new
	// sinks take over, or a collector would scale it by the new N. A
	// new cache starts empty the same way.
	if cache != nil || next.Sampling != cur.Sampling {
		d.drain()
		if next.Sampling != cur.Sampling {
			d.takeDirect()
		}
		n := d.flushTo(d.sinks)
		if cache != nil {
			// The arrivals whose fates are still to come (router
			// mode) settle in the new cache.
			cache.TakeFates(d.cache)
			d.cache = cache
		}
		d.log.Info("flow cache or sampling changed: exported cached flows", "flows", n,
			"sampling", next.Sampling, "was", cur.Sampling)
		d.updateActive()
	}
	d.mu.Lock()
	d.sinks = sinks
	d.mu.Unlock()
	// The old sinks may hold queued flows for a collector that is down:
	// they are drained and closed in the background, not here, once the
	// enrich stage has handed them their last batches.
	d.closer.closeAfter(unused, d.log, d.exportsQueued())
	for _, s := range created {
		d.log.Info("exporting", "collector", s.name())
	}
	for _, s := range unused {
		d.log.Info("stopped exporting", "collector", s.name(), "closing", d.closer.pending.Load())
	}

	if next.PollInterval != cur.PollInterval {
		d.tick.Reset(next.PollInterval)
	}
	d.level.Set(next.LogLevel)
	d.cfg = next
	return nil
}
