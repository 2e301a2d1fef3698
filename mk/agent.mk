# The FireSharp guest agent (src/Agent -> firesharp-agent, NativeAOT, static glibc). Included by
# the top-level Makefile.
#
#   make agent        publish build/agent/firesharp-agent (static executable, no libc needed)
#   make agent-root   build/agent-root: the tree `make rootfs` copies into the guest image
#                     (usr/bin/firesharp-agent, etc/firesharp/start.d/50-firesharp-agent,
#                     empty /opt and /var/task mount points)
#   make agent-clean
#
# `make rootfs` always includes the agent (ROOTFS_EXTRA_DIRS += build/agent-root). The agent
# starts only when asked: firesharp.agent=1 on the kernel command line (from /init's start.d), or
# as PID 1 with rdinit=/usr/bin/firesharp-agent (initramfs) / init=/usr/bin/firesharp-agent (disk).
# `make test*` build it first and point the tests at it (FIRESHARP_AGENT_BIN).

AGENT_BIN := build/agent/firesharp-agent
AGENT_ROOT := build/agent-root
AGENT_SOURCES := $(shell find src/Agent -name '*.cs' -o -name '*.csproj' -o -name '50-firesharp-agent' 2>/dev/null | grep -v '/obj/\|/bin/') \
                 $(shell find src/Agent.Protocol -name '*.cs' -o -name '*.csproj' 2>/dev/null | grep -v '/obj/\|/bin/') \
                 src/Proto/agent.proto Directory.Build.props Directory.Packages.props

.PHONY: agent agent-root agent-clean

agent: $(AGENT_BIN)

$(AGENT_BIN): $(AGENT_SOURCES)
	$(DOTNET) publish src/Agent/Agent.csproj -c $(CONFIGURATION) -r linux-x64 -o build/agent/publish --nologo -v quiet
	@cp build/agent/publish/firesharp-agent $(AGENT_BIN)
	@file $(AGENT_BIN) | grep -q 'statically linked' || { echo "agent: $(AGENT_BIN) is not statically linked"; exit 1; }
	@echo "built $(AGENT_BIN) ($$(du -h $(AGENT_BIN) | cut -f1), static)"

agent-root: build/agent/root.stamp

# (The stamp lives outside the tree: everything in the tree goes into the image.)
build/agent/root.stamp: $(AGENT_BIN) src/Agent/rootfs/50-firesharp-agent
	rm -rf $(AGENT_ROOT)
	install -D -m 0755 $(AGENT_BIN) $(AGENT_ROOT)/usr/bin/firesharp-agent
	install -D -m 0755 src/Agent/rootfs/50-firesharp-agent $(AGENT_ROOT)/etc/firesharp/start.d/50-firesharp-agent
	mkdir -p $(AGENT_ROOT)/opt $(AGENT_ROOT)/var/task
	@touch $@

agent-clean:
	rm -rf build/agent $(AGENT_ROOT)

# The guest image carries the agent. (`override` so that a ROOTFS_EXTRA_DIRS given on the make
# command line is extended, not replaced.)
override ROOTFS_EXTRA_DIRS += $(AGENT_ROOT)
rootfs: agent-root

# The agent tests run the NativeAOT binary that goes into the image.
test test-fast test-slow: agent
export FIRESHARP_AGENT_BIN := $(abspath $(AGENT_BIN))
