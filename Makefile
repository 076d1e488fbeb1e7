# graft: live patching for running Linux x86-64 processes.
#
#   make demo   build a sample server, start it, patch it live, show the change
#   make test   the whole test suite (needs root or CAP_SYS_PTRACE, gcc)
#   make realworld  graft diff against source diffs of real Debian fixes

GO        ?= go
BIN       := bin/graft
TESTFLAGS ?= -count=1 -timeout 25m

all: $(BIN) testprocs

$(BIN): FORCE
	$(GO) build -o $(BIN) ./cmd/graft

testprocs:
	$(MAKE) -C testprocs

test: testprocs
	$(GO) vet ./...
	$(GO) test $(TESTFLAGS) ./...

# The benchmarks of one stop per apply (stops_bench_test.go) run a whole
# apply, or 20, per iteration: fewer iterations. The first run compiles a
# 5 MB C program twice (minutes on a loaded machine; cached in
# testprocs/build).
HEAVY_BENCH := StackedPauses|ApplyWall|IdleStops|HeartbeatStall

bench: testprocs
	$(GO) test -run '^$$' -bench . -skip '$(HEAVY_BENCH)' -benchtime 200x ./...
	$(GO) test -run '^$$' -bench '$(HEAVY_BENCH)' -benchtime 10x .

# Ground truth on real programs (slow: fetches Debian sources with apt-get
# and builds them under /var/tmp/realworld; not part of make test).
realworld: $(BIN)
	$(GO) run ./internal/realworld -v
	bash internal/realworld/livelib/expat-live.sh $(abspath $(BIN))

demo: $(BIN) testprocs
	bash internal/demo/demo.sh

clean:
	rm -rf bin
	$(MAKE) -C testprocs clean

FORCE:
.PHONY: all test bench demo clean testprocs realworld FORCE
