#!/bin/bash
# usage: ab.sh KUBECONFIG ROUNDS -- alternates .tmp/karpetrack-base, .tmp/karpetrack-new and the new one with GCLOHThreshold=16 MB
# (NativeAOT binaries copied there by hand) against one running `Karpetrack.Bench.dll serve`; prints mem3.py lines and load averages.
KC=$1; N=${2:-3}
cd "$(dirname "$0")/../.."
for r in $(seq 1 $N); do
  echo "round $r $(cut -d' ' -f1-3 /proc/loadavg)"
  python3 bench/exp/mem3.py $KC .tmp/karpetrack-base TAG=base 2>&1 | grep ready
  python3 bench/exp/mem3.py $KC .tmp/karpetrack-new TAG=new 2>&1 | grep ready
  python3 bench/exp/mem3.py $KC .tmp/karpetrack-new TAG=new+loh DOTNET_GCLOHThreshold=1000000 2>&1 | grep ready
done
echo "end $(cut -d' ' -f1-3 /proc/loadavg)"
