#!/usr/bin/env bash
# Builds the FireSharp guest root filesystem from Debian's busybox-static:
#   initramfs.cpio  uncompressed newc archive (for -initrd / the VMM's initrd)
#   rootfs.ext4     ext4 image of the same tree (for root=/dev/vda)
#
# Tree: /bin/busybox + applet links, /init (rootfs/init), /sbin/init -> /init,
# /etc/firesharp-selftest.sh, rootfs/overlay/ on top, then every directory in
# ROOTFS_EXTRA_DIRS on top of that. Files are owned by root (packed under
# fakeroot, so no real root is needed), and /dev/console and /dev/null are
# real device nodes in both images: the kernel opens /dev/console for init
# before anything can mount devtmpfs.
#
# Cached in $FIRESHARP_CACHE/rootfs/<hash>/; <hash> covers the busybox and
# e2fsprogs package versions, every input file and this script.
#
# Environment (all optional):
#   FIRESHARP_CACHE      cache root (default: $HOME/.cache/firesharp)
#   FIRESHARP_GUEST_DIR  where links go (default: build/guest)
#   ROOTFS_EXTRA_DIRS    space-separated directories copied over the tree
#                        (for example a guest agent and its start script)
#   ROOTFS_EXT4_SIZE     size of rootfs.ext4 (default: 64M)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
busybox=/bin/busybox

log() { printf '[rootfs] %s\n' "$*" >&2; }
die() { printf '[rootfs] error: %s\n' "$*" >&2; exit 1; }

# --- Inner step, run under fakeroot: own the tree as root, add device nodes,
# --- pack both images. Arguments: TREE OUT_DIR EXT4_SIZE UUID.
if [[ "${1:-}" == --pack ]]; then
    tree="$2" out="$3" size="$4" uuid="$5"
    chown -R 0:0 "$tree"
    mknod -m 600 "$tree/dev/console" c 5 1
    mknod -m 666 "$tree/dev/null" c 1 3
    # Fixed timestamps: the same inputs give the same cpio bytes.
    find "$tree" -exec touch -h -d @1700000000 {} +
    (cd "$tree" && find . -mindepth 1 | LC_ALL=C sort |
        cpio --quiet -o -H newc --reproducible > "$out/initramfs.cpio.tmp")
    rm -f "$out/rootfs.ext4.tmp"
    : > "$out/rootfs.ext4.tmp"   # (an existing file keeps mke2fs quiet)
    E2FSPROGS_FAKE_TIME=1700000000 mke2fs -q -t ext4 -L firesharp-root \
        -U "$uuid" -E "hash_seed=$uuid" -d "$tree" -F "$out/rootfs.ext4.tmp" "$size"
    exit 0
fi

cache="${FIRESHARP_CACHE:-$HOME/.cache/firesharp}"
guest_dir="${FIRESHARP_GUEST_DIR:-build/guest}"
extra_dirs="${ROOTFS_EXTRA_DIRS:-}"
ext4_size="${ROOTFS_EXT4_SIZE:-64M}"

# --- Tools ---------------------------------------------------------------------

need_pkgs=()
dpkg_installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]; }
for p in busybox-static fakeroot cpio e2fsprogs; do
    dpkg_installed "$p" || need_pkgs+=("$p")
done
if ((${#need_pkgs[@]})); then
    log "installing: ${need_pkgs[*]}"
    sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get install -y --no-install-recommends "${need_pkgs[@]}" >&2 \
        || die "apt-get install ${need_pkgs[*]} failed"
fi
# The guest has no libc: busybox must be the static build.
if readelf -l "$busybox" | grep -q 'Requesting program interpreter'; then
    die "$busybox is dynamically linked; install busybox-static"
fi
for d in $extra_dirs; do
    [[ -d "$d" ]] || die "ROOTFS_EXTRA_DIRS entry '$d' is not a directory"
done

# --- Input hash ----------------------------------------------------------------

# tree_digest DIR: names, types, modes, link targets and contents.
tree_digest() {
    (cd "$1" && find . -mindepth 1 -printf '%y %m %p %l\n' | LC_ALL=C sort &&
        find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
}
hash="$(
    {
        echo "busybox $(dpkg-query -W -f='${Version}' busybox-static) $(sha256sum < "$busybox")"
        echo "e2fsprogs $(dpkg-query -W -f='${Version}' e2fsprogs)"
        echo "size $ext4_size"
        echo "script"; cat "${BASH_SOURCE[0]}"
        echo "init"; cat "$here/init"
        echo "selftest"; cat "$here/firesharp-selftest.sh"
        echo "overlay"; tree_digest "$here/overlay"
        for d in $extra_dirs; do echo "extra $d"; tree_digest "$d"; done
    } | sha256sum | cut -c1-16
)"
out="$cache/rootfs/$hash"

link_results() {
    mkdir -p "$guest_dir"
    ln -sfn "$out/initramfs.cpio" "$guest_dir/initramfs.cpio"
    ln -sfn "$out/rootfs.ext4" "$guest_dir/rootfs.ext4"
    log "$guest_dir/{initramfs.cpio,rootfs.ext4} -> $out"
}

if [[ -f "$out/.done" ]]; then
    log "up to date ($hash)"
    link_results
    exit 0
fi

# --- Assemble the tree ---------------------------------------------------------------

mkdir -p "$out"
tree="$out/tree"
rm -rf "$tree"
mkdir -p "$tree"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,root,mnt,var,etc/firesharp/start.d}
ln -s ../tmp "$tree/var/tmp"
cp "$busybox" "$tree/bin/busybox"
# Every applet as /bin/<name>, except busybox's own init (PID 1 is /init).
for applet in $("$busybox" --list); do
    case "$applet" in busybox | init | linuxrc) continue ;; esac
    ln -s busybox "$tree/bin/$applet"
done
install -m 0755 "$here/init" "$tree/init"
# With a disk root the kernel looks for /sbin/init.
ln -s ../init "$tree/sbin/init"
install -m 0755 "$here/firesharp-selftest.sh" "$tree/etc/firesharp-selftest.sh"
cp -a "$here/overlay/." "$tree/"
for d in $extra_dirs; do
    log "adding $d"
    cp -a "$d/." "$tree/"
done
chmod 1777 "$tree/tmp"
chmod 0700 "$tree/root"

# --- Pack -------------------------------------------------------------------------

uuid="$(echo "$hash" | sha256sum | sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12}).*/\1-\2-\3-\4-\5/')"
fakeroot -- "${BASH_SOURCE[0]}" --pack "$tree" "$out" "$ext4_size" "$uuid"

# Sanity checks on what the kernel will see.
list="$(cpio -it --quiet < "$out/initramfs.cpio.tmp")"
for f in init bin/busybox dev/console sbin/init; do
    grep -qx "$f" <<< "$list" || die "initramfs lacks /$f"
done
e2fsck -fn "$out/rootfs.ext4.tmp" > /dev/null 2>&1 || die "e2fsck reports errors in rootfs.ext4"

rm -rf "$tree"
mv "$out/initramfs.cpio.tmp" "$out/initramfs.cpio"
mv "$out/rootfs.ext4.tmp" "$out/rootfs.ext4"
# Shared base images: open read-only, or copy before writing.
chmod a-w "$out/initramfs.cpio" "$out/rootfs.ext4"
touch "$out/.done"
log "initramfs.cpio $(stat -c %s "$out/initramfs.cpio") bytes, rootfs.ext4 $ext4_size" \
    "($(du -k "$out/rootfs.ext4" | cut -f1) KiB allocated)"
link_results
