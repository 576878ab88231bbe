#!/usr/bin/env bash
# Room isolation (issue 16): the `busy-room` scenario against a fresh onair per
# run, ROUNDS rounds, then the medians per build. Several builds take turns
# within each round (the order rotates), so a noisy neighbour hits them alike.
#
#   cargo build --release --bin onair && cargo build --release -p onair-bots
#   load-tests/busy-room.sh                                  # ROUNDS=3, target/release/onair
#   BUILDS="before=/tmp/onair-old after=target/release/onair" load-tests/busy-room.sh
#   ARGS="--busy-size 500" load-tests/busy-room.sh           # scenario arguments
#
# Run as root, it runs in a scheduler session (autogroup) of its own at nice
# -15 (NICE=0 to turn that off), as compare.sh does, so that builds beside it
# disturb it less. Raw reports: load-tests/results/busy-room/<label>.<round>.json
set -euo pipefail

nice_level="${NICE:-$([[ $(id -u) == 0 ]] && echo -15 || echo 0)}"
if [[ "${ONAIR_BUSY_SESSION:-}" != 1 && "$nice_level" != 0 ]] && command -v setsid >/dev/null; then
  ONAIR_BUSY_SESSION=1 exec setsid --wait "$0" "$@"
fi
if [[ -w /proc/self/autogroup ]]; then
  echo "$nice_level" >/proc/self/autogroup 2>/dev/null || true
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
bots="${BOTS_BIN:-$target/release/onair-bots}"
rounds="${ROUNDS:-3}"
read -r -a builds <<<"${BUILDS:-onair=$target/release/onair}"
out="$here/results/busy-room"
mkdir -p "$out"
secret="busy-room-secret-$RANDOM$RANDOM-0123456789"
port="${PORT:-7830}"

pid=""
work="$(mktemp -d)"
stop_server() {
  if [[ -n "$pid" ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
  fi
}
trap 'stop_server; rm -rf "$work"' EXIT

for round in $(seq 1 "$rounds"); do
  n=${#builds[@]}
  for k in $(seq 0 $((n - 1))); do
    build="${builds[$(((k + round - 1) % n))]}"
    label="${build%%=*}"
    onair="${build#*=}"
    rm -rf "$work/data"; mkdir -p "$work/data"
    (cd "$work/data" && exec env ONAIR_AUTH__JWT_SECRET="$secret" ONAIR_LISTEN="127.0.0.1:$port" \
      nice -n "$nice_level" "$onair" --log-format json >"$work/onair.log" 2>&1) &
    pid=$!
    for _ in $(seq 1 100); do
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
      sleep 0.1
    done
    echo "busy-room: round $round, $label (pid $pid)" >&2
    ONAIR_AUTH__JWT_SECRET="$secret" timeout 400 nice -n "$nice_level" "$bots" --quiet --json \
      --max-secs 380 --url "ws://127.0.0.1:$port/signaling" --server-pid "$pid" \
      busy-room ${ARGS:-} >"$out/$label.$round.json" || true
    stop_server
  done
done

labels=()
for build in "${builds[@]}"; do labels+=("${build%%=*}"); done
python3 - "$out" "$rounds" "${labels[@]}" <<'EOF'
import json, statistics, sys
out, rounds, labels = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rows = [
    ("quiet idle p50 ms", lambda r: r["idle"]["p50_ms"]),
    ("quiet idle p99 ms", lambda r: r["idle"]["p99_ms"]),
    ("quiet loaded p50 ms", lambda r: r["loaded"]["p50_ms"]),
    ("quiet loaded p99 ms", lambda r: r["loaded"]["p99_ms"]),
    ("quiet loaded max ms", lambda r: r["loaded"]["max_ms"]),
    ("loaded p99 / idle p99", lambda r: r["p99_ratio"]),
    ("quiet probes lost (loaded)", lambda r: r["loaded"]["lost"]),
    ("busy sockets failed", lambda r: r["busy_failed"]),
    ("busy toggles/s sent", lambda r: r["busy_toggles_per_s"]),
    ("busy updates/s received", lambda r: r["busy_updates_per_s"]),
    ("server CPU s in the window", lambda r: r.get("server_cpu_s") or 0.0),
]
for label in labels:
    runs = []
    for r in range(1, rounds + 1):
        try:
            runs.append(json.load(open(f"{out}/{label}.{r}.json")))
        except Exception as e:
            print(f"{label} round {r}: no report ({e})")
    if not runs:
        continue
    print(f"{label}: medians of {len(runs)} rounds (min-max)")
    for name, get in rows:
        values = [get(r) for r in runs]
        print(f"  {name:30} {statistics.median(values):10.2f}  ({min(values):.2f}-{max(values):.2f})")
EOF
