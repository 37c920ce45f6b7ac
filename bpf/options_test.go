package bpf

import (
	"math"
	"strings"
	"testing"
)

// TestFetcherOptionsValidate: options the programs cannot honour are
// refused before anything is loaded, with an error naming the field and
// what it accepts. It needs no privileges: nothing reaches the kernel.
func TestFetcherOptionsValidate(t *testing.T) {
	ok := FetcherOptions{KernelMapSize: 64, Ingress: true}
	with := func(f func(*FetcherOptions)) FetcherOptions {
		o := ok
		f(&o)
		return o
	}
	for _, tc := range []struct {
		name string
		opts FetcherOptions
		want string // "" : valid
	}{
		{"minimal", ok, ""},
		{"egress only", with(func(o *FetcherOptions) { o.Ingress, o.Egress = false, true }), ""},
		{"every field", FetcherOptions{Sampling: 100, KernelMapSize: 1 << 20, Ingress: true, Egress: true, Attach: AttachClsact,
			SamplingAlgorithm: SamplingCount, RingBufSize: 1 << 16, PreciseTimestamps: true, StateDir: "/run/x"}, ""},
		{"largest sampling", with(func(o *FetcherOptions) { o.Sampling = math.MaxUint32 }), ""},
		{"no direction", with(func(o *FetcherOptions) { o.Ingress = false }), "neither ingress nor egress"},
		{"negative sampling", with(func(o *FetcherOptions) { o.Sampling = -1 }), "sampling -1: want 0 to 4294967295"},
		{"sampling over 32 bits", with(func(o *FetcherOptions) { o.Sampling = math.MaxUint32 + 1 }), "sampling 4294967296: want 0 to"},
		{"no kernel map size", with(func(o *FetcherOptions) { o.KernelMapSize = 0 }), "kernel map size 0: want 1 to 4294967295 flows"},
		{"negative kernel map size", with(func(o *FetcherOptions) { o.KernelMapSize = -8 }), "kernel map size -8"},
		{"kernel map size over 32 bits", with(func(o *FetcherOptions) { o.KernelMapSize = math.MaxUint32 + 1 }), "kernel map size 4294967296"},
		{"socket attach mode", with(func(o *FetcherOptions) { o.Attach = AttachSocket }), "attach mode socket: want auto, tcx or clsact"},
		{"unknown attach mode", with(func(o *FetcherOptions) { o.Attach = AttachMode(9) }), "attach mode AttachMode(9)"},
		{"unknown sampling algorithm", with(func(o *FetcherOptions) { o.SamplingAlgorithm = 2 }), "sampling algorithm 2: want random (0) or count (1)"},
		{"ring not a power of two", with(func(o *FetcherOptions) { o.RingBufSize = 100000 }), "ring buffer size 100000: want a power of two"},
		{"ring under a page", with(func(o *FetcherOptions) { o.RingBufSize = 1024 }), "ring buffer size 1024: want a power of two of at least"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := tc.opts.config()
			checkOptionsErr(t, err, tc.want)
			if tc.want != "" {
				// The constructor refuses them too, before loading.
				f, err := NewFetcher(tc.opts)
				if f != nil {
					f.Close()
				}
				checkOptionsErr(t, err, tc.want)
				return
			}
			if tc.opts.RingBufSize == 0 && cfg.ringBufSize != DefaultRingBufSize {
				t.Errorf("ring buffer size %d, want the default %d", cfg.ringBufSize, DefaultRingBufSize)
			}
			if cfg.sampling != tc.opts.Sampling || cfg.mapSize != tc.opts.KernelMapSize || cfg.stateDir != tc.opts.StateDir ||
				cfg.preciseClock != tc.opts.PreciseTimestamps || cfg.algorithm != tc.opts.SamplingAlgorithm {
				t.Errorf("config %+v does not carry %+v", cfg, tc.opts)
			}
		})
	}
}

// TestSockFetcherOptionsValidate is TestFetcherOptionsValidate for the
// socket filters' options, which have no hook to choose.
func TestSockFetcherOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts SockFetcherOptions
		want string
	}{
		{"minimal", SockFetcherOptions{KernelMapSize: 1}, ""},
		{"negative sampling", SockFetcherOptions{Sampling: -1, KernelMapSize: 8}, "sampling -1"},
		{"no kernel map size", SockFetcherOptions{}, "kernel map size 0"},
		{"unknown sampling algorithm", SockFetcherOptions{KernelMapSize: 8, SamplingAlgorithm: 5}, "sampling algorithm 5"},
		{"ring not a power of two", SockFetcherOptions{KernelMapSize: 8, RingBufSize: 3 << 12}, "ring buffer size 12288"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.opts.config()
			checkOptionsErr(t, err, tc.want)
			if tc.want != "" {
				f, err := NewSockFetcher(tc.opts)
				if f != nil {
					f.Close()
				}
				checkOptionsErr(t, err, tc.want)
			}
		})
	}
}

// TestNewFlowFetcherValidates: the positional constructors refuse what
// the options structs refuse.
func TestNewFlowFetcherValidates(t *testing.T) {
	for _, tc := range []struct {
		name string
		new  func() (interface{ Close() error }, error)
		want string
	}{
		{"sampling over 32 bits", func() (interface{ Close() error }, error) {
			return NewFlowFetcher(math.MaxUint32+1, 64, true, true)
		}, "sampling 4294967296"},
		{"socket attach mode", func() (interface{ Close() error }, error) {
			return NewFlowFetcher(0, 64, true, true, WithAttachMode(AttachSocket))
		}, "attach mode socket"},
		{"unknown sampling algorithm", func() (interface{ Close() error }, error) {
			return NewFlowFetcher(0, 64, true, true, WithSamplingAlgorithm(2))
		}, "sampling algorithm 2"},
		{"ring not a power of two", func() (interface{ Close() error }, error) {
			return NewFlowFetcher(0, 64, true, true, WithRingBufSize(100000))
		}, "ring buffer size 100000"},
		{"socket: sampling over 32 bits", func() (interface{ Close() error }, error) {
			return NewSockFlowFetcher(math.MaxUint32+1, 64)
		}, "sampling 4294967296"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := tc.new()
			if err == nil {
				f.Close()
			}
			checkOptionsErr(t, err, tc.want)
		})
	}
}

func checkOptionsErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("refused: %v", err)
	case want != "" && err == nil:
		t.Fatalf("accepted, want an error with %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Fatalf("error %q, want %q in it", err, want)
	}
}
