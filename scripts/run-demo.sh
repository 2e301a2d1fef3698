#!/usr/bin/env bash
# `make run`: show FireSharp doing its job. A tiny PVH guest first (milliseconds), then the default
# Linux guest (our kernel + busybox initramfs) booted to /init, self-tested, and shut down.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/firesharp

if [ -d /sys/module/kvm_pvm ]; then
  echo "== This host's KVM is PVM (no hardware virtualization): guest kernel code is emulated,"
  echo "== so the Linux guest below takes about a minute to boot here (milliseconds on bare-metal KVM)."
fi

echo
echo "== 1. tiny guest: build/guests/hello.elf"
start=$(date +%s%N)
$BIN run --kernel build/guests/hello.elf
echo "== exited $? after $(( ($(date +%s%N) - start) / 1000000 )) ms (process start to guest reset)"

echo
echo "== 2. Linux guest: build/guest/vmlinux, root filesystem build/guest/rootfs.ext4 on virtio-blk /dev/vda"
echo "==    (read-only: it is the shared cached image), 256 MiB, 1 vCPU"
start=$(date +%s%N)
$BIN run --kernel build/guest/vmlinux --drive build/guest/rootfs.ext4:ro --mem-mib 256 \
  --cmdline "console=ttyS0 reboot=k panic=-1 pci=off nomodule i8042.noaux i8042.nomux i8042.dumbkbd firesharp.script=1 firesharp.poweroff=1" \
  --log-level Information
rc=$?
echo "== guest ended with exit code $rc after $(( ($(date +%s%N) - start) / 1000000 )) ms"
