# Runnel's build. Every target works from a fresh checkout with Go (plus a C compiler: `make test`
# uses the race detector, which needs cgo), except `make proto` (needs protoc: Debian package
# protobuf-compiler) and `make diskbench` (dd; fio and jq if present). `make help` lists targets. Tools (protoc plugins, staticcheck) are pinned in go.mod's `tool` block and run with
# `go tool`, so there is nothing to install by hand.

SHELL := /bin/bash
.DEFAULT_GOAL := build

GO       ?= go
GOFMT    ?= $(shell $(GO) env GOROOT)/bin/gofmt
PROTOC   ?= protoc

# make run: arguments for runneld, e.g. RUNARGS="--data-dir /tmp/runnel".
RUNARGS    ?=
# make test
TESTTIMEOUT ?= 20m
# A count, not a duration: with a duration, go1.26's fuzz coordinator can fail a target with a
# bare "context deadline exceeded" when the time runs out while a worker is mid-input
# (golang/go#75804, fixed in go1.27). Seen here on FuzzRecover, whose inputs do file I/O.
FUZZTIME    ?= 3000x
FUZZ        ?= .
# make bench BENCH=Append PKG=./commitlog BENCHTIME=2s BENCHCOUNT=5
BENCH      ?= .
PKG        ?= ./...
BENCHTIME  ?= 1s
BENCHCOUNT ?= 1
# make docker IMAGE_TAG=dev
IMAGE_TAG  ?= dev
# make diskbench DIR=/some/disk (default: a temporary directory inside the repository)
DIR        ?=

# Go files we own: what the go tool sees (no testdata/, vendor/, .* or _* directories), without
# generated protobuf code.
GOFILES_CMD = find . \( -name testdata -o -name vendor -o -name '.?*' -o -name '_*' \) -prune -o \
	-type f -name '*.go' ! -name '*.pb.go' -print

PROTO_FILES := $(shell find proto -name '*.proto' 2>/dev/null | sort)

.PHONY: build run test vet fuzz bench proto lint clean diskbench docker help

## build: compile every program under cmd/ into bin/.
build:
	@if [ -z "$$(find cmd -type f -name '*.go' ! -name '*_test.go' 2>/dev/null | head -n1)" ]; then \
		echo "build: nothing to build yet: cmd/ has no packages (cmd/runneld and cmd/runnel are planned)"; \
	else \
		mkdir -p bin && echo "$(GO) build -o bin/ ./cmd/..." && $(GO) build -o bin/ ./cmd/...; \
	fi

## docker: static binaries into bin/docker/ and the image runnel:$(IMAGE_TAG) FROM scratch (see Dockerfile).
docker:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o bin/docker/ ./cmd/runneld ./cmd/runnel
	docker build -t runnel:$(IMAGE_TAG) .

## run: build and start a single-node broker with its defaults (127.0.0.1:9420, data in ./data).
run: build
	./bin/runneld $(RUNARGS)

## test: vet, the whole suite with the race detector (fuzz seed corpora included), then every
## fuzz target for FUZZTIME each.
test: vet
	$(GO) test -race -count=1 -timeout $(TESTTIMEOUT) ./...
	@# Allocation counts, which the race detector perturbs (its sync.Pool drops items on purpose).
	$(GO) test -count=1 -run 'Alloc' ./...
	GO="$(GO)" FUZZTIME="$(FUZZTIME)" scripts/fuzz.sh

vet:
	$(GO) vet ./...

## fuzz: only the fuzz pass of `make test` (FUZZ=regexp picks targets, FUZZTIME=100000x runs longer).
fuzz:
	GO="$(GO)" FUZZTIME="$(FUZZTIME)" FUZZ="$(FUZZ)" scripts/fuzz.sh

## bench: go benchmarks; BENCH=regexp, PKG=./commitlog, BENCHTIME=2s, BENCHCOUNT=5 narrow or repeat.
bench:
	$(GO) test -run='^$$' -bench='$(BENCH)' -benchmem -benchtime=$(BENCHTIME) -count=$(BENCHCOUNT) $(PKG)

## proto: regenerate the Go code of proto/**/*.proto (the generated code is committed).
proto:
ifeq ($(PROTO_FILES),)
	@echo "proto: nothing to generate: no .proto files under proto/ yet"
else
	@command -v $(PROTOC) >/dev/null || { echo "proto: $(PROTOC) not found (Debian: apt-get install protobuf-compiler)" >&2; exit 1; }
	@set -e; \
	gen_go=$$($(GO) tool -n protoc-gen-go); \
	gen_grpc=$$($(GO) tool -n protoc-gen-go-grpc); \
	find proto -name '*.pb.go' -delete; \
	echo "$(PROTOC) -I proto --go_out=proto --go-grpc_out=proto (paths=source_relative) $(PROTO_FILES:proto/%=%)"; \
	$(PROTOC) -I proto \
		--plugin=protoc-gen-go="$$gen_go" --go_out=proto --go_opt=paths=source_relative \
		--plugin=protoc-gen-go-grpc="$$gen_grpc" --go-grpc_out=proto --go-grpc_opt=paths=source_relative \
		$(PROTO_FILES:proto/%=%)
endif

## lint: gofmt (generated *.pb.go excluded), go vet, staticcheck.
lint:
	@unformatted=$$($(GOFILES_CMD) | xargs -r $(GOFMT) -l | sed "s|^\./||"); \
	if [ -n "$$unformatted" ]; then \
		echo "lint: not gofmt-ed (run gofmt -w on them):" >&2; echo "$$unformatted" >&2; exit 1; \
	fi; \
	echo "gofmt -l: ok"
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

## diskbench: raw disk figures (dd, and fio if installed) as JSON lines; see docs/benchmarks.md.
diskbench:
	scripts/diskbench.sh $(DIR)

## clean: remove build output and leftovers of interrupted runs (never ./data).
clean:
	rm -rf bin/ coverage.out cover.out coverage.html *.coverprofile .diskbench.*

## help: this list.
help:
	@sed -n 's/^## //p' $(firstword $(MAKEFILE_LIST))
