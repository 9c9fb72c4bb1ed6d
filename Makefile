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
BUF_VERSION := v1.75.0
BUF := bin/buf-$(BUF_VERSION)

.PHONY: help
help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

# -buildvcs=auto stamps the git revision into the binary (audit exports name the
# hallmark version that made them) even where GOFLAGS sets -buildvcs=false.
.PHONY: build
build: ## build the static hallmark binary into bin/
	$(GO) build -trimpath -buildvcs=auto -o $(BIN) ./cmd/hallmark

.PHONY: run
run: build ## start hallmark serve on ./hallmark-data (embedded storage)
	$(BIN) serve --data-dir $(DATA_DIR) --listen $(LISTEN)

.PHONY: demo
demo: ## the whole story on real data, against a temporary server (prints where its files stay)
	scripts/demo.sh

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
lint: $(BUF) ## gofmt, go vet, staticcheck, buf lint
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^api/gen/')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	cd api && ../$(BUF) lint

.PHONY: generate
generate: $(BUF) ## regenerate the protobuf and Connect code in api/gen
	cd api && ../$(BUF) generate

.PHONY: checkgenerate
checkgenerate: generate ## fail if the committed generated code is stale
	@test -z "$$(git status --porcelain -- api/gen)" || { echo "api/gen is stale: run make generate and commit"; git status --porcelain -- api/gen; exit 1; }

# buf is pinned and built from source into bin/ (a separate module, so it
# adds nothing to go.mod); protoc-gen-go and protoc-gen-connect-go are `go
# tool` dependencies pinned in go.mod at the runtime libraries' versions.
$(BUF):
	GOBIN=$(CURDIR)/bin $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	mv bin/buf $(BUF)

.PHONY: clean
clean: ## remove build output (never the data directory)
	rm -rf bin

.PHONY: bench-shadow
bench-shadow: build ## shadow proxy vs nginx mirror on loopback (installs nginx and wrk if missing)
	scripts/bench-shadow.sh
