# FireSharp guest root filesystem. Included by the top-level Makefile; paths
# are relative to the repository root.
#
#   make rootfs        build (or reuse from the cache) and link
#                      build/guest/initramfs.cpio and build/guest/rootfs.ext4
#   make rootfs-clean  remove those links (the cache stays)
#
# Variables:
#   FIRESHARP_CACHE     cache root (default ~/.cache/firesharp)
#   FIRESHARP_GUEST_DIR output links (default build/guest)
#   ROOTFS_EXTRA_DIRS   space-separated directories copied over the tree, for
#                       files that are built elsewhere (e.g. the guest agent:
#                       usr/bin/<agent> + etc/firesharp/start.d/<script>)
#   ROOTFS_EXT4_SIZE    size of rootfs.ext4 (default 64M)
# See rootfs/README.md.

FIRESHARP_CACHE ?= $(HOME)/.cache/firesharp
FIRESHARP_GUEST_DIR ?= build/guest
ROOTFS_EXTRA_DIRS ?=
ROOTFS_EXT4_SIZE ?= 64M

.PHONY: rootfs rootfs-clean

rootfs:
	@FIRESHARP_CACHE='$(FIRESHARP_CACHE)' FIRESHARP_GUEST_DIR='$(FIRESHARP_GUEST_DIR)' \
	  ROOTFS_EXTRA_DIRS='$(ROOTFS_EXTRA_DIRS)' ROOTFS_EXT4_SIZE='$(ROOTFS_EXT4_SIZE)' \
	  rootfs/build.sh

rootfs-clean:
	rm -f $(addprefix $(FIRESHARP_GUEST_DIR)/,initramfs.cpio rootfs.ext4)
