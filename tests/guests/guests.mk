# Tiny PVH test guests and the C reference runner.
# Included by the top-level Makefile; paths are relative to the repo root.
#   make guests         -> $(GUEST_OUT)/*.elf   (default build/guests)
#   make portio-runner  -> build/bench/portio-runner
# Only GNU as, ld and gcc are used.

GUEST_OUT ?= build/guests
GUEST_SRC_DIR := tests/guests
GUEST_NAMES := hello ring3-compute portio-loop mmio-probe triple-fault counter boot-timer virtio-blk-bench inout-loop idle memtouch
GUEST_ELFS := $(addprefix $(GUEST_OUT)/,$(addsuffix .elf,$(GUEST_NAMES)))
GUEST_COMMON := $(GUEST_SRC_DIR)/common.inc $(GUEST_SRC_DIR)/guest.ld $(GUEST_SRC_DIR)/guests.mk

GUEST_AS ?= as
GUEST_LD ?= ld
GUEST_ASFLAGS := --64 -I $(GUEST_SRC_DIR)
GUEST_LDFLAGS := -nostdlib -static -z max-page-size=0x1000 -z noexecstack \
                 --no-warn-rwx-segments -T $(GUEST_SRC_DIR)/guest.ld

PORTIO_RUNNER := build/bench/portio-runner

.PHONY: guests portio-runner
.SECONDARY: $(GUEST_ELFS:.elf=.o)

guests: $(GUEST_ELFS)

$(GUEST_OUT)/%.o: $(GUEST_SRC_DIR)/%.S $(GUEST_COMMON)
	@mkdir -p $(dir $@)
	$(GUEST_AS) $(GUEST_ASFLAGS) -o $@ $<

$(GUEST_OUT)/%.elf: $(GUEST_OUT)/%.o $(GUEST_SRC_DIR)/guest.ld
	$(GUEST_LD) $(GUEST_LDFLAGS) -o $@ $<

portio-runner: $(PORTIO_RUNNER)

$(PORTIO_RUNNER): tests/bench/portio-runner.c
	@mkdir -p $(dir $@)
	gcc -O2 -Wall -Wextra -o $@ $<
