# hostroute — see README.md. Every target is safe to run twice.
SHELL := /bin/bash
GO ?= go
BIN := bin
CONTROLLER_GEN := $(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.20.1
# Bounded fuzzing per target in `make test`.
FUZZTIME ?= 10s
# grpcnotrace drops x/net/trace (and html/template) from the binaries: half the size of
# hostroute-cni and less start-up work for every pod.
BUILDFLAGS := -trimpath -tags grpcnotrace -ldflags "-s -w"

.PHONY: all deps generate verify-generated build test unit lint lab lab-down bench tools image clean

all: build

PROTOC_GEN_GO := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
TOOLBIN := $(CURDIR)/bin/tools

## deps: Debian packages the generate step, tests and lab need (installed when missing)
deps:
	@e2e/tools/deps.sh

## generate: deepcopy and CRD manifests from api/, gRPC code from api/agent/v1
generate: deps
	$(CONTROLLER_GEN) object paths=./api/v1alpha1/...
	$(CONTROLLER_GEN) crd paths=./api/v1alpha1/... output:crd:artifacts:config=manifests/crds
	@GOBIN=$(TOOLBIN) $(GO) install $(PROTOC_GEN_GO)
	@GOBIN=$(TOOLBIN) $(GO) install $(PROTOC_GEN_GO_GRPC)
	PATH=$(TOOLBIN):$$PATH protoc -I api/agent/v1 --go_out=paths=source_relative:api/agent/v1 \
		--go-grpc_out=paths=source_relative:api/agent/v1 api/agent/v1/agent.proto
	@gofmt -w api

## verify-generated: fail when generated files are stale
verify-generated: generate
	@git diff --exit-code -- api manifests/crds || { echo "generated files are stale: run 'make generate' and commit" >&2; exit 1; }
	@test -z "$$(git status --porcelain -- api manifests/crds)" || { git status --porcelain -- api manifests/crds; echo "untracked generated files: run 'make generate' and commit" >&2; exit 1; }

## build: all binaries into bin/
build:
	$(GO) build $(BUILDFLAGS) -o $(BIN)/ ./cmd/...

## image: OCI image (scratch + the static binaries of cmd/, entrypoint /hostroute-node)
#   into bin/image/: hostroute.tar (docker-archive tagged IMAGE, default below, for
#   `ctr images import` or `docker load`), oci/ (OCI layout, for pushing) and digest.
#   Same source, same digest.
IMAGE ?= hostroute/hostroute:dev
image:
	@rm -rf $(BIN)/image/rootfs
	CGO_ENABLED=0 GOOS=linux GOARCH=$$($(GO) env GOARCH) $(GO) build $(BUILDFLAGS) -buildvcs=false -o $(BIN)/image/rootfs/ ./cmd/...
	GOOS= GOARCH= $(GO) run ./internal/image/mkimage -out $(BIN)/image -ref $(IMAGE) -arch $$($(GO) env GOARCH) $(BIN)/image/rootfs/*

## tools: build (once, cached under ~/.cache/hostroute) the test kube-apiserver and etcd
tools:
	@e2e/tools/ensure.sh >/dev/null

## lint: gofmt, go vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^e2e/tools/') $$(git ls-files -o --exclude-standard '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## test: lint, generated-files check, unit, integration and end-to-end tests (as root), the race detector on the agent, BFD daemon, route table and BGP packages, bounded fuzzing
# Packages run one at a time (-p 1): several start their own kube-apiserver, and the
# end-to-end tests are timing-sensitive on a 2-core machine.
test: deps tools lint verify-generated
	HOSTROUTE_TOOLS_DIR=$$(e2e/tools/ensure.sh) $(GO) test -p 1 -count=1 -timeout 30m ./...
	$(GO) test -race -p 1 -count=1 ./node/agent/... ./node/bfdd/... ./node/routes/... ./routing/...
	$(GO) test -run '^$$' -fuzz '^FuzzAllocator$$' -fuzztime $(FUZZTIME) ./node/ipam
	$(GO) test -run '^$$' -fuzz '^FuzzParseConfig$$' -fuzztime $(FUZZTIME) ./node/cni

## lab: a multi-node cluster in network namespaces (LAB_DETACH=1: return once up; LAB_DUALSTACK=1: IPv6 too; LAB_RACK_SIZE=2: AS per rack, two nodes per rack)
lab: deps tools
	@$(GO) build -o $(BIN)/lab ./e2e/lab
	@HOSTROUTE_TOOLS_DIR=$$(e2e/tools/ensure.sh) $(BIN)/lab up $(if $(LAB_DETACH),-detach) $(if $(LAB_DUALSTACK),-dual-stack) $(if $(LAB_RACK_SIZE),-nodes-per-rack $(LAB_RACK_SIZE))

## lab-down: stop a detached lab and remove every namespace and process it made
lab-down:
	@$(GO) build -o $(BIN)/lab ./e2e/lab
	@$(BIN)/lab down

## bench: benchmarks, each against a baseline measured in the same run, interleaved; writes
#   bench/results.json, bench/README.md and bench/chart.svg (the log goes to bench.out).
#   Data plane: iperf3 and 1-byte request/response, pod paths vs node paths and a VXLAN
#   overlay, offloads on and off. Pod start-up: CNI ADD/DEL at 1 and 8 concurrent vs ptp and
#   bridge with host-local. Kernel route writes vs ip -batch; BGP → kernel vs BIRD; failure
#   detection with BFD vs the hold timer; block propagation, mesh vs route reflector; BFD
#   idle CPU vs BIRD's; footprint; 100 real agents (cold start, block propagation, CPU per
#   block change). BENCH_ROUNDS repetitions of each (default 3).
BENCH_ROUNDS ?= 3
BENCHRAW := bench/raw.jsonl
bench: deps tools
	@mkdir -p bench && rm -f $(BENCHRAW)
	@set -o pipefail; export HOSTROUTE_TOOLS_DIR=$$(e2e/tools/ensure.sh) HOSTROUTE_BENCH_OUT=$(CURDIR)/$(BENCHRAW) HOSTROUTE_BENCH_ROUNDS=$(BENCH_ROUNDS); { \
	  echo ">> bench: data plane (~5 min)" >&2 && \
	  $(GO) test -run '^$$' -bench 'DataPlane' -benchtime 1x -count 1 -timeout 40m ./e2e/ && \
	  echo ">> bench: pod start-up (~2 min)" >&2 && \
	  $(GO) test -run '^$$' -bench 'PodStartup' -benchtime 1x -count 1 -timeout 20m ./e2e/ && \
	  echo ">> bench: plugin RPC stack, gRPC vs ttrpc (~1 min)" >&2 && $(GO) test -run '^$$' -bench 'PluginRPC' -benchtime 1x -count 1 ./internal/rpcbench/ && \
	  echo ">> bench: kernel route writes (~1 min)" >&2 && \
	  $(GO) test -run '^$$' -bench 'KernelRoutes' -benchtime $(BENCH_ROUNDS)x -count 1 ./node/routes/ && \
	  echo ">> bench: BGP → kernel, failure detection, propagation (~10 min)" >&2 && \
	  $(GO) test -run '^$$' -bench 'BGPToKernel|WithdrawalBFDvsHold|ReflectorPropagation' -benchtime $(BENCH_ROUNDS)x -count 1 -timeout 60m -v ./e2e/ && \
	  echo ">> bench: BFD idle CPU vs BIRD, footprint (~3 min)" >&2 && \
	  $(GO) test -run '^$$' -bench 'BFDIdleCPU|Footprint' -benchtime 1x -count 1 -timeout 20m ./e2e/ && \
	  echo ">> bench: 100 agents — a 25-node mesh, 25 and 100 nodes through two reflectors (~5 min)" >&2 && \
	  $(GO) test -run '^$$' -bench 'Scale' -benchtime 1x -count 1 -timeout 40m ./e2e/ ; \
	} 2>&1 | grep -vE '^\s+[IW][0-9]{4} |level=(INFO|DEBUG)|"level":"(warn|info)"' | tee bench.out
	$(GO) run ./internal/benchreport/gen -in $(BENCHRAW) -out bench

clean:
	rm -rf $(BIN)
