# hostflow build. `make run` and `make test` install what they need first.
export PATH := $(PATH):/usr/local/go/bin
GO ?= go
BIN := bin/hostflow
ARGS ?=
# The version hostflow reports and packages carry, from `git describe`
# (computed once, so one build never mixes two versions).
ifeq ($(origin VERSION),undefined)
VERSION := $(shell ./packaging/version.sh)
endif
LDFLAGS := -X main.version=$(VERSION)
# Where `make package` writes the .deb and .rpm, and for which GOARCH.
DIST ?= dist
ARCH ?= amd64
PKGBUILD = $(DIST)/.build-$(ARCH)
NFPM_ENV = VERSION=$(VERSION) HOSTFLOW_ARCH=$(ARCH) HOSTFLOW_BUILD=$(PKGBUILD)

.PHONY: all deps generate build run test test-unit lint check-generate clean package

all: build

deps:
	./scripts/install-deps.sh

# Regenerate the eBPF objects and their Go bindings from bpf/c (bpf2go).
generate: deps
	$(GO) generate ./bpf/...

# Static, like the package (CGO_ENABLED=0): nothing here needs cgo, and
# libc's resident pages cost the daemon about 2 MB of RSS (issue 11).
build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/hostflow

# Run hostflow on the host's edge interfaces (see README), printing each
# finished flow as a JSON line. Needs root. Pass flags with ARGS="...".
run: deps build
	./$(BIN) $(ARGS)

# Every test. The eBPF and network-namespace tests need root; under CI=true
# they fail instead of skipping when a privilege or tool is missing. Test
# binaries run in network namespaces of their own, with no way out
# (testutil.RunInPrivateNetns): every module, the tools' too (nfpm for the
# package test), is downloaded first.
test: deps
	$(GO) mod download
	$(GO) test -count=1 ./...

# Tests that need no privileges.
test-unit:
	$(GO) test -count=1 ./exporter/... ./templates/... ./cmd/... ./internal/config/... ./metrics/...

# gofmt, go vet, staticcheck and deadcode (Go tool dependencies pinned in
# go.mod). deadcode -test lists functions no program or test reaches; it
# exits 0 even when it finds some, so any output fails the lint.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags bench ./...
	$(GO) tool staticcheck -tags bench ./...
	@out=$$($(GO) tool deadcode -test -tags bench ./...) || exit 1; if [ -n "$$out" ]; then echo "deadcode: unreachable functions:"; echo "$$out"; exit 1; fi

# The committed objects must be exactly what `make generate` produces.
check-generate: generate
	git diff --exit-code -- bpf/

# dist/hostflow_<version>_<ARCH>.deb and .rpm, built by nfpm (a Go tool
# dependency in go.mod: nothing is downloaded beyond the Go module proxy).
# ARCH is a GOARCH: amd64 (default) or arm64 (cross-compiled, CGO_ENABLED=0;
# the eBPF objects are little-endian bpfel, the same on both). The man page
# and the shell completions are generated at build time by a hostflow built
# for this machine (`hostflow man`, `hostflow completion SHELL`), so they
# always match the flags and keys of the binary they ship with.
package:
	rm -rf $(PKGBUILD) && mkdir -p $(PKGBUILD) $(DIST)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $(PKGBUILD)/hostflow-native ./cmd/hostflow
	$(PKGBUILD)/hostflow-native man | gzip -9n > $(PKGBUILD)/hostflow.8.gz
	$(PKGBUILD)/hostflow-native completion bash > $(PKGBUILD)/hostflow.bash
	$(PKGBUILD)/hostflow-native completion zsh > $(PKGBUILD)/hostflow.zsh
	$(PKGBUILD)/hostflow-native completion fish > $(PKGBUILD)/hostflow.fish
	CGO_ENABLED=0 GOOS=linux GOARCH=$(ARCH) $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $(PKGBUILD)/hostflow ./cmd/hostflow
	$(NFPM_ENV) $(GO) tool nfpm package -f packaging/nfpm.yaml -p deb -t $(DIST)/hostflow_$(VERSION)_$(ARCH).deb
	$(NFPM_ENV) $(GO) tool nfpm package -f packaging/nfpm.yaml -p rpm -t $(DIST)/hostflow_$(VERSION)_$(ARCH).rpm
	rm -rf $(PKGBUILD)

clean:
	rm -rf bin dist
