#!/usr/bin/env bash
# `make bench-api`: latency of GetVm and ListVms through the real daemon (Unix socket, one worker process
# per VM) with 100 VMs, p50 and p99, client in a separate process. A report, not a test.
#   BENCH_API_VMS (100), BENCH_API_GETS (2000), BENCH_API_LISTS (300), BENCH_API_START (0: VMs created
#   but not started; 1: running counter.elf guests), FIRESHARP_BIN (build/firesharp)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=${FIRESHARP_BIN:-build/firesharp}
GUEST=$(realpath build/guests/counter.elf)
WORK=$(mktemp -d /tmp/fsbench.XXXXXX)
SOCK=$WORK/api.sock
cleanup() {
  [ -n "${DAEMON:-}" ] && kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "FireSharp API latency, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
if [ -d /sys/module/kvm_pvm ]; then echo "Host: PVM (software virtualization); API latency is daemon-side cost, measured here."; fi
echo "CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1), $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
"$BIN" serve --Socket="$SOCK" --StateDir="$WORK/state" --StopVmsOnShutdown=true --LogLevel=Warning --MaxVms=1000 --AllowedPathRoots="$(dirname "$GUEST")" &
DAEMON=$!
for _ in $(seq 1 200); do [ -S "$SOCK" ] && break; sleep 0.05; done
start=""
[ "${BENCH_API_START:-0}" = 1 ] && start=--start
"$BIN" vm --socket "$SOCK" bench --kernel "$GUEST" --vms "${BENCH_API_VMS:-100}" --gets "${BENCH_API_GETS:-2000}" --lists "${BENCH_API_LISTS:-300}" $start
echo "daemon RSS after the run: $(awk '/VmRSS/{print $2, $3}' /proc/$DAEMON/status)"
