# fleetlink: robot-agent, fleet-relay, fleetctl.
# `make demo` runs the whole system on the embedded broker; `make test` installs
# what the tests need (Mosquitto, npm packages, Chromium) and runs every test.

SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X github.com/robotfleet/fleetlink/internal/version.Version=$(VERSION) -X github.com/robotfleet/fleetlink/internal/version.Commit=$(COMMIT)
BINS := robot-agent fleet-relay fleetctl
PLATFORMS := linux/amd64 linux/arm64 linux/arm/7
export CGO_ENABLED ?= 0

.PHONY: all build release packages test test-deps lint bench chaos demo generate clean

all: build

build:
	@mkdir -p bin
	@for b in $(BINS); do \
		$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/$$b ./cmd/$$b || exit 1; \
	done
	@ls -l bin

# Cross-builds for robots (mostly ARM) and the cloud, with SHA-256 checksums.
release:
	@rm -rf dist && mkdir -p dist
	@for p in $(PLATFORMS); do \
		os=$${p%%/*}; rest=$${p#*/}; arch=$${rest%%/*}; arm=; \
		if [ "$$arch" = arm ]; then arm=$${rest#*/}; fi; \
		for b in $(BINS); do \
			out=dist/$$b-$$os-$$arch$${arm:+v$$arm}; \
			GOOS=$$os GOARCH=$$arch GOARM=$$arm $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $$out ./cmd/$$b || exit 1; \
		done; \
	done
	@cd dist && sha256sum * > SHA256SUMS && cat SHA256SUMS

# .deb and .rpm of robot-agent and fleet-relay (amd64, arm64, armhf) into
# dist/packages, with nfpm (scripts/packaging, its own Go module).
packages:
	@VERSION='$(VERSION)' COMMIT='$(COMMIT)' bash scripts/packages.sh

test-deps:
	@bash scripts/test-deps.sh

# The race detector needs cgo.
test: test-deps
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 10m ./...

lint:
	@bash scripts/lint.sh

generate:
	$(GO) generate ./...

bench: build
	@bash scripts/bench.sh

# The fault suite at full size (minutes): writes docs/RELIABILITY.md.
# `make test` runs the same scenarios at a short size.
chaos: test-deps
	CHAOS=long CHAOS_REPORT=$(CURDIR)/docs/RELIABILITY.md CGO_ENABLED=1 $(GO) test -count=1 -timeout 60m -run 'TestChaos' -v ./e2e/

demo: build
	@bash scripts/demo.sh

clean:
	rm -rf bin dist
