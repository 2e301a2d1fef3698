#!/usr/bin/env bash
# `make bench-worker-size`: what each NativeAOT size setting of the worker (src/Worker/FireSharp.Worker.csproj)
# saves in resident memory. Publishes build/firesharp-vmm once per variant (the csproj as it is, and the csproj
# with one setting reverted or one candidate added), then measures each variant hosting an idle 128 MiB guest
# (idle.elf, created and started through the worker protocol as the daemon does), interleaved, and writes
# the table to tests/bench/worker-size.results (committed; `make bench` prints it beside P3).
#   WORKER_SIZE_ROUNDS (5), WORKER_SIZE_ONLY (comma-separated variant names), WORKER_SIZE_KEEP (1: keep the
#   work directory), WORKER_SIZE_OUT (results file), WORKER_SIZE_EXTRA (more variants, already built, as
#   "name|path/to/firesharp-vmm|what it shows", separated by ';'; e.g. the worker of an earlier commit)
# Slow: one NativeAOT publish per variant (a few minutes each on 2 cores).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
DOTNET=${DOTNET:-dotnet}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/firesharp-worker-size.XXXXXX")
cleanup() { [ "${WORKER_SIZE_KEEP:-0}" = 1 ] && echo "kept $WORK" || rm -rf "$WORK"; }
trap cleanup EXIT
[ -f build/guests/idle.elf ] || { echo "worker-size: build/guests/idle.elf is missing (make guests)" >&2; exit 1; }

# name | MSBuild properties (-p:) | what the variant shows. Every setting the csproj applies is reverted once;
# "candidate" rows are settings it does not apply (see the csproj's comments for why).
VARIANTS=(
  "current||the csproj as committed"
  "no-size-pref|OptimizationPreference=|OptimizationPreference=Size reverted (blended)"
  "globalization|InvariantGlobalization=false|InvariantGlobalization reverted (ICU loaded)"
  "resource-keys|UseSystemResourceKeys=false|UseSystemResourceKeys reverted (exception messages kept)"
  "concurrent-gc|ConcurrentGarbageCollection=true|non-concurrent GC reverted (background GC)"
  "server-gc|ServerGarbageCollection=true|workstation GC reverted (server GC)"
  "eventsource|EventSourceSupport=true|EventSourceSupport=false reverted"
  "debugger|DebuggerSupport=true|DebuggerSupport=false reverted"
  "stacktrace|StackTraceSupport=true|StackTraceSupport=false reverted (method names in stack traces)"
  "plain|OptimizationPreference=;InvariantGlobalization=false;UseSystemResourceKeys=false;ConcurrentGarbageCollection=true;EventSourceSupport=true;DebuggerSupport=true;StackTraceSupport=true;StripSymbols=false|PublishAot with none of the settings"
  "dehydrate-off|IlcDehydrate=false|candidate: no dehydration (ld.so relocates the data instead)"
  "static|StaticExecutable=true;PositionIndependentExecutable=false;ObjCopyName=objcopy|candidate: static glibc, no PIE (ld.bfd makes no static-pie): no ASLR"
)
# name | environment of the current build | what: the runtime's memory knobs, which need no rebuild
RUNTIME_VARIANTS=(
  "gen0-256k|DOTNET_GCgen0size=40000|candidate: GC gen0 budget 256 KiB (GCgen0size, hex)"
  "heap-limit-32m|DOTNET_GCHeapHardLimit=2000000|candidate: GC heap hard limit 32 MiB (GCHeapHardLimit, hex)"
  "conserve-mem|DOTNET_GCConserveMemory=9|candidate: GCConserveMemory=9"
  "malloc-arena-1|MALLOC_ARENA_MAX=1|candidate: one glibc malloc arena"
)

only=",${WORKER_SIZE_ONLY:-},"
specs=()
for v in "${VARIANTS[@]}"; do
  IFS='|' read -r name props what <<<"$v"
  [ "$only" = ",," ] || [[ "$only" == *",$name,"* ]] || [ "$name" = current ] || continue
  args=()
  IFS=';' read -ra kv <<<"$props"
  for p in "${kv[@]}"; do [ -n "$p" ] && args+=("-p:$p"); done
  echo "worker-size: publishing $name ${args[*]:-}"
  # One artifacts path for all variants (the referenced projects compile once); the worker's own build output
  # is removed each time, because the incremental checks do not see changed properties.
  rm -rf "$WORK"/artifacts/obj/FireSharp.Worker/release* "$WORK"/artifacts/bin/FireSharp.Worker "$WORK"/artifacts/publish/FireSharp.Worker
  t0=$(date +%s)
  "$DOTNET" publish src/Worker/FireSharp.Worker.csproj -c Release -r linux-x64 --nologo -v quiet \
    --artifacts-path "$WORK/artifacts" -o "$WORK/$name" "${args[@]}" >"$WORK/$name.publish.log" 2>&1 \
    || { tail -20 "$WORK/$name.publish.log"; echo "worker-size: publishing $name failed" >&2; exit 1; }
  [ -x "$WORK/$name/firesharp-vmm" ] || { echo "worker-size: publishing $name made no $WORK/$name/firesharp-vmm" >&2; exit 1; }
  echo "  $(du -k "$WORK/$name/firesharp-vmm" | cut -f1) KiB in $(( $(date +%s) - t0 )) s"
  specs+=("$name|$WORK/$name/firesharp-vmm|$what")
done

for v in "${RUNTIME_VARIANTS[@]}"; do
  IFS='|' read -r name env what <<<"$v"
  [ "$only" = ",," ] || [[ "$only" == *",$name,"* ]] || continue
  specs+=("$name|$WORK/current/firesharp-vmm|$what|$env")
done
IFS=';' read -ra extra <<<"${WORKER_SIZE_EXTRA:-}"
for v in "${extra[@]}"; do [ -n "$v" ] && specs+=("$v"); done

python3 -u tests/bench/worker_size.py --work "$WORK" --guest build/guests/idle.elf --rounds "${WORKER_SIZE_ROUNDS:-5}" \
  --out "${WORKER_SIZE_OUT:-tests/bench/worker-size.results}" --commit "$(git rev-parse --short HEAD)" "${specs[@]}"
