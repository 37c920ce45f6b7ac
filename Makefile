# hostflow build. `make run` and `make test` install what they need first.
export PATH := $(PATH):/usr/local/go/bin
GO ?= go
BIN := bin/hostflow
ARGS ?=

.PHONY: all deps generate build run test test-unit lint check-generate clean

all: build

deps:
	./scripts/install-deps.sh

# Regenerate the eBPF objects and their Go bindings from bpf/c (bpf2go).
generate: deps
	$(GO) generate ./bpf/...

build:
	$(GO) build -o $(BIN) ./cmd/hostflow

# Run hostflow on every interface that is up (not loopback), printing each
# finished flow as a JSON line. Needs root. Pass flags with ARGS="...".
run: deps build
	./$(BIN) $(ARGS)

# Every test. The eBPF and network-namespace tests need root; under CI=true
# they fail instead of skipping when a privilege or tool is missing.
test: deps
	$(GO) test -count=1 ./...

# Tests that need no privileges.
test-unit:
	$(GO) test -count=1 ./exporter/... ./templates/... ./cmd/...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...

# The committed objects must be exactly what `make generate` produces.
check-generate: generate
	git diff --exit-code -- bpf/

clean:
	rm -rf bin
