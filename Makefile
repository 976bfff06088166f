# batchmesh build, test and lint entry points. CI runs `make lint`, then
# `make test` (.ci/run).
#
# Linters are pinned in tools/go.mod and run with `go tool -modfile=tools/go.mod`,
# so nothing is installed into GOPATH/bin and every machine runs the same
# versions.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build
# go parallelises inside each step; running steps side by side only thrashes 2 cores.
.NOTPARALLEL:

GO       ?= go
TOOL     := $(GO) tool -modfile=tools/go.mod
MODULE   := github.com/batchmesh/batchmesh
BINARIES := sidecar controlplane model
FUZZTIME ?= 5s
# Extra flags for `go test` in `make test`, e.g. TESTFLAGS='-count=1 -v'.
TESTFLAGS ?=
# The version stamped into the binaries (-version) and the image's label.
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS  := -X $(MODULE)/internal/version.stamp=$(VERSION)
IMAGE    ?= batchmesh:$(VERSION)

.PHONY: image build test vet staticcheck unit fuzz fuzz-list lint gofmt golangci-lint lint-golangci \
	fmt vuln bench demo clean proto

## build: compile every package, then the binaries whose main package exists into bin/.
build:
	$(GO) build ./...
	@mkdir -p bin
	@for b in $(BINARIES); do \
		if [ -d "$$b" ] && compgen -G "$$b/*.go" >/dev/null; then \
			echo "$(GO) build -ldflags '$(LDFLAGS)' -o bin/$$b ./$$b"; \
			$(GO) build -ldflags "$(LDFLAGS)" -o "bin/$$b" "./$$b"; \
		fi; \
	done

## image: the container image (Dockerfile) as $(IMAGE), with docker build or, without Docker, buildah bud.
image:
	@if command -v docker >/dev/null && docker info >/dev/null 2>&1; then \
		echo "docker build -t $(IMAGE) ."; \
		DOCKER_BUILDKIT=1 docker build --build-arg VERSION=$(VERSION) -t $(IMAGE) .; \
	elif command -v buildah >/dev/null; then \
		echo "buildah bud -t $(IMAGE) ."; \
		buildah bud --layers --network=host --build-arg VERSION=$(VERSION) -t $(IMAGE) .; \
	else \
		echo "image: needs docker (with a running engine) or buildah; docs/capture.md says how"; exit 1; \
	fi

## test: vet, staticcheck, race-enabled unit tests in random order, then the fuzz smoke run.
test: vet staticcheck unit fuzz

vet:
	$(GO) vet ./...

staticcheck:
	$(TOOL) staticcheck ./...

unit:
	$(GO) test -race -shuffle=on $(TESTFLAGS) ./...

# The fuzz targets, one "DIR NAME" per line, found by grepping the *_test.go
# files so that new targets are picked up without editing this file.
FUZZ_FIND = { grep -rEo --include='*_test.go' \
		--exclude-dir=.git --exclude-dir=testdata --exclude-dir=vendor \
		--exclude-dir=bin --exclude-dir=tools \
		'^func Fuzz[A-Za-z0-9_]*\([A-Za-z_][A-Za-z0-9_]* \*testing\.F\)' . || true; } \
	| sed -E 's|^(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\(.*$$|\1 \2|' \
	| sort -u

## fuzz-list: print the fuzz targets `make fuzz` runs.
fuzz-list:
	@$(FUZZ_FIND)

## fuzz: run every fuzz target for FUZZTIME (default 5s); go test allows one -fuzz target per call.
fuzz:
	@targets="$$($(FUZZ_FIND))"; \
	if [ -z "$$targets" ]; then echo "fuzz: no fuzz targets found"; exit 0; fi; \
	log="$$(mktemp)"; trap 'rm -f "$$log"' EXIT; \
	while read -r dir name; do \
		for try in 1 2; do \
			echo "$(GO) test -run='^\$$' -fuzz='^$$name\$$' -fuzztime=$(FUZZTIME) $$dir"; \
			if $(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) "$$dir" </dev/null 2>&1 | tee "$$log"; then break; fi; \
			if [ $$try = 1 ] && grep -q 'context deadline exceeded' "$$log" && ! grep -q 'Failing input written' "$$log"; then \
				echo "fuzz: $$name: the fuzzing engine timed out stopping its workers (no failing input); running it again"; \
				continue; \
			fi; \
			exit 1; \
		done; \
	done <<< "$$targets"

## proto: regenerate internal/grpcapi from its .proto with protoc (apt: protobuf-compiler)
## and the protoc-gen-go/protoc-gen-go-grpc pinned in tools/go.mod. The output is committed.
proto:
	@mkdir -p bin/protoc-plugins
	$(GO) build -modfile=tools/go.mod -o bin/protoc-plugins/ google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc
	PATH="$(CURDIR)/bin/protoc-plugins:$$PATH" protoc -I internal/grpcapi \
		--go_out=internal/grpcapi --go_opt=paths=source_relative \
		--go-grpc_out=internal/grpcapi --go-grpc_opt=paths=source_relative \
		internal/grpcapi/grpc_predict_v2.proto

## lint: gofmt, then golangci-lint with .golangci.yml (go vet, staticcheck, the import rules and more); fails on any finding.
lint: gofmt golangci-lint

gofmt:
	@out="$$(find . -path ./.git -prune -o -path '*/testdata' -prune -o -path ./bin -prune \
		-o -name '*.go' -print | xargs -r gofmt -l)"; \
	if [ -n "$$out" ]; then echo "gofmt: these files need gofmt -w:"; echo "$$out"; exit 1; fi

# golangci-lint is pinned in tools/go.mod; its first build takes ~3 min.
# --allow-serial-runners waits for another golangci-lint run on this machine
# (they share a lock) instead of failing.
golangci-lint:
	$(TOOL) golangci-lint run --allow-serial-runners ./...

# The old name of `make lint`'s golangci-lint step.
lint-golangci: golangci-lint

## fmt: rewrite imports and formatting in place with goimports.
fmt:
	@find . -path ./.git -prune -o -path '*/testdata' -prune -o -path ./bin -prune \
		-o -name '*.go' -print | xargs -r $(TOOL) goimports -local $(MODULE) -w

# govulncheck runs offline against a database built from a pinned
# golang.org/x/vulndb module with its indexdb command (~1 min, once).
VULNDB_VERSION ?= v0.0.0-20261105234957-e22db6528018
VULNDB := bin/vulndb-$(VULNDB_VERSION)

$(VULNDB)/index/db.json:
	@src="$$($(GO) mod download -json golang.org/x/vulndb@$(VULNDB_VERSION) \
		| sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p')"; \
	test -n "$$src"; \
	rm -rf "$(VULNDB).tmp"; \
	echo "indexdb golang.org/x/vulndb@$(VULNDB_VERSION) -> $(VULNDB)"; \
	$(GO) run golang.org/x/vulndb/cmd/indexdb@$(VULNDB_VERSION) -vulns "$$src/data/osv" -out "$(VULNDB).tmp"; \
	rm -rf "$(VULNDB)"; mv "$(VULNDB).tmp" "$(VULNDB)"

## vuln: govulncheck against the local vulnerability database (not part of test).
vuln: $(VULNDB)/index/db.json
	$(TOOL) govulncheck -db file://$(CURDIR)/$(VULNDB) ./...

## bench: every benchmark, with allocations.
bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./...

## demo: the whole system on loopback (see README).
demo:
	$(GO) run ./examples/demo

clean:
	rm -rf bin
	find . -path ./.git -prune -o \( -name '*.test' -o -name '*.prof' -o -name cpu.out \) -type f -print0 \
		| xargs -0 -r rm -f
