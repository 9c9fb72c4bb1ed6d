#!/usr/bin/env bash
# Blob transfer against its physical limits, in one run on one file:
#   push (hallmark client → server over loopback, separate processes)
#     vs dd bs=4M oflag=dsync (synced sequential write)      target ≥ 60%
#   verified pull (server checks chunks, client the digest)
#     vs openssl dgst -sha256 (the SHA-256 limit)            target ≥ 70%
#     (openssl runs twice, before and after the pulls; the faster run is the
#     reference, so a busy machine does not flatter the ratio)
#   verified pull into a file, synced (as hallmark pull does) vs dd: informative
#   CPU seconds of each pull (client + server) and of openssl: less distorted
#   by other load than the rates; two SHA-256 passes (server chunks, client
#   whole digest) on two cores is the floor
#   peak RSS (VmHWM) of client and server moving a 4 GiB file  target ≤ 256 MiB
# Environment: BLOB_BENCH_MIB (default 1024), BLOB_RSS_MIB (default 4096; 0 skips),
# BENCH_DIR (default a fresh directory under /var/tmp, on the disk, not tmpfs).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v openssl >/dev/null; then
  echo "installing openssl"; apt-get install -y -q openssl >/dev/null
fi
size_mib=${BLOB_BENCH_MIB:-1024}
rss_mib=${BLOB_RSS_MIB:-4096}
work=${BENCH_DIR:-$(mktemp -d /var/tmp/hallmark-blob-bench.XXXXXX)}
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

CGO_ENABLED=0 go build -o "$work/benchblob" ./internal/blobhttp/benchblob
now() { date +%s.%N; }
rate() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f", b / s / 1e6 }'; }
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p"; }

start_server() {
  rm -rf "$work/store" "$work/addr"
  "$work/benchblob" serve -dir "$work/store" -addr-file "$work/addr" "$@" &
  server_pid=$!
  for _ in $(seq 100); do [ -s "$work/addr" ] && break; sleep 0.1; done
  url="http://$(cat "$work/addr")"
}
stop_server() {  # prints the server's VmHWM in KiB
  local hwm
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$server_pid/status")
  kill "$server_pid"; wait "$server_pid" || true; server_pid=
  echo "$hwm"
}

echo "== blob transfer, ${size_mib} MiB file, $(nproc) cores"
head -c "${size_mib}M" /dev/urandom > "$work/file"
bytes=$((size_mib * 1024 * 1024))
cat "$work/file" > /dev/null  # warm the page cache for every reader alike

t0=$(now); dd if="$work/file" of="$work/dd.out" bs=4M oflag=dsync status=none; t1=$(now)
rm -f "$work/dd.out"
dd_rate=$(rate "$bytes" "$(awk -v a="$t0" -v b="$t1" "BEGIN{print b-a}")")
clk_tck=$(getconf CLK_TCK)
measure_ssl() {  # prints "MB/s cpu-seconds"
  local t0 t1 cpu
  t0=$(now)
  cpu=$( { TIMEFORMAT='%U %S'; time openssl dgst -sha256 "$work/file" > /dev/null; } 2>&1 | awk '{print $1 + $2}')
  t1=$(now)
  echo "$(rate "$bytes" "$(awk -v a="$t0" -v b="$t1" "BEGIN{print b-a}")") $cpu"
}
server_cpu() { awk -v t="$clk_tck" '{printf "%.2f", ($14 + $15) / t}' "/proc/$server_pid/stat"; }
# pull_cpu OUT BEFORE AFTER: client + server CPU seconds of one pull.
pull_cpu() { awk -v c="$(echo "$1" | field cpu_s)" -v a="$2" -v b="$3" 'BEGIN{printf "client %.2f s + server %.2f s", c, b - a}'; }
digest="sha256:$(openssl dgst -sha256 "$work/file" | sed 's/.* //')"
echo "load before: $(uptime | sed 's/.*load average: //')"

start_server
push=$("$work/benchblob" push -url "$url" "$work/file" 2>/dev/null)
read -r ssl1 ssl1_cpu <<<"$(measure_ssl)"
c0=$(server_cpu)
pull=$("$work/benchblob" pull -url "$url" -digest "$digest")
c1=$(server_cpu)
pullf=$("$work/benchblob" pull -url "$url" -digest "$digest" -out "$work/pulled")
rm -f "$work/pulled"
stop_server >/dev/null
# The same store again, served re-hashing the whole file as well as checking
# chunk digests (blobhttp.Options.WholeDigest): one SHA-256 pass more.
mv "$work/store" "$work/store.keep"
rm -rf "$work/addr"
"$work/benchblob" serve -dir "$work/store.keep" -addr-file "$work/addr" -whole-digest &
server_pid=$!
for _ in $(seq 100); do [ -s "$work/addr" ] && break; sleep 0.1; done
url="http://$(cat "$work/addr")"
c2=$(server_cpu)
pull2=$("$work/benchblob" pull -url "$url" -digest "$digest")
c3=$(server_cpu)
stop_server >/dev/null
rm -rf "$work/store.keep"
read -r ssl2 ssl2_cpu <<<"$(measure_ssl)"
ssl_rate=$(awk -v a="$ssl1" -v b="$ssl2" 'BEGIN{print (a > b ? a : b)}')
push_rate=$(echo "$push" | field MBps); pull_rate=$(echo "$pull" | field MBps); pull2_rate=$(echo "$pull2" | field MBps)
pullf_rate=$(echo "$pullf" | field MBps)
pct() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.0f", 100*a/b}'; }
printf "dd bs=4M oflag=dsync      %8s MB/s\n" "$dd_rate"
printf "openssl dgst -sha256      %8s MB/s  (runs: %s, %s MB/s; CPU %s s, %s s)\n" "$ssl_rate" "$ssl1" "$ssl2" "$ssl1_cpu" "$ssl2_cpu"
printf "hallmark push             %8s MB/s  = %s%% of dd      (target >= 60%%)\n" "$push_rate" "$(pct "$push_rate" "$dd_rate")"
printf "hallmark verified pull    %8s MB/s  = %s%% of openssl (target >= 70%%)  server checks chunks (default); CPU %s\n" "$pull_rate" "$(pct "$pull_rate" "$ssl_rate")" "$(pull_cpu "$pull" "$c0" "$c1")"
printf "hallmark verified pull    %8s MB/s  = %s%% of openssl                   server checks chunks + whole digest; CPU %s\n" "$pull2_rate" "$(pct "$pull2_rate" "$ssl_rate")" "$(pull_cpu "$pull2" "$c2" "$c3")"
printf "pull into a file, synced  %8s MB/s  = %s%% of dd\n" "$pullf_rate" "$(pct "$pullf_rate" "$dd_rate")"
echo "load after: $(uptime | sed 's/.*load average: //')"

if [ "$rss_mib" -gt 0 ]; then
  rm -f "$work/file"
  echo "== peak RSS, ${rss_mib} MiB file"
  head -c "${rss_mib}M" /dev/urandom > "$work/big"
  digest="sha256:$(openssl dgst -sha256 "$work/big" | sed 's/.* //')"
  start_server
  push=$("$work/benchblob" push -url "$url" "$work/big" 2>/dev/null)
  pull=$("$work/benchblob" pull -url "$url" -digest "$digest")
  server_hwm=$(stop_server)
  printf "push %8s MB/s, client peak RSS %6d MiB\n" "$(echo "$push" | field MBps)" $(( $(echo "$push" | field vmhwm_kib) / 1024 ))
  printf "pull %8s MB/s, client peak RSS %6d MiB\n" "$(echo "$pull" | field MBps)" $(( $(echo "$pull" | field vmhwm_kib) / 1024 ))
  printf "server peak RSS (push then pull) %6d MiB   (target <= 256 MiB each)\n" $(( server_hwm / 1024 ))
fi
