# The daemon (issue 6): `firesharp serve`, its systemd unit and the API benchmark.
#   make install       binaries, systemd units (firesharp.service + firesharp.socket), guest kernel and rootfs in
#                      $(PREFIX)/lib/firesharp, /etc/firesharp/config.json pointing functions at them (kept if present)
#   make uninstall     removes the binaries, units and images (not the config or /var/lib/firesharp)
#   make deb           build/firesharp_$(DEB_VERSION)_amd64.deb (dpkg-deb; see packaging/README.md)
#   make daemon-demo   daemon on a temporary socket: create, console, stop, delete a VM
#   make bench-api     GetVm/ListVms latency (p50, p99) with 100 VMs through the real daemon
PREFIX ?= /usr/local
DESTDIR ?=
SYSTEMD_UNIT_DIR ?= /etc/systemd/system
.PHONY: install uninstall deb daemon-demo bench-api

# The real-daemon tests start build/firesharp (serve) and build/firesharp-vmm (workers): build them before testing.
test test-fast test-slow: build

# The guest images functions run on (the kernel, and the root filesystem with the agent): installed too, and named
# by the installed config (FunctionKernel, FunctionRootfs, AllowedPathRoots), so `fn create` works right away.
GUEST_DIR ?= build/guest
install: build kernel rootfs
	DESTDIR='$(DESTDIR)' PREFIX='$(PREFIX)' SYSTEMD_UNIT_DIR='$(SYSTEMD_UNIT_DIR)' BIN='$(BIN)' WORKER_BIN='$(WORKER_BIN)' \
	  KERNEL='$(GUEST_DIR)/vmlinux' ROOTFS='$(GUEST_DIR)/rootfs.ext4' INITRAMFS='$(GUEST_DIR)/initramfs.cpio' sh packaging/install.sh

uninstall:
	-@[ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ] && systemctl disable --now firesharp.socket firesharp.service 2>/dev/null || true
	rm -f $(DESTDIR)$(PREFIX)/bin/firesharp $(DESTDIR)$(PREFIX)/bin/firesharp-vmm \
	  $(DESTDIR)$(SYSTEMD_UNIT_DIR)/firesharp.service $(DESTDIR)$(SYSTEMD_UNIT_DIR)/firesharp.socket
	rm -rf $(DESTDIR)$(PREFIX)/lib/firesharp

# The Debian package (dpkg-deb): binaries, units, config, guest images and maintainer scripts (packaging/deb).
DEB_VERSION ?= 0.1.0
DEB := build/firesharp_$(DEB_VERSION)_amd64.deb
deb: build kernel rootfs
	BIN='$(BIN)' WORKER_BIN='$(WORKER_BIN)' KERNEL='$(GUEST_DIR)/vmlinux' ROOTFS='$(GUEST_DIR)/rootfs.ext4' \
	  INITRAMFS='$(GUEST_DIR)/initramfs.cpio' VERSION='$(DEB_VERSION)' sh packaging/deb/build-deb.sh $(DEB)

daemon-demo: build guests
	bash packaging/daemon-demo.sh

bench-api: build guests
	bash mk/bench-api.sh
