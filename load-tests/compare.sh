#!/usr/bin/env bash
# Runs every scenario against onair, the node-ws baseline and the floor, in
# one invocation, alternating the servers, and writes load-tests/RESULTS.md.
#
#   load-tests/compare.sh                 # everything, 3 measured runs each
#   RUNS=5 load-tests/compare.sh          # more runs
#   ONLY="fanout-100x100 hold-10k" load-tests/compare.sh
#   ONAIR_BIN=/path/to/onair load-tests/compare.sh   # measure another build
#
# Every run gets a fresh server process (so RSS starts from a clean heap);
# each scenario starts with one unrecorded warm-up run per server, and every
# bots run has its own warm-up seconds before its measurement window. Raw
# JSON reports go to load-tests/results/<scenario>.<server>.<run>.json.
# Loopback only; every run is bounded by `timeout` and the bots' --max-secs.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
runs="${RUNS:-3}"
only="${ONLY:-}"
results="${RESULTS_DIR:-$here/results}"
secret="compare-secret-$(date +%s)-0123456789"
# Servers and bots run at a raised priority (as root) so that whatever else
# the machine does (builds, say) disturbs the measurement less; each report's
# "host" part says how busy the machine was anyway.
nice_level="${NICE:-$([[ $(id -u) == 0 ]] && echo -15 || echo 0)}"
# With the kernel's autogroups, nice only ranks processes within one session:
# run in a session of our own and raise that session's priority.
if [[ "${ONAIR_COMPARE_SESSION:-}" != 1 && "$nice_level" != 0 ]] && command -v setsid >/dev/null; then
  ONAIR_COMPARE_SESSION=1 exec setsid --wait "$0" "$@"
fi
if [[ -w /proc/self/autogroup ]]; then
  echo "$nice_level" >/proc/self/autogroup 2>/dev/null || true
fi
work="$(mktemp -d)"
trap 'stop_server; rm -rf "$work"' EXIT

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

log "building onair-bots, onair-floor and onair (release)"
(cd "$root" && cargo build --release -p onair-bots --bins)
if [[ -z "${ONAIR_BIN:-}" ]]; then
  (cd "$root" && cargo build --release --bin onair)
  ONAIR_BIN="$root/target/release/onair"
fi
bots="$root/target/release/onair-bots"
floor="$root/target/release/onair-floor"
if [[ ! -d "$here/baselines/node-ws/node_modules/ws" ]]; then
  log "installing node-ws dependencies (npm ci)"
  (cd "$here/baselines/node-ws" && npm ci --no-audit --no-fund --loglevel=error)
fi
mkdir -p "$results"

server_pid=""
server_env=()
port_of() { case "$1" in onair) echo 7810 ;; node-ws) echo 7811 ;; floor) echo 7812 ;; onair-patched) echo 7813 ;; esac; }

# start_server KIND: starts a fresh server on its port and waits until it accepts.
start_server() {
  local kind="$1" port
  port="$(port_of "$kind")"
  local dir="$work/$kind"
  rm -rf "$dir" && mkdir -p "$dir"
  case "$kind" in
    onair | onair-patched)
      local bin="$ONAIR_BIN"
      [[ "$kind" == onair-patched ]] && bin="$ONAIR_PATCHED_BIN"
      (cd "$dir" && exec env "${server_env[@]}" ONAIR_AUTH__JWT_SECRET="$secret" ONAIR_LISTEN="127.0.0.1:$port" \
        nice -n "$nice_level" "$bin" --log-format json >"$dir/server.log" 2>&1) &
      ;;
    node-ws)
      (cd "$dir" && exec env "${server_env[@]}" ONAIR_AUTH__JWT_SECRET="$secret" \
        nice -n "$nice_level" node "$here/baselines/node-ws/server.js" --listen "127.0.0.1:$port" >"$dir/server.log" 2>&1) &
      ;;
    floor)
      (cd "$dir" && exec nice -n "$nice_level" "$floor" --listen "127.0.0.1:$port" >"$dir/server.log" 2>&1) &
      ;;
  esac
  server_pid=$!
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "$kind did not start; its log:"; cat "$dir/server.log" >&2
  return 1
}

stop_server() {
  [[ -n "$server_pid" ]] || return 0
  kill -TERM "$server_pid" 2>/dev/null || true
  for _ in $(seq 1 150); do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

# run_one SCENARIO KIND OUT ARGS...: one bots run against a fresh server.
run_one() {
  local name="$1" kind="$2" out="$3"; shift 3
  local port dialect=onair
  port="$(port_of "$kind")"
  [[ "$kind" == floor ]] && dialect=floor
  start_server "$kind"
  local status=0
  ONAIR_AUTH__JWT_SECRET="$secret" timeout 900 nice -n "$nice_level" "$bots" --quiet --json \
    --url "ws://127.0.0.1:$port/signaling" --dialect "$dialect" --label "$kind" \
    --server-pid "$server_pid" "$@" >"$out.tmp" 2>"$out.log" || status=$?
  stop_server
  if [[ -s "$out.tmp" ]]; then mv "$out.tmp" "$out"; else rm -f "$out.tmp"; fi
  log "  $name $kind -> exit $status $(grep -E '^  (result|errors) ' "$out.log" | tr -s ' ' | tr '\n' ' ')"
  # Let sockets in TIME_WAIT and the allocator settle between runs.
  sleep 2
}

# The scenarios: name | servers | runs ("" = $runs) | bots arguments | server environment.
scenarios=(
  "join-storm|onair node-ws floor||--concurrency 100 join-storm --clients 5000 --room-size 10"
  "hold-10k|onair node-ws floor||hold --clients 10000 --room-size 100 --settle 3 --hold 5"
  "hold-10k-r10|onair node-ws floor||hold --clients 10000 --room-size 10 --settle 3 --hold 5"
  "fanout-100x100|onair node-ws floor||fanout --rooms 100 --room-size 100 --rate 1 --warmup 3 --duration 15"
  "fanout-1x1000|onair node-ws floor||--concurrency 20 fanout --rooms 1 --room-size 1000 --rate 1 --warmup 3 --duration 15"
  "saturation|onair node-ws floor||fanout --rooms 100 --room-size 100 --rate 0 --in-flight 4 --warmup 3 --duration 10|ONAIR_SERVER__MESSAGES_PER_SECOND=200 ONAIR_SERVER__MESSAGE_BURST=400"
  "consent-churn|onair node-ws floor||consent-churn --rooms 100 --room-size 20 --rate 0.5 --warmup 3 --duration 10"
  "mixed|onair node-ws floor||mixed --rooms 50 --room-size 40 --command-rate 0.5 --consent-rate 0.1 --visitors 4 --warmup 3 --duration 10"
  "capacity-19k|onair node-ws floor|1|--procs 2 --source-ips 127.0.0.2-127.0.0.9 --concurrency 60 hold --clients 19000 --room-size 100 --settle 3 --hold 5"
)

for entry in "${scenarios[@]}"; do
  IFS='|' read -r name servers n args envs <<<"$entry"
  if [[ -n "$only" && " $only " != *" $name "* ]]; then continue; fi
  n="${n:-$runs}"
  read -r -a list <<<"$servers"
  # A second onair build (ONAIR_PATCHED_BIN) takes its turn beside the first.
  if [[ -n "${ONAIR_PATCHED_BIN:-}" ]]; then list=("${list[0]}" onair-patched "${list[@]:1}"); fi
  read -r -a argv <<<"$args"
  read -r -a server_env <<<"${envs:-ONAIR_COMPARE=1}"
  log "scenario $name ($n runs): onair-bots ${argv[*]}"
  rm -f "$results/$name".*
  printf '%s\n' "${argv[*]}" >"$results/$name.args"
  [[ -n "$envs" ]] && printf '%s\n' "$envs" >"$results/$name.env"
  if [[ "$n" -gt 1 ]]; then
    for kind in "${list[@]}"; do
      run_one "$name" "$kind" "$work/warmup.json" "${argv[@]}"
    done
  fi
  for run in $(seq 1 "$n"); do
    # Rotate the order each round: onair first, then node-ws first, then the floor first.
    for i in "${!list[@]}"; do
      kind="${list[$(( (i + run - 1) % ${#list[@]} ))]}"
      run_one "$name" "$kind" "$results/$name.$kind.$run.json" "${argv[@]}"
    done
  done
done

log "writing $here/RESULTS.md"
python3 "$here/report.py" --results "$results" --onair-bin "$ONAIR_BIN" --out "$here/RESULTS.md"
log "done"
