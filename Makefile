# BlitzScale Router. `make help` lists the targets.
SHELL := /usr/bin/env bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
FUZZTIME ?= 30s
BENCHTIME ?= 1s

.DEFAULT_GOAL := help
.PHONY: help build run test test-consul lint fmt bench bench-go bench-routing fuzz tidy-check clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-11s %s\n", $$1, $$2}'

build: ## build bin/blitzscale
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/blitzscale ./cmd/blitzscale

run: build ## run the demo: simulated engines + a sidecar on 127.0.0.1:8089 (Ctrl-C stops)
	./bin/blitzscale demo

test: ## run every test with the race detector
	$(GO) test -race -count=1 -timeout 20m ./...

test-consul: ## run the Consul tests against a real `consul agent -dev` (CONSUL_BIN or consul on PATH; skipped otherwise)
	$(GO) test -race -count=1 -v -run '^TestConsulDev' ./discovery/consul/

lint: ## gofmt check and go vet (bench/refproxy is a module of its own)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd bench/refproxy && $(GO) vet .

fmt: ## format the code
	gofmt -w $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')

bench: ## side-by-side proxy benchmark: direct vs sidecar vs nginx, plus reference Go proxies (installs nginx-light; ~5 min; BENCH_QUICK=1 for a wiring check)
	GO=$(GO) bash bench/run.sh

bench-routing: ## routing experiment: every policy, 1 sidecar vs a 4-sidecar fleet, priority flood (~3.5 min; writes bench/out/routing)
	$(GO) run ./bench/routing -out bench/out/routing $(BENCH_ROUTING_FLAGS)

bench-go: ## run the Go micro-benchmarks (allocations reported)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./...

fuzz: ## run each fuzz target for FUZZTIME (default 30s)
	$(GO) test -run '^$$' -fuzz '^FuzzScanBody$$' -fuzztime $(FUZZTIME) ./sidecar
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./discovery/static
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeLoadReport$$' -fuzztime $(FUZZTIME) ./discovery

tidy-check: ## fail if go.mod or go.sum are not tidy (the router's and bench/refproxy's)
	$(GO) mod tidy -diff
	cd bench/refproxy && $(GO) mod tidy -diff

clean: ## remove build output
	rm -rf bin
