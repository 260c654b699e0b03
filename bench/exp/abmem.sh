#!/bin/bash
# usage: abmem.sh KUBECONFIG ROUNDS: alternates .tmp/karpetrack-base and .tmp/karpetrack-new (NativeAOT binaries copied there by
# hand) against one running `Karpetrack.Bench.dll serve` with memmap.py; prints each run's summary lines with the load.
KC=$1; N=${2:-2}
cd "$(dirname "$0")/../.."
for r in $(seq 1 $N); do
  for b in base new; do
    echo "== round $r $b $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
    python3 bench/exp/memmap.py $KC .tmp/karpetrack-$b 2>&1 | grep -E "^==|first minute|GC \(as of|regions"
  done
done
echo "end $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
