#!/bin/sh
# Builds the FireSharp Debian package with dpkg-deb: the tree `install.sh` stages (PREFIX=/usr, units in
# /lib/systemd/system, guest images in /usr/lib/firesharp, /etc/firesharp/config.json as a conffile, docs and the example function),
# and the maintainer scripts beside this file. Usage: build-deb.sh OUT.deb (BIN, WORKER_BIN, KERNEL, ROOTFS,
# INITRAMFS as for install.sh; VERSION, default 0.1.0).
set -eu
out=$1
here=$(cd "$(dirname "$0")" && pwd)
: "${VERSION:=0.1.0}"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
DESTDIR=$stage PREFIX=/usr SYSTEMD_UNIT_DIR=/lib/systemd/system sh "$here/../install.sh" >/dev/null
install -d -m 0755 "$stage/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s|@VERSION@|$VERSION|" -e "s|@SIZE@|$size|" "$here/control" > "$stage/DEBIAN/control"
echo /etc/firesharp/config.json > "$stage/DEBIAN/conffiles"
for s in postinst prerm postrm; do install -m 0755 "$here/$s" "$stage/DEBIAN/$s"; done
mkdir -p "$(dirname "$out")"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$out" >/dev/null
echo "built $out ($(du -h "$out" | cut -f1))"
