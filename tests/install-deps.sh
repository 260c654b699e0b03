#!/usr/bin/env bash
# Installs the real peer programs the tests talk to, only when they are missing.
set -euo pipefail
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
fi
command -v kubectl >/dev/null 2>&1 || echo "warning: kubectl not found; kubectl tests will fail" >&2
