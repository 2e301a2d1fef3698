#!/usr/bin/env bash
# Runs the xunit suite and prints a closing "N passed, N failed, N skipped" line.
# FIRESHARP_TEST_FILTER: a dotnet test --filter expression ('' = everything).
set -uo pipefail
cd "$(dirname "$0")/.."
results=$(mktemp -d)
args=(test tests/FireSharp.Tests/FireSharp.Tests.csproj -c Release --nologo
      --logger "trx;LogFileName=results.trx" --results-directory "$results"
      --logger "console;verbosity=normal")
if [ -n "${FIRESHARP_TEST_FILTER:-}" ]; then args+=(--filter "$FIRESHARP_TEST_FILTER"); fi
dotnet "${args[@]}"
rc=$?
trx="$results/results.trx"
if [ -f "$trx" ]; then
  counters=$(grep -o '<Counters [^>]*>' "$trx" | head -n1)
  get() { sed -n "s/.* $1=\"\([0-9]*\)\".*/\1/p" <<<"$counters"; }
  passed=$(get passed); failed=$(get failed); total=$(get total); executed=$(get executed)
  skipped=$(( ${total:-0} - ${executed:-0} ))
  echo "${passed:-0} passed, ${failed:-0} failed, ${skipped} skipped"
  if [ "${executed:-0}" = 0 ]; then echo "no test was executed"; rc=1; fi
  if [ "${failed:-0}" != 0 ]; then
    # Name every failed test with the first lines of its message last, where a log's tail shows it.
    python3 tests/trx-failures.py "$trx" || true
  fi
  # Kept for after-the-fact reading: a CI log shows only its tail.
  keep="${XDG_CACHE_HOME:-$HOME/.cache}/firesharp/test-results"
  mkdir -p "$keep" && cp "$trx" "$keep/$(date -u +%Y%m%dT%H%M%SZ).trx" && \
    ls -1t "$keep"/*.trx | tail -n +21 | xargs -r rm -f
fi
rm -rf "$results"
exit $rc
