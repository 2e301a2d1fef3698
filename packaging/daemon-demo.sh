#!/usr/bin/env bash
# The daemon end to end, without installing anything: start `firesharp serve` on a temporary socket and
# state directory, create a VM, stream its console, stop it, delete it, stop the daemon.
#   GUEST=build/guests/counter.elf (default; prints COUNTING then runs forever) or any kernel
#   MEM_MIB=32 CMDLINE=...   FIRESHARP=build/firesharp
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${FIRESHARP:-build/firesharp}
GUEST=$(realpath "${GUEST:-build/guests/counter.elf}")
WORK=$(mktemp -d /tmp/fsdemo.XXXXXX)
SOCK=$WORK/api.sock
export FIRESHARP_SOCKET=$SOCK
cleanup() {
  [ -n "${DAEMON:-}" ] && kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== starting: $BIN serve (socket $SOCK, state $WORK/state)"
# The daemon opens only files under AllowedPathRoots (docs/security.md): the guest's directory is one.
"$BIN" serve --Socket="$SOCK" --StateDir="$WORK/state" --StopVmsOnShutdown=true --LogLevel=Warning --AllowedPathRoots="$(dirname "$GUEST")" &
DAEMON=$!
for _ in $(seq 1 200); do [ -S "$SOCK" ] && break; sleep 0.05; done
[ -S "$SOCK" ] || { echo "daemon did not start" >&2; exit 1; }

echo "== firesharp vm create demo --kernel $GUEST --start"
"$BIN" vm create demo --kernel "$GUEST" --mem "${MEM_MIB:-32}M" ${CMDLINE:+--cmdline "$CMDLINE"} --label demo=yes --start
echo "== firesharp vm console demo (3 s)"
timeout -s INT 3 "$BIN" vm console demo --no-input || true
echo
echo "== firesharp vm ls"
"$BIN" vm ls
echo "== firesharp vm stop demo --grace 1"
"$BIN" vm stop demo --grace 1
echo "== firesharp vm rm demo"
"$BIN" vm rm demo
"$BIN" vm ls -o json
