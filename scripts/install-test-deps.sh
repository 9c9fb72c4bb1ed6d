#!/usr/bin/env bash
# Installs the Debian tools some tests need: pdftotext (poppler-utils) reads
# the audit report's PDF, chromium renders its HTML. Only what is missing is
# installed, with one `apt-get update`, non-interactively, so a machine that
# already has both is not touched. Tests skip when a tool is absent and CI is
# unset; in CI a missing tool fails the test.
set -euo pipefail

missing=()
command -v pdftotext >/dev/null 2>&1 || missing+=(poppler-utils)
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  missing+=(chromium)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-deps: apt-get not found; install ${missing[*]} by hand" >&2
  exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "install-test-deps: not root and no sudo; install ${missing[*]} by hand" >&2
    exit 0
  fi
fi

echo "install-test-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
