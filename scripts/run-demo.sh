#!/usr/bin/env bash
# `make run`: FireSharp doing its job on the default guest, the way a platform runs it: the daemon
# (`firesharp serve`) on a temporary socket and state directory, the default Linux guest created and
# started through the gRPC API (`firesharp vm ...`), its console streamed until the guest powers off,
# then the VM deleted and the daemon stopped. A tiny PVH guest through `firesharp run` comes first.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath build/firesharp)
GUEST_DIR=$(realpath build/guest)

if [ -d /sys/module/kvm_pvm ]; then
  echo "== This host's KVM is PVM (no hardware virtualization): guest kernel code is emulated,"
  echo "== so the Linux guest below takes a minute or two to boot here (milliseconds on bare-metal KVM)."
fi

echo
echo "== 1. firesharp run: a tiny guest (build/guests/hello.elf) in the foreground"
start=$(date +%s%N)
"$BIN" run --kernel build/guests/hello.elf
echo "== exited $? after $(( ($(date +%s%N) - start) / 1000000 )) ms (process start to guest reset)"

WORK=$(mktemp -d /tmp/firesharp-run.XXXXXX)
SOCK=$WORK/firesharp.sock
cleanup() {
  [ -n "${DAEMON:-}" ] && kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
vm() { "$BIN" vm "$@" --socket "$SOCK"; }

echo
echo "== 2. the daemon: firesharp serve (socket $SOCK)"
"$BIN" serve --Socket="$SOCK" --StateDir="$WORK/state" --StopVmsOnShutdown=true --LogLevel=Warning &
DAEMON=$!
for _ in $(seq 1 200); do [ -S "$SOCK" ] && break; sleep 0.05; done
[ -S "$SOCK" ] || { echo "the daemon did not start" >&2; exit 1; }

echo "== firesharp vm create default: build/guest/vmlinux, root filesystem rootfs.ext4 on virtio-blk (read-only: the cached image), 256 MiB"
vm create default --kernel "$GUEST_DIR/vmlinux" --mem-mib 256 --label demo=yes \
  --drive "id=rootfs,path=$GUEST_DIR/rootfs.ext4,ro,root" \
  --cmdline "console=ttyS0 reboot=k panic=-1 pci=off nomodule i8042.noaux i8042.nomux i8042.dumbkbd firesharp.script=1 firesharp.poweroff=1" \
  --start
vm ls
echo "== firesharp vm console default (until the guest powers off)"
start=$(date +%s%N)
vm console default --no-input --timeout 0 &
CONSOLE=$!
# The console stream stays open after the guest ends; watch the VM's state instead.
for _ in $(seq 1 1800); do
  state=$(vm get default --json | python3 -c 'import json,sys; print(json.load(sys.stdin).get("state",""))')
  case "$state" in *RUNNING*|*CREAT*|*PAUSED*|*running*|*created*|*paused*) sleep 0.5 ;; *) break ;; esac
done
sleep 0.5; kill "$CONSOLE" 2>/dev/null; wait "$CONSOLE" 2>/dev/null || true
echo
echo "== the guest ended after $(( ($(date +%s%N) - start) / 1000000 )) ms; firesharp vm get default:"
vm get default
echo "== firesharp vm rm default"
vm rm default
vm ls
