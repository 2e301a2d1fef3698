#!/usr/bin/env bash
# make fuzz: builds tests/fuzz/FireSharp.Fuzz, instruments the FireSharp assemblies in a copy of its output with
# sharpfuzz, runs every target (or FUZZ_TARGETS) under afl-fuzz for FUZZ_SECONDS each, starting from the
# committed seeds in tests/fuzz/corpus/<target>, and prints a table. Exits 1 if any target crashed or hung;
# the inputs are then in build/fuzz/out/<target>/default/{crashes,hangs} (save each under tests/fuzz/crashes/<target>/).
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${FUZZ_SECONDS:-60}
timeout_ms=${FUZZ_TIMEOUT_MS:-10000}
work=build/fuzz
dotnet build tests/fuzz/FireSharp.Fuzz/FireSharp.Fuzz.csproj -c "${CONFIGURATION:-Release}" --nologo -v quiet
dotnet tool restore >/dev/null
rm -rf "$work/bin" && mkdir -p "$work" && cp -r "tests/fuzz/FireSharp.Fuzz/bin/${CONFIGURATION:-Release}/net10.0" "$work/bin"
# The code under test, not the harness (FireSharp.Fuzz*) nor the libraries it calls.
for dll in "$work"/bin/FireSharp.*.dll; do
  case "$(basename "$dll")" in FireSharp.Fuzz*) continue ;; esac
  dotnet sharpfuzz "$dll" >/dev/null
done
targets=${FUZZ_TARGETS:-$(dotnet "$work/bin/FireSharp.Fuzz.dll" list | awk '{print $1}')}

export AFL_SKIP_BIN_CHECK=1 AFL_NO_UI=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1
stat() { sed -n "s/^$2 *: *//p" "$1" 2>/dev/null | head -n1; }
rows=()
n=$(wc -w <<<"$targets"); i=0
for t in $targets; do
  i=$((i + 1))
  out="$work/out/$t"; rm -rf "$out"; mkdir -p "$out"
  echo "fuzz [$i/$n] $t: ${seconds}s"
  afl-fuzz -i "tests/fuzz/corpus/$t" -o "$out" -t "$timeout_ms" -m none -V "$seconds" \
    -- dotnet "$work/bin/FireSharp.Fuzz.dll" "$t" >"$out/afl.log" 2>&1 &
  pid=$!
  # Progress every 10 s from afl's own statistics.
  while kill -0 "$pid" 2>/dev/null; do
    sleep 10
    s="$out/default/fuzzer_stats"
    [ -f "$s" ] && echo "  $t: $(stat "$s" execs_done) execs, $(stat "$s" corpus_count) paths, $(stat "$s" saved_crashes) crashes, $(stat "$s" saved_hangs) hangs"
  done
  if ! wait "$pid"; then echo "afl-fuzz failed for $t; the end of its log:"; tail -n 30 "$out/afl.log"; exit 1; fi
  s="$out/default/fuzzer_stats"
  rows+=("$t|$(stat "$s" execs_done)|$(stat "$s" execs_per_sec)|$(stat "$s" corpus_count)|$(stat "$s" saved_crashes)|$(stat "$s" saved_hangs)")
done

echo
printf '| %-15s | %12s | %9s | %6s | %7s | %5s |\n' target executions "execs/s" paths crashes hangs
printf '|%s|%s|%s|%s|%s|%s|\n' "-----------------" "--------------" "-----------" "--------" "---------" "-------"
total_exec=0; total_crash=0; total_hang=0
for r in "${rows[@]}"; do
  IFS='|' read -r t e r2 p c h <<<"$r"
  # afl's execs_per_sec is the recent rate; the average over the run is what the table shows.
  avg=$(awk -v e="$e" -v s="$seconds" 'BEGIN { printf "%.0f", e / s }')
  printf '| %-15s | %12s | %9s | %6s | %7s | %5s |\n' "$t" "$e" "$avg" "$p" "$c" "$h"
  total_exec=$((total_exec + e)); total_crash=$((total_crash + c)); total_hang=$((total_hang + h))
done
printf '| %-15s | %12s | %9s | %6s | %7s | %5s |\n' total "$total_exec" "" "" "$total_crash" "$total_hang"
echo "fuzz: ${seconds}s per target, inputs and findings in $work/out/<target>/default"
[ "$total_crash" = 0 ] && [ "$total_hang" = 0 ]
