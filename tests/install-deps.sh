#!/usr/bin/env bash
# Installs the real peer programs the tests talk to, only when they are missing.
set -euo pipefail
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
# The web view's browser tests: Debian's chromium, driven by npm puppeteer-core (which downloads no browser).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
fi
command -v kubectl >/dev/null 2>&1 || echo "warning: kubectl not found; kubectl tests will fail" >&2

# gRPC interop peers: Debian's grpcio (for /usr/bin/python3) and grpc-js from npm.
if ! /usr/bin/python3 -c 'import grpc, grpc_tools' >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends python3-grpcio python3-grpc-tools >/dev/null
fi
node_dir="$(dirname "$0")/grpc-node"
if [ ! -d "$node_dir/node_modules/@grpc/grpc-js" ] || [ ! -d "$node_dir/node_modules/@grpc/proto-loader" ]; then
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
web_dir="$(dirname "$0")/web"
if [ ! -d "$web_dir/node_modules/puppeteer-core" ]; then
  (cd "$web_dir" && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
