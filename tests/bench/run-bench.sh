#!/usr/bin/env bash
# FireSharp side-by-side benchmarks P1-P6 and P9 (`make bench`, which builds the inputs first).
#
#   P1  process start -> guest exit, hello.elf: FireSharp vs QEMU microvm (wall + CPU, median/p90)
#   P2  port-I/O exits/s, portio-loop.elf: FireSharp vs the C reference runner (and QEMU)
#   P3  peak RSS of the per-VM worker (build/firesharp-vmm) with an idle 128 MiB guest (counter.elf), and of
#       `firesharp run`: FireSharp vs QEMU; plus what each NativeAOT setting saves (tests/bench/worker-size.results)
#   P4  snapshot restore -> guest running, 128 MiB counter.elf snapshot (target <= 5 ms)
#   P5  snapshot restores per second, each in a new process, on this machine's cores (target >= 50/s)
#   P6  virtio-blk read/write MiB/s, virtio-blk-bench.elf (ring-3 driver): FireSharp vs QEMU microvm
#   P9  density: N idle 128 MiB clones (idle.elf snapshot) restored through the daemon: per-VM PSS, restores/s,
#       the daemon's memory, limits (`make bench-density` runs P9 alone)
#
# The measuring and the method notes are in tests/bench/bench.py (its docstring). This wrapper
# checks the inputs, prints where the figures were measured, and runs it under an overall timeout.
# It is a report, not a test: it exits 0 when a target is missed and non-zero only when something
# fails to run.
#
# Knobs (environment): BENCH_P1_RUNS (12), BENCH_P2_RUNS (5), BENCH_P2_N (100000),
# BENCH_P2_QEMU (1 = also time QEMU in P2), BENCH_P3_HOLD (2 s), BENCH_P4_RUNS (20), BENCH_P4_QEMU_RUNS (10),
# BENCH_P5_COUNT (60), BENCH_P5_PARALLEL (4), BENCH_JAIL (1: P1, P4 and P5 also through a worker with the jail
# off and on, as root), BENCH_P6_ROUNDS (5),
# BENCH_P6_SECONDS (1 s per measured run), BENCH_P6_IMG_MIB (256), BENCH_P6_BUDGET (45 s: no new
# round after that), BENCH_P9_COUNTS (200,500,1000: the N to reach, in order), BENCH_P9_PARALLEL (8 restores in
# flight), BENCH_P9_STEP_TIMEOUT (300 s per N), BENCH_P9_SERVE_ARGS (more daemon settings for P9, e.g. --Jail=false), BENCH_ONLY (p1,p2,p3,p4,p5,p6,p9), BENCH_TIMEOUT (900 s for the
# whole run), FIRESHARP_BIN, FIRESHARP_WORKER_BIN, PORTIO_RUNNER, GUEST_OUT, QEMU.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

FIRESHARP_BIN=${FIRESHARP_BIN:-build/firesharp}
FIRESHARP_WORKER_BIN=${FIRESHARP_WORKER_BIN:-build/firesharp-vmm}
PORTIO_RUNNER=${PORTIO_RUNNER:-build/bench/portio-runner}
GUEST_OUT=${GUEST_OUT:-build/guests}
QEMU=${QEMU:-qemu-system-x86_64}

die() { echo "bench: $*" >&2; exit 1; }

for f in "$FIRESHARP_BIN" "$FIRESHARP_WORKER_BIN" "$PORTIO_RUNNER"; do
  [ -x "$f" ] || die "$f is missing (run: make build guests portio-runner)"
done
for g in hello portio-loop counter virtio-blk-bench idle; do
  [ -f "$GUEST_OUT/$g.elf" ] || die "$GUEST_OUT/$g.elf is missing (run: make guests)"
done
command -v "$QEMU" >/dev/null || die "$QEMU not found (Debian package qemu-system-x86; make deps)"
command -v python3 >/dev/null || die "python3 not found (make deps)"
command -v timeout >/dev/null || die "timeout (coreutils) not found"
[ -r /dev/kvm ] && [ -w /dev/kvm ] || die "/dev/kvm is not usable by $(id -un)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/firesharp-bench.XXXXXX")
# Whatever is still running from the work directory (P9's daemon and workers, after a timeout killed the
# bench before its own cleanup): their command lines name $WORK, which is unique to this run.
kill_leftovers() {
  local pid pids=()
  for pid in $(grep -lsF "$WORK/" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3); do
    # (not this shell, and not the grep that listed itself and has ended)
    [ "$pid" != $$ ] && [ "$pid" != "$BASHPID" ] && grep -qsF "$WORK/" "/proc/$pid/cmdline" && pids+=("$pid")
  done
  [ ${#pids[@]} -eq 0 ] && return 0
  echo "bench: killing ${#pids[@]} leftover processes of this run" >&2
  kill -KILL "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 1 100); do grep -qsF "$WORK/" /proc/[0-9]*/cmdline 2>/dev/null || break; sleep 0.1; done
}
cleanup() { kill_leftovers; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
echo "FireSharp benchmarks P1-P6, P9, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
if [ -d /sys/module/kvm_pvm ]; then
  echo "Host: measured on PVM (software virtualization), not hardware KVM. Figures are PVM figures."
else
  if grep -qwE 'vmx|svm' /proc/cpuinfo; then
    echo "Host: hardware KVM ($(grep -qw vmx /proc/cpuinfo && echo Intel VMX || echo AMD SVM))"
  else
    echo "Host: KVM without vmx/svm CPU flags and without kvm_pvm (unknown backing)"
  fi
fi
echo "CPU: ${cpu:-unknown}, $(nproc) cores; kernel $(uname -r); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "FireSharp: $FIRESHARP_BIN ($(git rev-parse --short HEAD 2>/dev/null || echo 'no git')$(git diff --quiet HEAD -- src 2>/dev/null || echo ', src modified')); worker: $FIRESHARP_WORKER_BIN; peer: $("$QEMU" --version | head -n1); C runner: $PORTIO_RUNNER"
[ -x /usr/bin/time ] || echo "note: /usr/bin/time is missing (Debian package 'time'); P3 reads the VMM's VmHWM from /proc just before SIGTERM instead"
echo

set +e
timeout -k 30 "${BENCH_TIMEOUT:-900}" python3 -u tests/bench/bench.py \
  --work "$WORK" --firesharp "$FIRESHARP_BIN" --worker "$FIRESHARP_WORKER_BIN" --runner "$PORTIO_RUNNER" --guests "$GUEST_OUT" --qemu "$QEMU" \
  --p1-runs "${BENCH_P1_RUNS:-12}" --p2-runs "${BENCH_P2_RUNS:-5}" --p2-n "${BENCH_P2_N:-100000}" \
  --p2-qemu "${BENCH_P2_QEMU:-1}" --p3-hold "${BENCH_P3_HOLD:-2}" \
  --p4-runs "${BENCH_P4_RUNS:-20}" --p4-qemu-runs "${BENCH_P4_QEMU_RUNS:-10}" --p5-count "${BENCH_P5_COUNT:-60}" --p5-parallel "${BENCH_P5_PARALLEL:-4}" --jail "${BENCH_JAIL:-1}" \
  --p6-rounds "${BENCH_P6_ROUNDS:-5}" --p6-seconds "${BENCH_P6_SECONDS:-1}" --p6-img-mib "${BENCH_P6_IMG_MIB:-256}" \
  --p6-budget "${BENCH_P6_BUDGET:-45}" --p9-counts "${BENCH_P9_COUNTS:-200,500,1000}" --p9-parallel "${BENCH_P9_PARALLEL:-8}" \
  --p9-step-timeout "${BENCH_P9_STEP_TIMEOUT:-300}" --only "${BENCH_ONLY:-p1,p2,p3,p4,p5,p6,p9}"
rc=$?
set -e
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  echo "bench: FAILED: the whole run exceeded ${BENCH_TIMEOUT:-900} s" >&2
fi
exit "$rc"
