#!/usr/bin/env bash
# Builds the FireSharp guest kernel (vmlinux + bzImage) from Debian's
# linux-source-6.1 package, with kernel-config/firesharp.config merged onto
# tinyconfig and kernel-config/patches/*.patch applied.
#
# Results are cached in $FIRESHARP_CACHE/kernel/<hash>/, where <hash> covers
# everything that decides the output: the source package version, the config
# fragment, the patches, this script and the compiler version. A second run
# with the same inputs does no work besides hashing and re-linking.
#
# Environment (all optional):
#   FIRESHARP_CACHE      cache root          (default: $HOME/.cache/firesharp)
#   FIRESHARP_GUEST_DIR  where links go      (default: build/guest, relative
#                                             to the current directory)
#   KERNEL_JOBS          make -j value       (default: nproc)
#   KERNEL_VERBOSE=1     show make's raw output instead of the counter
#
# Output (symlinks into the cache):
#   $FIRESHARP_GUEST_DIR/vmlinux        ELF with the PVH note
#   $FIRESHARP_GUEST_DIR/bzImage        boot protocol >= 2.12, XLF_KERNEL_64
#   $FIRESHARP_GUEST_DIR/kernel.config  the full .config that was built
#   $FIRESHARP_GUEST_DIR/System.map
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fragment="$here/firesharp.config"
cache="${FIRESHARP_CACHE:-$HOME/.cache/firesharp}"
guest_dir="${FIRESHARP_GUEST_DIR:-build/guest}"
jobs="${KERNEL_JOBS:-$(nproc)}"
pkg=linux-source-6.1
tarball=/usr/src/linux-source-6.1.tar.xz
arch=x86_64

log() { printf '[kernel] %s\n' "$*" >&2; }
die() { printf '[kernel] error: %s\n' "$*" >&2; exit 1; }

# --- Tools and the source package --------------------------------------------

need_pkgs=()
dpkg_installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]; }
for p in "$pkg" flex bison bc libelf-dev libssl-dev gcc make xz-utils patch; do
    dpkg_installed "$p" || need_pkgs+=("$p")
done
if ((${#need_pkgs[@]})); then
    log "installing: ${need_pkgs[*]}"
    sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get install -y --no-install-recommends "${need_pkgs[@]}" >&2 \
        || die "apt-get install ${need_pkgs[*]} failed"
fi
[[ -f "$tarball" ]] || die "$tarball missing after installing $pkg"
pkg_version="$(dpkg-query -W -f='${Version}' "$pkg")"

# --- Input hashes -------------------------------------------------------------

shopt -s nullglob
patches=("$here"/patches/*.patch)
shopt -u nullglob

# Source tree: package version + patches. Build: that + fragment + script +
# compiler (a different gcc gives a different kernel).
src_hash="$(
    {
        echo "pkg $pkg $pkg_version"
        for p in "${patches[@]}"; do echo "patch $(basename "$p")"; cat "$p"; done
    } | sha256sum | cut -c1-16
)"
build_hash="$(
    {
        echo "src $src_hash"
        echo "arch $arch"
        echo "cc $(gcc --version | head -n1)"
        echo "ld $(ld --version | head -n1)"
        echo "fragment"; cat "$fragment"
        echo "script"; cat "${BASH_SOURCE[0]}"
    } | sha256sum | cut -c1-16
)"

src_dir="$cache/kernel-src/$src_hash"
out_dir="$cache/kernel/$build_hash"
obj_dir="$out_dir/obj"

link_results() {
    mkdir -p "$guest_dir"
    local f
    for f in vmlinux bzImage System.map; do
        ln -sfn "$out_dir/$f" "$guest_dir/$f"
    done
    ln -sfn "$out_dir/config" "$guest_dir/kernel.config"
    log "$guest_dir/{vmlinux,bzImage,kernel.config,System.map} -> $out_dir"
}

if [[ -f "$out_dir/.done" ]]; then
    log "up to date ($pkg $pkg_version, build $build_hash)"
    link_results
    exit 0
fi

mkdir -p "$cache/kernel-src" "$cache/kernel"
# One builder at a time per cache (parallel `make` invocations, CI retries).
exec 9>"$cache/kernel/.lock"
flock 9
if [[ -f "$out_dir/.done" ]]; then link_results; exit 0; fi

# --- Extract and patch (once per package version + patch set) --------------------

if [[ ! -f "$src_dir/.done" ]]; then
    log "extracting $tarball -> $src_dir"
    tmp="$src_dir.tmp.$$"
    rm -rf "$tmp" "$src_dir"
    mkdir -p "$tmp"
    tar -xf "$tarball" -C "$tmp" --strip-components=1
    for p in "${patches[@]}"; do
        log "applying $(basename "$p")"
        patch -d "$tmp" -p1 --forward --batch --quiet < "$p" || die "patch $(basename "$p") does not apply"
    done
    # Out-of-tree builds need a pristine tree (no .config, no objects).
    touch "$tmp/.done"
    mv "$tmp" "$src_dir"
fi

# --- Configure ---------------------------------------------------------------------

kmake() { make -C "$src_dir" O="$obj_dir" ARCH="$arch" "$@"; }

mkdir -p "$obj_dir"
log "configuring: tinyconfig + $(basename "$fragment")"
# (Kconfig's "override: ... changes choice state" warnings are expected:
# the fragment overrides tinyconfig's choices. They go to config.log.)
{
    kmake -s tinyconfig &&
        KCONFIG_CONFIG="$obj_dir/.config" "$src_dir/scripts/kconfig/merge_config.sh" \
            -m -O "$obj_dir" "$obj_dir/.config" "$fragment" &&
        kmake -s olddefconfig
} > "$out_dir/config.log" 2>&1 || { cat "$out_dir/config.log" >&2; die "configuration failed"; }

# Every option in the fragment must have survived Kconfig's dependency
# resolution; a silently dropped option is a broken guest.
bad=0
while IFS= read -r line; do
    if [[ "$line" =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set ]]; then
        opt="${BASH_REMATCH[1]}"
        if grep -q "^$opt=" "$obj_dir/.config"; then
            log "config: $opt should be off but is $(grep "^$opt=" "$obj_dir/.config")"; bad=1
        fi
    elif [[ "$line" =~ ^(CONFIG_[A-Za-z0-9_]+)= ]]; then
        opt="${BASH_REMATCH[1]}"
        if ! grep -qxF "$line" "$obj_dir/.config"; then
            got="$(grep -E "^$opt=|^# $opt is not set" "$obj_dir/.config" || echo "absent")"
            log "config: wanted $line, got $got"; bad=1
        fi
    fi
done < "$fragment"
((bad == 0)) || die "config fragment not honoured (see above)"

# --- Build ---------------------------------------------------------------------

log "building vmlinux bzImage with -j$jobs in $obj_dir (log: $out_dir/build.log)"
start=$SECONDS
progress() {
    if [[ "${KERNEL_VERBOSE:-0}" == 1 ]]; then
        cat
        return
    fi
    # One line per make step ("CC kernel/fork.o"), prefixed with a counter
    # and the elapsed time, so a human can watch it move.
    {
        n=0
        while IFS= read -r line; do
            if [[ "$line" =~ ^\ \ ([A-Z][A-Z0-9_]*)\ +(.*)$ ]]; then
                n=$((n + 1)); el=$((SECONDS - start))
                printf '[kernel %4d %2d:%02d] %-8s %s\n' "$n" $((el / 60)) $((el % 60)) \
                    "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
            elif [[ "$line" == *warning:* || "$line" == *error:* || "$line" == *Error\ * ]]; then
                printf '%s\n' "$line"
            fi
        done
    }
}
if ! kmake -j"$jobs" vmlinux bzImage 2>&1 | tee "$out_dir/build.log" | progress; then
    tail -n 40 "$out_dir/build.log" >&2
    die "kernel build failed (full log: $out_dir/build.log)"
fi
elapsed=$((SECONDS - start))

# --- Check and publish -----------------------------------------------------------

vmlinux="$obj_dir/vmlinux"
bzimage="$obj_dir/arch/x86/boot/bzImage"
[[ -f "$vmlinux" && -f "$bzimage" ]] || die "build produced no vmlinux/bzImage"

# PVH entry: an ELF note of owner "Xen", type 0x12 (XEN_ELFNOTE_PHYS32_ENTRY).
readelf -n "$vmlinux" | awk '/^ *Xen / && /0x00000012/ { found = 1 } END { exit !found }' \
    || die "vmlinux has no PVH (Xen PHYS32_ENTRY) note"

# bzImage setup header: "HdrS" at 0x202, version at 0x206, xloadflags at 0x236.
magic="$(dd if="$bzimage" bs=1 skip=$((0x202)) count=4 status=none)"
[[ "$magic" == HdrS ]] || die "bzImage has no HdrS setup header"
proto="$(od -An -tu2 -j $((0x206)) -N2 "$bzimage" | tr -d ' ')"
xlf="$(od -An -tu2 -j $((0x236)) -N2 "$bzimage" | tr -d ' ')"
((proto >= 0x020c)) || die "bzImage boot protocol $(printf '%#x' "$proto") < 2.12"
((xlf & 1)) || die "bzImage lacks XLF_KERNEL_64"

cp "$vmlinux" "$out_dir/vmlinux"
cp "$bzimage" "$out_dir/bzImage"
cp "$obj_dir/.config" "$out_dir/config"
cp "$obj_dir/System.map" "$out_dir/System.map"
{
    echo "package=$pkg $pkg_version"
    echo "kernelrelease=$(cat "$obj_dir/include/config/kernel.release")"
    echo "build_seconds=$elapsed"
    printf 'boot_protocol=%d.%02d\n' $((proto >> 8)) $((proto & 0xff))
    echo "patches=$(for p in "${patches[@]}"; do basename "$p"; done | tr '\n' ' ')"
} > "$out_dir/info"
touch "$out_dir/.done"

log "built in $((elapsed / 60))m$((elapsed % 60))s: vmlinux $(stat -c %s "$out_dir/vmlinux") bytes," \
    "bzImage $(stat -c %s "$out_dir/bzImage") bytes, boot protocol $(printf '%d.%02d' $((proto >> 8)) $((proto & 0xff)))"
link_results
