#!/usr/bin/env bash
# make demo: hallmark's whole story on real data, against a fresh temporary
# server. Two versions of a Breast Cancer Wisconsin classifier are trained,
# signed, pushed and promoted under policy, with approvals by two people; the
# second version runs in shadow behind live traffic until the evidence is
# enough to promote it; then it is rolled back and the audit trail is
# exported and verified.
#
# It drives the real binaries, and every command it runs is printed as it
# runs, so each step can be read and copied. Nothing outlives the script:
# every process it starts is stopped on exit (Ctrl-C included); the data
# directory stays behind in a printed path so it can be inspected. It needs
# Go, bash 4.3 or later and GNU sed (Linux).
#
# Usage: scripts/demo.sh [--quiet]
#   --quiet  print only the step titles, and remove the files when the demo
#            passes; a failing step still prints its command and output and
#            keeps them (what `make test` runs)

# The commands are single-quoted on purpose: run prints them as written,
# variables and all, then evaluates them (SC2016); the URLs they set are
# read inside those strings (SC2034).
# shellcheck disable=SC2016,SC2034
set -euo pipefail

quiet=0
for arg in "$@"; do
  case "$arg" in
    --quiet) quiet=1 ;;
    -h | --help)
      sed -n '2,/^$/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "demo: unknown argument $arg (want --quiet)" >&2
      exit 2
      ;;
  esac
done

cd "$(dirname "$0")/.."
DEMO=$(mktemp -d "${TMPDIR:-/tmp}/hallmark-demo.XXXXXX")
case "$DEMO" in
  *[[:space:]]*)
    echo "demo: the commands are shown unquoted, so the temporary directory must not contain spaces: $DEMO (set TMPDIR)" >&2
    rmdir "$DEMO"
    exit 2
    ;;
esac
mkdir -p "$DEMO/logs" "$DEMO/keys"
started=$SECONDS

# ---- presentation and failure ------------------------------------------------

bold="" plain=""
if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; fi
step_no=0
step_title=""
cmd_no=0
last_out=""

say() {
  if [ "$quiet" = 0 ]; then printf '%s\n' "$*"; fi
}

# step TITLE WHY: a numbered heading and one sentence of why.
step() {
  step_no=$((step_no + 1))
  step_title=$1
  if [ "$quiet" = 1 ]; then
    printf '  %2d. %s (at %d s)\n' "$step_no" "$1" $((SECONDS - started))
  else
    printf '\n%s%d. %s%s\n' "$bold" "$step_no" "$1" "$plain"
    printf '%s\n' "$2" | fold -s -w 96 | sed 's/^/   /'
  fi
}

# note TEXT: a remark between commands.
note() {
  if [ "$quiet" = 0 ]; then printf '%s\n' "$*" | fold -s -w 96 | sed 's/^/   /'; fi
}

show_file() {
  if [ "$quiet" = 0 ] && [ -s "$1" ]; then sed 's/^/      /' "$1"; fi
}

fail() {
  local msg=$1 out=${2:-}
  {
    printf '\ndemo failed at step %d (%s): %s\n' "$step_no" "$step_title" "$msg"
    if [ -n "$out" ] && [ -s "$out" ]; then
      printf -- '--- output (%s)\n' "$out"
      cat "$out"
    fi
    for log in "$DEMO"/logs/*.log; do
      [ -e "$log" ] || continue
      printf -- '--- last lines of %s\n' "$log"
      tail -n 5 "$log"
    done
    printf 'data and logs kept in %s\n' "$DEMO"
  } >&2
  exit 1
}

# run [--status N|any] COMMAND: prints COMMAND, runs it, prints its output,
# sets $status, and fails the demo when it exits with anything but N
# (default 0). COMMAND is evaluated as written, so what is printed is exactly
# what ran.
run() {
  local want=0
  if [ "$1" = --status ]; then
    want=$2
    shift 2
  fi
  local cmd=$1 rc=0
  cmd_no=$((cmd_no + 1))
  status=0
  last_out="$DEMO/logs/$(printf '%02d-%02d' "$step_no" "$cmd_no").out"
  say "   \$ $cmd"
  eval "$cmd" >"$last_out" 2>&1 || rc=$?
  show_file "$last_out"
  status=$rc
  if [ "$want" != any ] && [ "$rc" != "$want" ]; then
    fail "\`$cmd\` exited $rc, want $want" "$last_out"
  fi
}

# expect PATTERN: the last command's output must match PATTERN (grep -E).
expect() {
  grep -qE -- "$1" "$last_out" || fail "the output does not show /$1/" "$last_out"
}

# refute PATTERN: the last command's output must not match PATTERN.
refute() {
  if grep -qE -- "$1" "$last_out"; then fail "the output shows /$1/" "$last_out"; fi
}

# ---- background processes ------------------------------------------------------

pids=()
names=()

# start NAME COMMAND: runs COMMAND in the background with its output in
# logs/NAME.log, waits until it prints its loopback URL (every server here
# listens on port 0, so the kernel picks a free port), and sets $url.
start() {
  local name=$1 cmd=$2 log="$DEMO/logs/$1.log" i
  say "   \$ $cmd > \$DEMO/logs/$name.log 2>&1 &"
  # exec: $! is then the server itself, not a subshell around it.
  eval "exec $cmd" >"$log" 2>&1 &
  pids+=("$!")
  names+=("$name")
  url=""
  for ((i = 0; i < 300; i++)); do
    url=$(grep -m1 -oE 'http://127\.0\.0\.1:[0-9]+' "$log" 2>/dev/null | head -n 1 || true)
    if [ -n "$url" ]; then break; fi
    kill -0 "${pids[-1]}" 2>/dev/null || fail "$name exited before it was ready" "$log"
    sleep 0.1
  done
  [ -n "$url" ] || fail "$name printed no URL within 30 s" "$log"
  say "      $name listening on $url (pid ${pids[-1]})"
}

# stop_pid PID: SIGTERM (servers drain and exit), SIGKILL after 20 s.
stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 200; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# stop NAME: stops one background process started by start.
stop() {
  local i
  for i in "${!names[@]}"; do
    if [ "${names[$i]}" = "$1" ] && [ -n "${pids[$i]}" ]; then
      say "   \$ kill -TERM ${pids[$i]}    # $1"
      stop_pid "${pids[$i]}"
      pids[i]=""
    fi
  done
}

cleanup() {
  local rc=$? i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    if [ -n "${pids[$i]}" ]; then stop_pid "${pids[$i]}"; fi
  done
  if [ "$rc" != 0 ]; then
    printf 'demo stopped (exit %d); everything it started is stopped; data in %s\n' "$rc" "$DEMO" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_evidence ID N: waits until the registry has recorded evidence covering
# at least N requests for deployment ID (the proxy reports every second).
wait_evidence() {
  local i have=0
  for ((i = 0; i < 300; i++)); do
    have=$(bin/hallmark shadow status "$1" --output json 2>/dev/null |
      sed -n '/"overall"/,/"segments"/s/^ *"requests": \([0-9]*\).*/\1/p' | head -n 1)
    if [ "${have:-0}" -ge "$2" ]; then return 0; fi
    sleep 0.1
  done
  fail "the registry recorded evidence for ${have:-0} requests within 30 s, want $2" "$DEMO/logs/proxy.log"
}

# metadata VERSION: the version's registry metadata (metrics, data set
# lineage) from the model card its training wrote.
metadata() {
  local card="$DEMO/$1/model_card.json" f v
  local -A m=()
  for f in accuracy precision recall features l2_lambda digest; do
    v=$(sed -n "s/^ *\"$f\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}$/\1/p" "$card" | head -n 1)
    [ -n "$v" ] || { echo "metadata: no \"$f\" in $card" >&2; return 1; }
    m[$f]=$v
  done
  cat <<EOF
{
  "framework": "cancer-model (Go logistic regression)",
  "description": "Breast cancer classifier $1: malignant vs benign, ${m[features]} features",
  "metrics": {"accuracy": ${m[accuracy]}, "precision": ${m[precision]}, "recall": ${m[recall]}},
  "lineage": {
    "datasets": [{"name": "Breast Cancer Wisconsin (Diagnostic)", "digest": "${m[digest]}"}],
    "codeRepository": "https://github.com/hallmark-dev/hallmark"
  },
  "labels": {"features": "${m[features]}", "l2_lambda": "${m[l2_lambda]}"}
}
EOF
}

# extract_report: unpacks report.html and report.pdf from the export into
# report/, with whichever unzipper the machine has.
extract_report() {
  mkdir -p "$DEMO/report"
  if command -v unzip >/dev/null 2>&1; then
    unzip -q -o "$DEMO/report.zip" 'report.*' -d "$DEMO/report" 2>/dev/null
  elif command -v python3 >/dev/null 2>&1; then
    python3 -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith("report.")])' "$DEMO/report.zip" "$DEMO/report" 2>/dev/null
  else
    return 1
  fi
}

# ---- the story -----------------------------------------------------------------

if [ "$quiet" = 0 ]; then
  printf '%shallmark demo%s: a breast cancer classifier from training to production and back,\n' "$bold" "$plain"
  printf 'under policy, with every step in a verifiable ledger. Working directory:\n'
  printf '   DEMO=%s\n' "$DEMO"
else
  printf 'hallmark demo in %s\n' "$DEMO"
fi

step "Build the binaries" \
  "hallmark is one static binary; cancer-model is the demo workload (trainer, model server, load generator)."
run 'CGO_ENABLED=0 go build -trimpath -buildvcs=auto -o bin/hallmark ./cmd/hallmark'
run 'CGO_ENABLED=0 go build -trimpath -buildvcs=auto -o bin/cancer-model ./cmd/cancer-model'

step "Train two versions of the classifier" \
  "v1 uses all 30 features of the Breast Cancer Wisconsin data set (569 tumours); v2 is a leaner model on the 10 worst-value features. Both are measured on the same held-out quarter."
run 'bin/cancer-model train --version v1 --out $DEMO/v1'
run 'bin/cancer-model train --version v2 --out $DEMO/v2'
note "The metadata each version is pushed with comes from its model card (metadata is a function in scripts/demo.sh):"
run 'metadata v1 > $DEMO/v1.meta.json && metadata v2 > $DEMO/v2.meta.json && cat $DEMO/v1.meta.json'

step "Create the release signing key and trust it" \
  "The server checks every pushed signature against its trust store, read at start-up, so the key goes there first."
run 'bin/hallmark keys generate --out $DEMO/keys/release'
run 'mkdir -p $DEMO/data/trust/keys && cp $DEMO/keys/release.pub $DEMO/data/trust/keys/'

step "Start a fresh hallmark server" \
  "An empty data directory on a free loopback port: the first start creates the ledger and the admin principal, whose token is written to admin.token."
start server 'bin/hallmark serve --data-dir $DEMO/data --listen 127.0.0.1:0'
# The verifier key (origin+hash+key), wherever the server prints it.
LOG_KEY=$(grep -m1 -oE 'hallmark\.local/ledger\+[0-9a-f]{8}\+[A-Za-z0-9+/=]+' "$DEMO/logs/server.log" | head -n 1 || true)
[ -n "$LOG_KEY" ] || fail "the server printed no log key" "$DEMO/logs/server.log"
run "export HALLMARK_SERVER=$url HALLMARK_TOKEN=\$(cat \$DEMO/data/admin.token)"
note "The log key verifies the ledger's signed checkpoints; the audit step uses it:"
say "      LOG_KEY=$LOG_KEY"

step "Add the people" \
  "Separation of duties: a release pipeline pushes versions and requests promotions; Dr. Ana Ruiz (clinical lead) and Sam Okafor (quality manager) approve them, each signing with a key of their own; an auditor reads. Nobody may approve a request they filed or a version they pushed."
run 'CI_TOKEN=$(bin/hallmark principals add ci --name "Release pipeline" --role publisher)'
run 'ANA_TOKEN=$(bin/hallmark principals add ana --name "Dr. Ana Ruiz" --role approver)'
run 'SAM_TOKEN=$(bin/hallmark principals add sam --name "Sam Okafor" --role approver)'
run 'AUDITOR_TOKEN=$(bin/hallmark principals add audit --name "Quality Assurance" --role auditor)'
run 'bin/hallmark keys generate --type ed25519 --out $DEMO/keys/ana && bin/hallmark principals set-key ana --public-key $DEMO/keys/ana.pub'
run 'bin/hallmark keys generate --type ed25519 --out $DEMO/keys/sam && bin/hallmark principals set-key sam --public-key $DEMO/keys/sam.pub'
run 'bin/hallmark principals list'
expect 'Dr\. Ana Ruiz'

step "Publish the default policy pack" \
  "Every alias move is decided by the active Rego policy set. Publishing records its full text in the ledger; the server first runs its tests and checks their coverage."
run 'bin/hallmark policy publish policy/default'
expect 'active'

step "Sign and push both versions" \
  "A version is its files' manifest digest plus a signature (OpenSSF Model Signing format) and metadata: here the held-out metrics and the data set's digest as lineage."
run 'bin/hallmark sign $DEMO/v1 --key $DEMO/keys/release.key --out $DEMO/v1.sig'
run 'HALLMARK_TOKEN=$CI_TOKEN bin/hallmark push $DEMO/v1 --model cancer-model --version v1 --signature $DEMO/v1.sig --metadata $DEMO/v1.meta.json'
run 'HALLMARK_TOKEN=$CI_TOKEN bin/hallmark push $DEMO/v2 --model cancer-model --version v2 --sign-key $DEMO/keys/release.key --metadata $DEMO/v2.meta.json'
run 'bin/hallmark versions cancer-model'
expect 'v2 .* yes'

step "Promote v1 to staging" \
  "The pipeline asks; the policy wants a trusted signature and one approval for staging, so the request waits until Dr. Ruiz signs hers."
run 'HALLMARK_TOKEN=$CI_TOKEN bin/hallmark promote cancer-model@v1 --to staging --expect-unset --reason "CHG-101: first release of the classifier" --id chg-101'
expect 'waiting for 1 approval'
run 'HALLMARK_TOKEN=$ANA_TOKEN bin/hallmark approve chg-101 --meaning approved --comment "held-out accuracy and recall reviewed" --sign-key $DEMO/keys/ana.key'
expect 'allowed: cancer-model@staging now points at v1'


step "Promote v1 to production" \
  "Production needs two approvals and, for a version that replaces another, shadow evidence against it. A first release replaces nothing, so the default pack exempts it from the evidence rule (settings.evidence_first_release_exempt); staging first and two approvals still apply."
run 'HALLMARK_TOKEN=$CI_TOKEN bin/hallmark promote cancer-model@v1 --to production --expect-unset --reason "CHG-102: v1 to production (first release)" --id chg-102'
expect 'waiting for 2 approval'
run 'HALLMARK_TOKEN=$ANA_TOKEN bin/hallmark approve chg-102 --meaning approved --comment "validated at staging" --sign-key $DEMO/keys/ana.key'
expect 'waiting for 1 approval'
run 'HALLMARK_TOKEN=$SAM_TOKEN bin/hallmark approve chg-102 --meaning approved --comment "clinical sign-off" --sign-key $DEMO/keys/sam.key'
expect 'allowed: cancer-model@production now points at v1'

step "Promote v2 to staging" \
  "The pack lets a version reach production only through staging."
run 'HALLMARK_TOKEN=$CI_TOKEN bin/hallmark promote cancer-model@v2 --to staging --expect v1 --reason "CHG-104: leaner model v2" --id chg-104'
run 'HALLMARK_TOKEN=$SAM_TOKEN bin/hallmark approve chg-104 --meaning approved --comment "metrics reviewed" --sign-key $DEMO/keys/sam.key'
expect 'allowed: cancer-model@staging now points at v2'

step "Serve both versions" \
  "v1 answers production traffic; v2 waits as the candidate. --delay stands in for inference time: 25 ms for v1, 5 ms for the leaner v2, a gap wide enough that the policy's p99 latency check measures the models, not the scheduler of a busy machine."
start model-v1 'bin/cancer-model serve --model $DEMO/v1 --listen 127.0.0.1:0 --delay 25ms'
V1_URL=$url
start model-v2 'bin/cancer-model serve --model $DEMO/v2 --listen 127.0.0.1:0 --delay 5ms'
V2_URL=$url

step "Start a shadow deployment of v2 against production" \
  "The registry records what is compared (v2 against what production points at now), how (the predicted label), per which segment (the hospital site) and under which policy, and gives the deployment its own agent identity and signing key."
run 'bin/hallmark shadow start cancer-model@v2 --against production --segment-header X-Segment --compare label:/label --labels benign,malignant --agent-key-out $DEMO/keys/agent.key'
SHADOW_ID=$(awk '$1 == "deployment" { print $2; exit }' "$last_out")
AGENT_TOKEN=$(sed -n 's/^agent token *//p' "$last_out" | head -n 1)
if [ -z "$SHADOW_ID" ] || [ -z "$AGENT_TOKEN" ]; then
  fail "no deployment id or agent token in the output" "$last_out"
fi
note "SHADOW_ID=$SHADOW_ID; AGENT_TOKEN is the agent token above."
note "The proxy sits in front of production: callers get v1's answers, v2 gets a copy of each request, and every second the proxy signs a batch of comparisons and reports it."
start proxy 'bin/hallmark shadow proxy --listen 127.0.0.1:0 --primary $V1_URL --shadow $V2_URL --deployment $SHADOW_ID --agent-key $DEMO/keys/agent.key --registry $HALLMARK_SERVER --registry-token $AGENT_TOKEN --comparator label --pointer /label --labels benign,malignant --segment-header X-Segment --flush-interval 1s'
PROXY_URL=$url

step "Drive live traffic through the proxy" \
  "The load generator replays the data set's tumours as prediction requests from three hospital sites."
run 'bin/cancer-model load --target $PROXY_URL --requests 300 --rate 400 --segment-header X-Segment'
wait_evidence "$SHADOW_ID" 300
run 'bin/hallmark shadow status $SHADOW_ID'

step "Try to promote v2 to production: denied" \
  "With 100 comparisons per site, 98% observed agreement could still be 93% in truth; the policy wants the lower bound of the 95% interval at 0.95 or more, 200 pairs per site and 1000 requests. Insufficient evidence is never a pass."
run --status 1 'HALLMARK_TOKEN=$CI_TOKEN bin/hallmark promote cancer-model@v2 --to production --expect v1 --reason "CHG-105: v2 to production" --id chg-105'
expect 'evidence\.(insufficient|requests)'

step "More traffic, more evidence" \
  "The same live traffic keeps flowing; each site passes the policy's 200 compared pairs and the 1000 requests overall."
run 'bin/cancer-model load --target $PROXY_URL --requests 900 --rate 400 --segment-header X-Segment'
wait_evidence "$SHADOW_ID" 1200
run 'bin/hallmark shadow status $SHADOW_ID'
refute 'INSUFFICIENT'

step "Promote v2 to production: allowed once approved" \
  "A new request (a denial is final). The evidence now meets every threshold, so only the two approvals are missing."
run 'HALLMARK_TOKEN=$CI_TOKEN bin/hallmark promote cancer-model@v2 --to production --expect v1 --reason "CHG-106: v2 to production, shadow evidence attached" --id chg-106'
expect 'waiting for 2 approval'
run 'HALLMARK_TOKEN=$ANA_TOKEN bin/hallmark approve chg-106 --meaning approved --comment "shadow agreement reviewed" --sign-key $DEMO/keys/ana.key'
run 'HALLMARK_TOKEN=$SAM_TOKEN bin/hallmark approve chg-106 --meaning approved --comment "clinical sign-off" --sign-key $DEMO/keys/sam.key'
expect 'allowed: cancer-model@production now points at v2'

step "Stop the shadow run" \
  "Its job is done; the proxy delivers what it still holds, then the deployment is closed and its agent's token revoked. The evidence stays in the ledger."
stop proxy
run 'bin/hallmark shadow stop $SHADOW_ID --reason "v2 promoted to production (chg-106)"'

recall() {
  sed -n 's/^ *"recall": \([0-9.]*\).*/\1/p' "$DEMO/$1/model_card.json" | awk '{ printf "%.3f", $1; exit }'
}
v1_recall=$(recall v1)
v2_recall=$(recall v2)
step "Roll back to v1" \
  "The agreement gate compares v2 with v1, not with the truth. Reviewing the recorded metrics, Dr. Ruiz sees v2's held-out recall is $v2_recall against v1's $v1_recall: it misses more malignant tumours. Rolling back is a promotion too, decided by policy: hallmark marks it a rollback, the pack needs one approval and no new evidence."
run 'HALLMARK_TOKEN=$CI_TOKEN bin/hallmark promote cancer-model@v1 --to production --expect v2 --reason "INC-7: v2 recall '"$v2_recall"' below v1 '"$v1_recall"'; roll back" --id inc-7'
expect 'rollback'
run 'HALLMARK_TOKEN=$ANA_TOKEN bin/hallmark approve inc-7 --meaning approved --comment "roll back until recall is investigated" --sign-key $DEMO/keys/ana.key'
expect 'allowed: cancer-model@production now points at v1'
run 'bin/hallmark requests --model cancer-model'

step "Export the audit report and verify it" \
  "The auditor takes the record away: ledger entries with proofs, policy texts, evidence, registers and a readable report, all checkable offline with the log key alone."
if bin/hallmark help audit 2>/dev/null | grep -q 'audit export'; then
  run 'HALLMARK_TOKEN=$AUDITOR_TOKEN bin/hallmark audit export --out $DEMO/report.zip'
  run 'bin/hallmark audit verify $DEMO/report.zip --log-key $LOG_KEY'
  report=yes
else
  echo "   NOT RUN: this build has no 'hallmark audit' commands yet (issue 7)."
  report=no
fi

step "Stop the server and check the whole ledger offline" \
  "Re-hashes every entry, rebuilds the Merkle tree and checks every tile and signed checkpoint of the store."
stop server
run 'bin/hallmark ledger verify --data-dir $DEMO/data'
expect 'ledger ok'

elapsed=$((SECONDS - started))
if [ "$quiet" = 0 ]; then
  printf '\n%sDone in %d s.%s Everything the demo started is stopped; its files are in\n   %s\n' "$bold" "$elapsed" "$plain" "$DEMO"
  printf '   data/          the server'\''s data directory (bin/hallmark serve --data-dir %s/data)\n' "$DEMO"
  printf '   logs/          every command'\''s output and the servers'\'' logs\n'
  if [ "$report" = yes ]; then
    if extract_report && [ -e "$DEMO/report/report.html" ]; then
      printf '   report.zip     the audit export; the report: %s/report/report.html and report.pdf\n' "$DEMO"
    else
      printf '   report.zip     the audit export: report.html and report.pdf are inside it\n'
    fi
  fi
else
  # A test run leaves nothing behind when it passes.
  rm -rf "$DEMO"
  printf 'demo passed in %d s\n' "$elapsed"
fi
