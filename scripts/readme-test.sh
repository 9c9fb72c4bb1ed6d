#!/usr/bin/env bash
# Runs the README's quick start as a new user would, so that the README
# cannot drift from the product: `make run` in the background until it is
# ready, then every command of the quick start's code blocks, then the next
# commands `make run` printed on its first start.
#
# Two deviations, both through documented knobs: `make run` gets a fresh
# DATA_DIR and a free port (LISTEN=127.0.0.1:0) so that it never touches
# ./hallmark-data or a server already on 7070, and the commands run in a
# scratch directory that looks like the repository's root (bin/ is linked
# to the real one) with HALLMARK_SERVER set to that server. `make test` and
# `make demo` are not run again: scripts/test.sh runs both already.
#
# Usage: scripts/readme-test.sh [README]   (default: the repository's README.md)
set -euo pipefail
readme=$(realpath "${1:-$(dirname "$0")/../README.md}")
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d "${TMPDIR:-/tmp}/hallmark-readme.XXXXXX")
server_pid=""

cleanup() {
  local rc=$?
  if [ -n "$server_pid" ]; then
    # make runs the server as its child: stop the whole process group.
    kill -TERM -- "-$server_pid" 2>/dev/null || true
    for _ in $(seq 100); do
      kill -0 -- "-$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL -- "-$server_pid" 2>/dev/null || true
  fi
  if [ "$rc" = 0 ]; then
    rm -rf "$work"
  else
    echo "readme test failed; its files are in $work" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
  echo "readme test: $1" >&2
  if [ -n "${2:-}" ] && [ -s "$2" ]; then
    echo "--- $2" >&2
    cat "$2" >&2
  fi
  exit 1
}

# The shell code blocks under the "## Quick start" heading, one command a
# line, with trailing comments removed.
awk '
  /^## / { inside = ($0 ~ /^## Quick start/) ; next }
  inside && /^```/ { fence = !fence && ($0 ~ /^```(sh|bash|shell)?$/); next }
  inside && fence && NF { sub(/[ \t]+#.*$/, ""); print }
' "$readme" >"$work/quickstart.sh"
[ -s "$work/quickstart.sh" ] || fail "$readme has no shell commands under a '## Quick start' heading"
grep -qx 'make run' "$work/quickstart.sh" || fail "the README's quick start does not start with make run" "$work/quickstart.sh"
grep -vE '^make (run|test|demo)$' "$work/quickstart.sh" >"$work/next.sh" || true

ln -s "$root/bin" "$work/bin"
# The quick start pushes "your model"; a fresh clone has none.
if grep -q 'my-model' "$work/next.sh" && ! grep -qE 'mkdir[^|;&]*my-model' "$work/next.sh"; then
  mkdir -p "$work/my-model"
  printf 'weights\n' >"$work/my-model/weights.bin"
  printf '{"layers": 2}\n' >"$work/my-model/config.json"
fi

echo "readme test: make run (DATA_DIR=$work/hallmark-data LISTEN=127.0.0.1:0)"
# set -m: the job gets its own process group, so cleanup can stop make and
# the server it started together.
set -m
make -C "$root" --no-print-directory run DATA_DIR="$work/hallmark-data" LISTEN=127.0.0.1:0 >"$work/run.log" 2>&1 &
server_pid=$!
set +m
url=""
for _ in $(seq 1800); do
  url=$(grep -m1 -oE 'http://127\.0\.0\.1:[0-9]+' "$work/run.log" | head -n 1 || true)
  if [ -n "$url" ]; then break; fi
  kill -0 "$server_pid" 2>/dev/null || fail "make run exited before the server was ready" "$work/run.log"
  sleep 0.1
done
[ -n "$url" ] || fail "make run printed no URL within 180 s" "$work/run.log"
[ -s "$work/hallmark-data/admin.token" ] || fail "make run wrote no hallmark-data/admin.token" "$work/run.log"

echo "readme test: the quick start's commands against $url"
(cd "$work" && HALLMARK_SERVER=$url bash -euo pipefail -x "$work/next.sh") >"$work/next.log" 2>&1 ||
  fail "a quick-start command failed" "$work/next.log"

# The commands `make run` printed on its first start: the indented lines
# after the line that announces them ("Next, ...:").
awk '
  tolower($0) ~ /next.*:$/ { grab = 1; next }
  grab && /^    [^ ]/ { sub(/^    /, ""); print; seen = 1; next }
  grab && NF == 0 && seen { exit }
  grab && NF == 0 { next }
  grab { exit }
' "$work/run.log" >"$work/printed.sh"
[ -s "$work/printed.sh" ] || fail "make run printed no next commands on its first start" "$work/run.log"
echo "readme test: the $(wc -l <"$work/printed.sh") commands make run printed"
(cd "$work" && env -u HALLMARK_SERVER -u HALLMARK_TOKEN bash -euo pipefail -x "$work/printed.sh") >"$work/printed.log" 2>&1 ||
  fail "a command make run printed failed" "$work/printed.log"
echo "readme test: passed"
