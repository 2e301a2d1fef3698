#!/usr/bin/env bash
# Boots the guest kernel and root filesystem under QEMU TCG (software
# emulation; no KVM needed) and checks what /init prints. Run it after
# `make kernel rootfs`; `make guest-smoke` does both.
#
#  1. bzImage + initramfs.cpio, 1 vCPU: /init, the self-test, reboot.
#  2. vmlinux through PVH + rootfs.ext4 on virtio-mmio blk, 2 vCPUs.
#  3. The PVM syscall patch: a static test program (syscall-fault.c) enters
#     the kernel through a user-mode fault at entry_SYSCALL_64.
#
# QEMU needs -device i8042, or reboot=k cannot end the VM, and acpi=off, so
# that QEMU lists the virtio-mmio devices on the kernel command line.
# Environment: FIRESHARP_GUEST_DIR (default build/guest), FIRESHARP_CACHE.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
guest="${FIRESHARP_GUEST_DIR:-build/guest}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

log() { printf '[smoke] %s\n' "$*" >&2; }
command -v qemu-system-x86_64 > /dev/null || { log "qemu-system-x86_64 not installed (apt-get install qemu-system-x86)"; exit 1; }
for f in vmlinux bzImage System.map initramfs.cpio rootfs.ext4; do
    [[ -e "$guest/$f" ]] || { log "$guest/$f missing: run make kernel rootfs"; exit 1; }
done

failures=0
# boot NAME EXPECTED... -- QEMU ARGS...: boot, then look for each expected line.
boot() {
    local name="$1"; shift
    local expect=()
    while [[ "$1" != -- ]]; do expect+=("$1"); shift; done
    shift
    local out="$work/$name.log" start=$SECONDS rc=0
    timeout 120 qemu-system-x86_64 -M microvm,acpi=off -m 256 -nographic -no-reboot \
        -device i8042 "$@" < /dev/null > "$out" 2>&1 || rc=$?
    local ok=1 e
    ((rc == 0)) || { log "$name: qemu exit status $rc"; ok=0; }
    for e in "${expect[@]}"; do
        grep -qF -- "$e" "$out" || { log "$name: missing '$e'"; ok=0; }
    done
    if ((ok)); then
        log "$name: ok ($((SECONDS - start)) s)"
    else
        failures=$((failures + 1))
        sed 's/^/    /' "$out" | tail -n 30 >&2
    fi
}

base="console=ttyS0 reboot=k panic=-1 quiet"

boot initramfs FIRESHARP-INIT-OK SELFTEST-OK "cpus: 1" "reboot: Restarting system" -- \
    -kernel "$guest/bzImage" -initrd "$guest/initramfs.cpio" \
    -append "$base firesharp.script=1 firesharp.poweroff=1"

# The cached image is a shared read-only base; boot a private copy.
cp --sparse=always "$guest/rootfs.ext4" "$work/rootfs.ext4"
chmod u+w "$work/rootfs.ext4"
boot ext4-pvh-smp2 FIRESHARP-INIT-OK SELFTEST-OK "cpus: 2" "root: /dev/root / ext4" -- \
    -smp 2 -kernel "$guest/vmlinux" \
    -device virtio-blk-device,drive=root -drive id=root,file="$work/rootfs.ext4",format=raw,if=none \
    -append "$base root=/dev/vda rw firesharp.script=1 firesharp.poweroff=1"

entry="$(awk '$3 == "entry_SYSCALL_64" { print $1 }' "$guest/System.map")"
mkdir -p "$work/extra/usr/bin" "$work/extra/etc"
gcc -O1 -static -o "$work/extra/usr/bin/syscall-fault" "$here/syscall-fault.c"
printf '#!/bin/sh\n/usr/bin/syscall-fault %s\n' "$entry" > "$work/extra/etc/syscall-fault.sh"
ROOTFS_EXTRA_DIRS="$work/extra" FIRESHARP_GUEST_DIR="$work/guest" \
    "$here/../../rootfs/build.sh" 2> "$work/rootfs.log" || { cat "$work/rootfs.log" >&2; exit 1; }
boot syscall-fault-patch SYSCALL-FAULT-OK -- \
    -kernel "$guest/vmlinux" -initrd "$work/guest/initramfs.cpio" \
    -append "$base firesharp.script=/etc/syscall-fault.sh firesharp.poweroff=1"

if ((failures)); then
    log "$failures check(s) failed"
    exit 1
fi
log "all checks passed"
