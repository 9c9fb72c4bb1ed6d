# hallmark — run `make help` for the targets.
SHELL := /bin/bash
GO ?= go
export CGO_ENABLED ?= 0
BIN := bin/hallmark
DATA_DIR ?= ./hallmark-data
LISTEN ?= 127.0.0.1:7070
# Packages with concurrency run under the race detector in `make test`.
RACE_PKGS := ./ledger/... ./registry/... ./shadow/... ./internal/...
FUZZTIME ?= 30s
SOAK_KILLS ?= 1000

.PHONY: help
help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

.PHONY: build
build: ## build the static hallmark binary into bin/
	$(GO) build -trimpath -o $(BIN) ./cmd/hallmark

.PHONY: run
run: build ## start hallmark serve on ./hallmark-data (embedded storage)
	$(BIN) serve --data-dir $(DATA_DIR) --listen $(LISTEN)

.PHONY: test
test: ## run every test (race detector on concurrent packages, fuzz seed corpora included)
	scripts/test.sh

.PHONY: bench
bench: ## run the benchmarks and the comparisons against reference tools
	scripts/bench.sh

.PHONY: fuzz
fuzz: ## fuzz every fuzz target for FUZZTIME each (default 30s)
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

.PHONY: soak
soak: ## crash-safety soak: SOAK_KILLS (default 1000) SIGKILLs of a busy ledger
	HALLMARK_CRASH_KILLS=$(SOAK_KILLS) $(GO) test -count=1 -timeout 3h -run 'TestCrash' -v ./ledger/

.PHONY: lint
lint: ## gofmt, go vet, staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^api/')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

.PHONY: clean
clean: ## remove build output (never the data directory)
	rm -rf bin
