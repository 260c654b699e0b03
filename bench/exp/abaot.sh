#!/bin/bash
# usage: abaot.sh KUBECONFIG OUTDIR "label binary [ENV=VAL ...]" ...   Runs memmap.py (REFS=1) once for each spec, in the
# order given, against one running `Karpetrack.Bench.dll serve`; each run's output lands in OUTDIR/label-N.txt (N counts
# runs of that label) and one line per run goes to stdout with the load averages before and after.
KC=$1; OUT=$2; shift 2
cd "$(dirname "$0")/../.."
mkdir -p "$OUT"
for spec in "$@"; do
  set -- $spec; label=$1; shift
  n=1; while [ -e "$OUT/$label-$n.txt" ]; do n=$((n+1)); done
  before=$(cut -d' ' -f1-3 /proc/loadavg)
  REFS=1 SECTIONS=1 timeout 900 python3 bench/exp/memmap.py "$KC" "$@" > "$OUT/$label-$n.txt" 2>&1
  echo "$(date -u +%T) $label-$n [load before $before, after $(cut -d' ' -f1-3 /proc/loadavg)]"
done
