# FireSharp guest kernel. Included by the top-level Makefile; paths are
# relative to the repository root.
#
#   make kernel        build (or reuse from the cache) and link
#                      build/guest/{vmlinux,bzImage,kernel.config,System.map}
#   make kernel-clean  remove those links (the cache stays)
#   make guest-smoke   boot kernel + rootfs under QEMU TCG and check /init,
#                      the self-test, ext4 root, SMP and the PVM syscall patch
#                      (needs rootfs/rootfs.mk too; ~10 s)
#
# Variables: FIRESHARP_CACHE (cache root, default ~/.cache/firesharp),
# FIRESHARP_GUEST_DIR (default build/guest), KERNEL_JOBS (default nproc),
# KERNEL_VERBOSE=1 (raw make output). See kernel-config/README.md.

FIRESHARP_CACHE ?= $(HOME)/.cache/firesharp
FIRESHARP_GUEST_DIR ?= build/guest
KERNEL_JOBS ?= $(shell nproc)
KERNEL_VERBOSE ?= 0

.PHONY: kernel kernel-clean guest-smoke

kernel:
	@FIRESHARP_CACHE='$(FIRESHARP_CACHE)' FIRESHARP_GUEST_DIR='$(FIRESHARP_GUEST_DIR)' \
	  KERNEL_JOBS='$(KERNEL_JOBS)' KERNEL_VERBOSE='$(KERNEL_VERBOSE)' \
	  kernel-config/build.sh

kernel-clean:
	rm -f $(addprefix $(FIRESHARP_GUEST_DIR)/,vmlinux bzImage kernel.config System.map)

guest-smoke: kernel rootfs
	@FIRESHARP_CACHE='$(FIRESHARP_CACHE)' FIRESHARP_GUEST_DIR='$(FIRESHARP_GUEST_DIR)' \
	  kernel-config/smoke/qemu-smoke.sh
