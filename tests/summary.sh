#!/usr/bin/env bash
# Prints the plain closing line "N passed, N failed" from a dotnet TRX file.
trx="$1"
if [[ ! -f "$trx" ]]; then echo "0 passed, 1 failed"; exit 0; fi
counters=$(grep -o '<Counters [^>]*>' "$trx" | head -1)
get() { sed -n "s/.* $1=\"\([0-9]*\)\".*/\1/p" <<<"$counters"; }
passed=$(get passed); failed=$(get failed); skipped=$(get notExecuted)
errors=$(get error); timeouts=$(get timeout); aborted=$(get aborted)
failed=$(( ${failed:-0} + ${errors:-0} + ${timeouts:-0} + ${aborted:-0} ))
grep -o '<UnitTestResult [^>]*outcome="Failed"[^>]*>' "$trx" | sed -n 's/.*testName="\([^"]*\)".*/FAILED: \1/p'
echo "${passed:-0} passed, ${failed} failed, ${skipped:-0} skipped"
