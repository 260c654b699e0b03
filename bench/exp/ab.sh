#!/bin/bash
# usage: ab.sh KUBECONFIG ROUNDS  -- alternates base / new / new+LOH threshold on one API server
KC=$1; N=${2:-3}
cd "$(dirname "$0")/../.."
for r in $(seq 1 $N); do
  echo "round $r $(cut -d' ' -f1-3 /proc/loadavg)"
  python3 bench/exp/mem3.py $KC .tmp/karpetrack-base TAG=base 2>&1 | grep ready
  python3 bench/exp/mem3.py $KC .tmp/karpetrack-new TAG=new 2>&1 | grep ready
  python3 bench/exp/mem3.py $KC .tmp/karpetrack-new TAG=new+loh DOTNET_GCLOHThreshold=1000000 2>&1 | grep ready
done
echo "end $(cut -d' ' -f1-3 /proc/loadavg)"
