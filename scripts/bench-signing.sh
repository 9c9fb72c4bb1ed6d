#!/usr/bin/env bash
# Signing and verifying a 1 GiB model with hallmark against `openssl dgst
# -sha256` over the same files one after the other, in the same run:
#   - one 1 GiB file   (target: hallmark ≥ 85% of openssl's single-stream rate)
#   - four 256 MiB files (target: hallmark faster than sequential openssl on 2 cores)
# Prints rates, ratios and hallmark's peak RSS (from /usr/bin/time -v).
# SIZE_MIB overrides the model size (default 1024).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! [ -x /usr/bin/time ]; then
  echo "installing GNU time (for peak RSS)"
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq time >/dev/null; else sudo apt-get install -y -qq time >/dev/null; fi
fi
command -v openssl >/dev/null || { echo "openssl is required"; exit 1; }

size_mib=${SIZE_MIB:-1024}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
hm="$work/hallmark"
CGO_ENABLED=0 go build -trimpath -o "$hm" ./cmd/hallmark

mkdir -p "$work/one" "$work/four"
head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$work/one/model.bin"
for i in 1 2 3 4; do
  head -c $((size_mib * 1024 * 1024 / 4)) /dev/urandom > "$work/four/shard-$i.bin"
done
"$hm" keys generate --out "$work/key" >/dev/null
bytes=$((size_mib * 1024 * 1024))

# now_ns prints a monotonic-enough wall clock in nanoseconds.
now_ns() { date +%s%N; }
# run_timed LABEL CMD...: runs CMD (output discarded), sets secs and rss_kib.
run_timed() {
  local start end
  shift # the label only names the case
  start=$(now_ns)
  /usr/bin/time -v -o "$work/time.txt" "$@" >/dev/null
  end=$(now_ns)
  secs=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f", (e - s) / 1e9 }')
  rss_kib=$(awk -F: '/Maximum resident set size/ { gsub(/ /, "", $2); print $2 }' "$work/time.txt")
}
rate() { awk -v b="$bytes" -v s="$1" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }

echo "model: ${size_mib} MiB; $(nproc) cores; $(openssl version | cut -d' ' -f1-2); files in the page cache (each case is warmed first)"
printf '%-34s %9s %10s %12s\n' case seconds "MB/s" "max RSS MiB"
for layout in one four; do
  dir="$work/$layout"
  files=("$dir"/*.bin)
  cat "${files[@]}" > /dev/null # warm the page cache for every contender alike
  run_timed openssl openssl dgst -sha256 "${files[@]}"
  o_secs=$secs; o_rate=$(rate "$secs")
  printf '%-34s %9s %10s %12s\n' "openssl dgst -sha256 ($layout)" "$o_secs" "$o_rate" "$((rss_kib / 1024))"
  run_timed sign "$hm" sign "$dir" --key "$work/key.key" --out "$work/$layout.sig"
  s_secs=$secs; s_rate=$(rate "$secs")
  printf '%-34s %9s %10s %12s\n' "hallmark sign ($layout)" "$s_secs" "$s_rate" "$((rss_kib / 1024))"
  run_timed verify "$hm" verify "$dir" --signature "$work/$layout.sig" --public-key "$work/key.pub"
  v_secs=$secs; v_rate=$(rate "$secs")
  printf '%-34s %9s %10s %12s\n' "hallmark verify ($layout)" "$v_secs" "$v_rate" "$((rss_kib / 1024))"
  awk -v o="$o_secs" -v s="$s_secs" -v v="$v_secs" -v l="$layout" 'BEGIN {
    printf "  ratio vs openssl (%s): sign %.2fx, verify %.2fx  (rate ratio; >1 = faster than openssl)\n", l, o / s, o / v }'
done
echo "targets: one file ≥ 0.85x openssl; four files > 1.00x openssl"
