#!/usr/bin/env bash
# `make run`: FireSharp doing its job, the way a platform runs it.
#   1. `firesharp run`: a tiny PVH guest in the foreground (milliseconds).
#   2. The daemon (`firesharp serve`) on a temporary socket and state directory, and a Lambda-style
#      function through `firesharp fn`: the busybox shell runtime of examples/shell (packed by the
#      daemon into an ext4 code image) on the default Linux guest. It is invoked cold (a boot), warm
#      (the same VM), then twice at once with snapshot start on: one warm, one restored from the
#      snapshot the first VM took after its init (a snapshot cold start).
# Everything goes when the script ends (the daemon shuts its function VMs down).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${FIRESHARP_BIN:-build/firesharp}")
GUEST_DIR=$(realpath "${FIRESHARP_GUEST_DIR:-build/guest}")
CODE=$(realpath examples/shell)

if [ -d /sys/module/kvm_pvm ]; then
  echo "== This host's KVM is PVM (no hardware virtualization): guest kernel code is emulated, so a"
  echo "== Linux boot (a boot cold start) takes 1-2 minutes here (~125 ms on bare-metal KVM), and each"
  echo "== invocation of the shell runtime several seconds (every fork is emulated kernel work)."
fi

echo
echo "== 1. firesharp run: a tiny guest (build/guests/hello.elf) in the foreground"
start=$(date +%s%N)
"$BIN" run --kernel build/guests/hello.elf
echo "== exited $? after $(( ($(date +%s%N) - start) / 1000000 )) ms (process start to guest reset)"

WORK=$(mktemp -d /tmp/firesharp-run.XXXXXX)
SOCK=$WORK/firesharp.sock
cleanup() {
  if [ -n "${DAEMON:-}" ]; then
    kill "$DAEMON" 2>/dev/null || true
    wait "$DAEMON" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
fn() { "$BIN" fn "$@" --socket "$SOCK" --timeout 1800; }
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

echo
echo "== 2. the daemon: firesharp serve (socket $SOCK; functions run on $GUEST_DIR/vmlinux + rootfs.ext4)"
# On PVM, a 128 MB function's Lambda CPU share (72 millicpus) makes each emulated guest fork crawl: an
# invocation took over 3 minutes. There the demo gives function VMs their default quota (FunctionCpuShare=false);
# on bare-metal KVM it keeps Lambda's share (docs/isolation.md).
SHARE=()
if [ -d /sys/module/kvm_pvm ]; then
  SHARE=(--FunctionCpuShare=false)
  echo "== (PVM host: functions run without Lambda's CPU share, --FunctionCpuShare=false)"
fi
# The daemon opens only files under AllowedPathRoots, and follows no symlink out of a root (docs/security.md):
# build/guest's files are symlinks into the kernel cache, so the roots are their real directories (and the code).
KERNEL=$(realpath "$GUEST_DIR/vmlinux")
ROOTFS=$(realpath "$GUEST_DIR/rootfs.ext4")
ROOTS="$(dirname "$KERNEL"),$(dirname "$ROOTFS"),$CODE"
"$BIN" serve --Socket="$SOCK" --StateDir="$WORK/state" --StopVmsOnShutdown=true --LogLevel=Warning \
  --AllowedPathRoots="$ROOTS" --FunctionKernel="$KERNEL" --FunctionRootfs="$ROOTFS" "${SHARE[@]}" &
DAEMON=$!
for _ in $(seq 1 200); do [ -S "$SOCK" ] && break; sleep 0.05; done
[ -S "$SOCK" ] || { echo "the daemon did not start" >&2; exit 1; }

echo
echo "== firesharp fn create hello --code examples/shell --handler function.handler --memory 128 --snapshot-start"
fn create hello --code "$CODE" --handler function.handler --memory 128 --fn-timeout 300 --snapshot-start
echo
echo "== fn invoke hello (cold: boot the VM, init the runtime, then snapshot it for later cold starts)"
t=$(date +%s%N)
fn invoke hello --payload '{"n":1}' --verbose
echo "== round trip $(ms "$t") ms"
echo
echo "== fn invoke hello (warm: the same VM, runtime already initialized)"
t=$(date +%s%N)
fn invoke hello --payload '{"n":2}'
echo "== round trip $(ms "$t") ms"
echo
echo "== two invocations at once: one takes the idle VM (warm), the other gets a new VM restored from the snapshot"
t=$(date +%s%N)
fn invoke hello --payload '{"n":3}' > "$WORK/a.out" 2> "$WORK/a.err" &
A=$!
fn invoke hello --payload '{"n":4}' > "$WORK/b.out" 2> "$WORK/b.err" &
B=$!
wait $A || true
wait $B || true
cat "$WORK/a.out" "$WORK/a.err" "$WORK/b.out" "$WORK/b.err"
echo "== both done after $(ms "$t") ms"
echo
fn get hello
fn ls
echo
echo "== firesharp fn rm hello"
fn rm hello
