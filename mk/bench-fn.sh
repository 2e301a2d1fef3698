#!/usr/bin/env bash
# make bench-fn: the function benchmark (firesharp fn bench) against a daemon on a temporary socket.
# The daemon writes its spans to a file (TraceFile), which fn bench reads for P7: the host-side time of a warm
# invoke, apart from the vsock transit and the guest's in-VM time, for the shell sample and the C# example
# (build/examples/csharp-code.ext4, skipped when missing). FIRESHARP_BIN and FIRESHARP_GUEST_DIR override
# build/firesharp and build/guest.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${FIRESHARP_BIN:-build/firesharp}")
GUEST_DIR=$(realpath "${FIRESHARP_GUEST_DIR:-build/guest}")
WORK=$(mktemp -d /tmp/firesharp-bench-fn.XXXXXX)
SOCK=$WORK/fs.sock
# The images themselves (build/guest links into the cache; the path policy follows no absolute symlink).
KERNEL=$(realpath "$GUEST_DIR/vmlinux")
ROOTFS=$(realpath "$GUEST_DIR/rootfs.ext4")
cleanup() {
  if [ -n "${DAEMON:-}" ]; then kill "$DAEMON" 2>/dev/null || true; wait "$DAEMON" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
"$BIN" serve --Socket="$SOCK" --StateDir="$WORK/state" --StopVmsOnShutdown=true --LogLevel=Warning \
  --FunctionKernel="$KERNEL" --FunctionRootfs="$ROOTFS" --TraceFile="$WORK/spans.jsonl" \
  --AllowedPathRoots="$PWD,$(dirname "$KERNEL"),$(dirname "$ROOTFS")" \
  --MetricsListen=off 2> "$WORK/daemon.log" &
DAEMON=$!
for _ in $(seq 1 200); do [ -S "$SOCK" ] && break; sleep 0.05; done
[ -S "$SOCK" ] || { cat "$WORK/daemon.log" >&2; echo "the daemon did not start" >&2; exit 1; }
CSHARP=()
if [ -f build/examples/csharp-code.ext4 ]; then CSHARP=(--csharp-code build/examples/csharp-code.ext4 --csharp-warm "${BENCH_FN_WARM_CS:-500}"); fi
"$BIN" fn bench --socket "$SOCK" --timeout 0 --code examples/shell --warm "${BENCH_FN_WARM:-200}" --cold "${BENCH_FN_COLD:-3}" \
  --trace-file "$WORK/spans.jsonl" "${CSHARP[@]}" \
  || { echo "---- daemon log" >&2; tail -50 "$WORK/daemon.log" >&2; exit 1; }
