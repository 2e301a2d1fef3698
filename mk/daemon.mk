# The daemon (issue 6): `firesharp serve`, its systemd unit and the API benchmark.
#   make install       binary + systemd unit + /etc/firesharp/config.json (kept if present)
#   make uninstall     removes the binary and the unit (not the config or /var/lib/firesharp)
#   make daemon-demo   daemon on a temporary socket: create, console, stop, delete a VM
#   make bench-api     GetVm/ListVms latency (p50, p99) with 100 VMs through the real daemon
PREFIX ?= /usr/local
DESTDIR ?=
SYSTEMD_UNIT_DIR ?= /etc/systemd/system
.PHONY: install uninstall daemon-demo bench-api

# The real-daemon tests start build/firesharp (serve) and build/firesharp-vmm (workers): build them before testing.
test test-fast test-slow: build

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/firesharp
	install -D -m 0755 $(WORKER_BIN) $(DESTDIR)$(PREFIX)/bin/firesharp-vmm
	install -d $(DESTDIR)$(SYSTEMD_UNIT_DIR)
	sed 's|/usr/local/bin/firesharp|$(PREFIX)/bin/firesharp|' packaging/firesharp.service > $(DESTDIR)$(SYSTEMD_UNIT_DIR)/firesharp.service
	chmod 0644 $(DESTDIR)$(SYSTEMD_UNIT_DIR)/firesharp.service
	install -d -m 0755 $(DESTDIR)/etc/firesharp
	@if [ -f $(DESTDIR)/etc/firesharp/config.json ]; then echo "kept $(DESTDIR)/etc/firesharp/config.json"; \
	else install -m 0644 packaging/config.example.json $(DESTDIR)/etc/firesharp/config.json; fi
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; \
	  echo "installed; start with: systemctl enable --now firesharp"; \
	else echo "installed into $(DESTDIR)$(PREFIX) (systemd not running here: no daemon-reload)"; fi

uninstall:
	-@[ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ] && systemctl disable --now firesharp 2>/dev/null || true
	rm -f $(DESTDIR)$(PREFIX)/bin/firesharp $(DESTDIR)$(PREFIX)/bin/firesharp-vmm $(DESTDIR)$(SYSTEMD_UNIT_DIR)/firesharp.service

daemon-demo: build guests
	bash packaging/daemon-demo.sh

bench-api: build guests
	bash mk/bench-api.sh
