#!/usr/bin/env bash
# Prints the plain closing line "N passed, N failed" summed over dotnet TRX files (a missing file counts as one failure).
passed=0; failed=0; skipped=0
get() { sed -n "s/.* $1=\"\([0-9]*\)\".*/\1/p" <<<"$counters"; }
for trx in "$@"; do
  if [[ ! -f "$trx" ]]; then echo "FAILED: no results in $trx"; failed=$(( failed + 1 )); continue; fi
  counters=$(grep -o '<Counters [^>]*>' "$trx" | head -1)
  p=$(get passed); f=$(get failed); s=$(get notExecuted)
  e=$(get error); t=$(get timeout); a=$(get aborted)
  passed=$(( passed + ${p:-0} )); skipped=$(( skipped + ${s:-0} ))
  failed=$(( failed + ${f:-0} + ${e:-0} + ${t:-0} + ${a:-0} ))
  grep -o '<UnitTestResult [^>]*outcome="Failed"[^>]*>' "$trx" | sed -n 's/.*testName="\([^"]*\)".*/FAILED: \1/p'
done
if (( skipped > 0 )); then echo "${skipped} skipped"; fi
echo "${passed} passed, ${failed} failed"
