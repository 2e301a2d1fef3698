# FireSharp: `make run` shows it working, `make test` runs the suite. See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

FIRESHARP_CACHE ?= $(HOME)/.cache/firesharp
export FIRESHARP_CACHE
DOTNET ?= dotnet
CONFIGURATION ?= Release
BIN := build/firesharp
APT_PACKAGES := build-essential gcc binutils make qemu-system-x86 busybox-static e2fsprogs cpio \
                linux-source-6.1 flex bison bc libelf-dev libssl-dev xz-utils iproute2 python3 clang zlib1g-dev time file iputils-ping \
                curl openssl util-linux libseccomp2 strace afl++ prometheus zsh python3-yaml systemd

.PHONY: help deps restore build test test-fast test-slow bench bench-boot run clean

help:
	@echo "make run        build what is missing and boot the default guest (shows FireSharp doing its job)"
	@echo "make test       the full test suite (fast + slow real-guest tests)"
	@echo "make test-fast  unit tests and tiny-guest KVM tests only"
	@echo "make bench      side-by-side benchmarks P1-P6 and P9 density (QEMU, the C reference runner), then P7 + cold starts (bench-fn);"
	@echo "                bench-density (P9 with N = 200, 500, 1000), bench-worker-size, bench-boot, bench-api"
	@echo "make build      NativeAOT publish of the firesharp binary to $(BIN)"
	@echo "make guests     tiny test guests (GNU as) into build/guests"
	@echo "make deps       apt packages and the .NET restore (idempotent)"
	@echo "make fuzz       SharpFuzz + AFL++ on every fuzz target for FUZZ_SECONDS (default 60) each; prints a table"

# Install what the project needs: Debian packages (only those missing) and the NuGet restore.
deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing $$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "deps: apt packages present"; fi
	$(DOTNET) restore FireSharp.sln
	$(DOTNET) tool restore
	$(DOTNET) restore src/Cli/FireSharp.Cli.csproj -r linux-x64
	$(DOTNET) restore src/Worker/FireSharp.Worker.csproj -r linux-x64

restore:
	$(DOTNET) restore FireSharp.sln

# Host sources: every project under src/ but the guest agent, without build output (obj/, bin/).
HOST_SOURCES := $(shell find src -path src/Agent -prune -o \( -name obj -o -name bin \) -prune -o \
                  \( -name '*.cs' -o -name '*.csproj' -o -name '*.proto' \) -print 2>/dev/null) \
                Directory.Build.props Directory.Packages.props
WORKER_BIN := build/firesharp-vmm

# build/firesharp (the CLI and daemon) and build/firesharp-vmm (the slim per-VM worker), both NativeAOT.
build: $(BIN) $(WORKER_BIN)
$(BIN): $(HOST_SOURCES) | deps
	$(DOTNET) publish src/Cli/FireSharp.Cli.csproj -c $(CONFIGURATION) -r linux-x64 -o build/publish --nologo -v quiet
	@mkdir -p build && cp build/publish/firesharp $(BIN).tmp && mv -f $(BIN).tmp $(BIN)
	@echo "built $(BIN) ($$(du -h $(BIN) | cut -f1))"
$(WORKER_BIN): $(HOST_SOURCES) | deps
	$(DOTNET) publish src/Worker/FireSharp.Worker.csproj -c $(CONFIGURATION) -r linux-x64 -o build/publish-vmm --nologo -v quiet
	@mkdir -p build && cp build/publish-vmm/firesharp-vmm $(WORKER_BIN).tmp && mv -f $(WORKER_BIN).tmp $(WORKER_BIN)
	@echo "built $(WORKER_BIN) ($$(du -h $(WORKER_BIN) | cut -f1))"

test: deps guests kernel rootfs examples
	FIRESHARP_TEST_FILTER= bash tests/run-tests.sh

test-fast: deps guests examples
	FIRESHARP_TEST_FILTER='Category!=Slow' bash tests/run-tests.sh

test-slow: deps build guests kernel rootfs examples
	FIRESHARP_TEST_FILTER='Category=Slow' bash tests/run-tests.sh

bench: deps build guests portio-runner kernel rootfs
	bash tests/bench/run-bench.sh
	@$(MAKE) --no-print-directory bench-fn

bench-boot: deps build kernel rootfs
	bash tests/bench/bench-boot.sh

run: deps build guests kernel rootfs
	bash scripts/run-demo.sh

clean:
	rm -rf build
	find . -name bin -o -name obj -type d -prune -exec rm -rf {} +

include tests/guests/guests.mk
-include kernel-config/kernel.mk
-include rootfs/rootfs.mk
# Feature fragments (one per concern), e.g. mk/virtio.mk, mk/daemon.mk.
-include $(wildcard mk/*.mk)
