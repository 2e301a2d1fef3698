#!/usr/bin/env bash
# make bench-boot: VMM process start -> guest boot-done (the /init write of 123 to MMIO 0xC0000000)
# for the default Linux guest, as vmlinux (64-bit boot protocol) and as bzImage. On a bare-metal KVM
# host this gives the real figure; on a PVM host it says so, and the figures are PVM figures.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${FIRESHARP_BIN:-build/firesharp}
RUNS=${BOOT_RUNS:-1}
CMDLINE="console=ttyS0 reboot=k panic=-1 pci=off nomodule i8042.noaux i8042.nomux i8042.dumbkbd quiet firesharp.poweroff=1"

if [ -d /sys/module/kvm_pvm ]; then
  host="PVM (software virtualization: guest kernel code is emulated) - NOT a hardware KVM figure"
else
  host="hardware KVM"
fi
echo "FireSharp boot benchmark, $(date -u '+%F %T') UTC, $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "Host: $host; CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
echo "Guest: 256 MiB, 1 vCPU, initramfs build/guest/initramfs.cpio; boot-done = /init's boot-timer write"
printf '%-10s %5s %16s %16s %8s\n' kernel run "boot-done (ms)" "VM exit (ms)" result
for kernel in vmlinux bzImage; do
  for run in $(seq 1 "$RUNS"); do
    log=$(mktemp)
    start=$(date +%s%N)
    if timeout 900 "$BIN" run --kernel "build/guest/$kernel" --initrd build/guest/initramfs.cpio --mem-mib 256 \
         --cmdline "$CMDLINE" --serial /dev/null --log-level Information 2>"$log"; then result=ok; else result="exit $?"; fi
    total=$(( ($(date +%s%N) - start) / 1000000 ))
    done_ms=$(sed -n 's/.*guest boot done after \([0-9.]*\) ms.*/\1/p' "$log" | head -n1)
    printf '%-10s %5s %16s %16s %8s\n' "$kernel" "$run" "${done_ms:-none}" "$total" "$result"
    rm -f "$log"
  done
done
