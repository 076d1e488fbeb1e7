#!/usr/bin/env bash
# make demo: start a sample multi-threaded target and inspect it live.
# (Becomes the live-patch demo once `graft apply` lands.)
set -euo pipefail
cd "$(dirname "$0")/../.."
./testprocs/build/spin 3 >/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
sleep 0.3
echo "== graft inspect -p $pid"
./bin/graft inspect -p "$pid"
