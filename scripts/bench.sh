#!/usr/bin/env bash
# Runs the Go benchmarks of every package, then each comparison script
# scripts/bench-*.sh (which measure hallmark against a reference tool in the
# same run). Figures are recorded in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(go version)"
go test -run '^$' -bench "${BENCH:-.}" -benchmem -timeout 60m ./... | grep -Ev '^(PASS|ok|\?)'
for s in scripts/bench-*.sh; do
  [ -e "$s" ] || continue
  echo "== $s"
  bash "$s"
done
