#!/usr/bin/env bash
# Runs every test of the module. Packages with concurrency run under the race
# detector (which needs cgo); the rest build static. Fuzz targets run their
# seed corpora as ordinary tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# Tools some tests need (pdftotext, chromium) come from Debian; the project
# installs them itself so a fresh machine needs no manual step.
if [ -x scripts/install-test-deps.sh ]; then
  scripts/install-test-deps.sh
fi

race_pkgs=()
plain_pkgs=()
for p in $(go list ./...); do
  case "$p" in
    */ledger|*/ledger/*|*/registry|*/registry/*|*/shadow|*/shadow/*|*/internal/*) race_pkgs+=("$p") ;;
    *) plain_pkgs+=("$p") ;;
  esac
done

status=0
if [ ${#plain_pkgs[@]} -gt 0 ]; then
  CGO_ENABLED=0 go test -count=1 -timeout 20m "${plain_pkgs[@]}" || status=1
fi
if [ ${#race_pkgs[@]} -gt 0 ]; then
  CGO_ENABLED=1 go test -race -count=1 -timeout 20m "${race_pkgs[@]}" || status=1
fi

# make demo end to end, every step against a temporary server: a failing
# step prints its command and output and fails the run.
scripts/demo.sh --quiet || status=1
# The README's quick start, as written, so the README cannot drift.
scripts/readme-test.sh || status=1
exit $status
