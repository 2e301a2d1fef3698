#!/bin/sh
# Installs FireSharp: the binaries, the systemd units, the guest kernel and root filesystem (with the guest
# agent) that functions run on, and a config that points functions at them. Used by `make install` and by
# `make deb` (which stages into a package tree). Everything is installed under $DESTDIR.
#
#   BIN, WORKER_BIN       build/firesharp, build/firesharp-vmm
#   KERNEL, ROOTFS        build/guest/vmlinux, build/guest/rootfs.ext4 (INITRAMFS: build/guest/initramfs.cpio, optional)
#   PREFIX                /usr/local (binaries in $PREFIX/bin, guest images in $PREFIX/lib/firesharp)
#   SYSTEMD_UNIT_DIR      /etc/systemd/system
#   DESTDIR               empty: the live system (then the group is made and systemd reloaded)
set -eu
: "${BIN:=build/firesharp}" "${WORKER_BIN:=build/firesharp-vmm}"
: "${KERNEL:=build/guest/vmlinux}" "${ROOTFS:=build/guest/rootfs.ext4}" "${INITRAMFS:=}"
: "${PREFIX:=/usr/local}" "${SYSTEMD_UNIT_DIR:=/etc/systemd/system}" "${DESTDIR:=}"
here=$(dirname "$0")
images=$PREFIX/lib/firesharp

for f in "$BIN" "$WORKER_BIN" "$KERNEL" "$ROOTFS"; do
  [ -e "$f" ] || { echo "install: $f is missing (make build kernel rootfs)" >&2; exit 1; }
done

install -D -m 0755 "$BIN" "$DESTDIR$PREFIX/bin/firesharp"
install -D -m 0755 "$WORKER_BIN" "$DESTDIR$PREFIX/bin/firesharp-vmm"
# The guest images: read-only for the VMs (a function's root filesystem is attached read-only), readable by the
# daemon's path policy (the config's AllowedPathRoots names this directory).
install -D -m 0644 "$KERNEL" "$DESTDIR$images/vmlinux"
install -D -m 0644 "$ROOTFS" "$DESTDIR$images/rootfs.ext4"
[ -z "$INITRAMFS" ] || [ ! -e "$INITRAMFS" ] || install -D -m 0644 "$INITRAMFS" "$DESTDIR$images/initramfs.cpio"

# Docs and the example function; /srv/firesharp is where users put function code and images (an allowed path
# root, writable by the firesharp group).
repo=$(cd "$here/.." && pwd)
docs=$DESTDIR$PREFIX/share/doc/firesharp
install -D -m 0644 "$repo/docs/getting-started.md" "$docs/getting-started.md"
install -D -m 0644 "$here/README.md" "$docs/README.packaging.md"
install -D -m 0644 "$here/config.example.json" "$docs/examples/config.example.json"
install -d "$docs/examples/shell"
install -m 0755 "$repo/examples/shell/bootstrap" "$docs/examples/shell/bootstrap"
install -m 0644 "$repo/examples/shell/function.sh" "$repo/examples/shell/README.md" "$docs/examples/shell/"
install -d -m 2775 "$DESTDIR/srv/firesharp"

install -d "$DESTDIR$SYSTEMD_UNIT_DIR"
sed "s|/usr/local/bin/firesharp|$PREFIX/bin/firesharp|" "$here/firesharp.service" > "$DESTDIR$SYSTEMD_UNIT_DIR/firesharp.service"
install -m 0644 "$here/firesharp.socket" "$DESTDIR$SYSTEMD_UNIT_DIR/firesharp.socket"
chmod 0644 "$DESTDIR$SYSTEMD_UNIT_DIR/firesharp.service"

install -d -m 0755 "$DESTDIR/etc/firesharp"
config=$DESTDIR/etc/firesharp/config.json
if [ -f "$config" ]; then
  echo "kept $config"
  grep -q '"FunctionKernel"' "$config" || echo "note: it sets no FunctionKernel/FunctionRootfs: fn create needs --kernel and --rootfs; see $here/config.install.json"
else
  sed "s|/usr/lib/firesharp|$images|g" "$here/config.install.json" > "$config"
  chmod 0644 "$config"
fi

if [ -z "$DESTDIR" ]; then
  getent group firesharp >/dev/null || groupadd --system firesharp
  chgrp firesharp /srv/firesharp
  install -d -m 0700 /var/lib/firesharp
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    echo "installed; start with: systemctl enable --now firesharp.socket firesharp.service"
  else
    echo "installed (systemd is not running here: start the daemon with $PREFIX/bin/firesharp serve)"
  fi
  echo "users in group firesharp may use the API: usermod -aG firesharp \$USER (then log in again)"
else
  echo "installed into $DESTDIR (PREFIX=$PREFIX)"
fi
