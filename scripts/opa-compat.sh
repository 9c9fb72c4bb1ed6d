#!/usr/bin/env bash
# Checks that hallmark's default policy pack works unchanged with the stock
# OPA CLI (the version hallmark embeds): `opa test` passes, and `opa eval`
# decides every example input in policy/testdata. With OPA_COMPAT_OUT=DIR
# the decisions are written to DIR/<input>.json, and the Go test
# TestOPACompat (policy/compat_test.go) compares them with hallmark's engine.
#
# OPA is built as its own module at a pinned version (`go install
# pkg@version`), so its CLI-only dependencies stay out of hallmark's go.mod;
# they come from the Go module proxy (or the module cache when present) and
# are checked against the checksum database as usual.
set -euo pipefail
cd "$(dirname "$0")/.."
opa_version=v1.22.2
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
GOFLAGS=-mod=mod GOBIN="$bin" CGO_ENABLED=0 \
  go install "github.com/open-policy-agent/opa@${opa_version}"
opa="$bin/opa"

echo "== opa test policy/default ($("$opa" version | awk '/^Version/ {print $2}'))"
"$opa" test policy/default

echo "== opa check --strict with the input schema"
"$opa" check --strict --v1-compatible -s policy/schema/input.schema.json policy/default

for input in policy/testdata/*.json; do
  name=$(basename "$input" .json)
  out=$("$opa" eval --v1-compatible -d policy/default -i "$input" -f raw 'data.hallmark.promotion.decision')
  echo "== opa eval $name: $(printf '%s' "$out" | tr -d '\n' | cut -c1-100)"
  if [ -n "${OPA_COMPAT_OUT:-}" ]; then
    printf '%s\n' "$out" > "$OPA_COMPAT_OUT/$name.json"
  fi
done
