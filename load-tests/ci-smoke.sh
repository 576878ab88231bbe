#!/usr/bin/env bash
# CI smoke test for the load generator: builds onair and onair-bots, starts a
# real onair on a free loopback port, and runs two small scenarios against it
# (50 participants in 5 rooms, a few seconds each). Exits non-zero if a
# scenario saw an error or a missed delivery, or did not run at all.
#
#   load-tests/ci-smoke.sh              # debug builds (shares CI's test build)
#   PROFILE=release load-tests/ci-smoke.sh
#
# Needs only cargo (no node, no python). Bounded: every step has a timeout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
profile="${PROFILE:-debug}"
flags=()
[[ "$profile" == release ]] && flags=(--release)

# ONAIR_BIN=/path/to/onair tests the bots against an onair built elsewhere.
if [[ -z "${ONAIR_BIN:-}" ]]; then
  echo "ci-smoke: building onair ($profile)"
  (cd "$root" && cargo build "${flags[@]}" --bin onair)
fi
echo "ci-smoke: building onair-bots ($profile)"
(cd "$root" && cargo build "${flags[@]}" -p onair-bots --bin onair-bots)
onair="${ONAIR_BIN:-$root/target/$profile/onair}"
bots="$root/target/$profile/onair-bots"

work="$(mktemp -d)"
pid=""
cleanup() {
  if [[ -n "$pid" ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

secret="ci-smoke-secret-$RANDOM$RANDOM-0123456789"
port=""
for _ in $(seq 1 10); do
  candidate=$((20000 + RANDOM % 20000))
  # Skip a port something already answers on.
  if (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then continue; fi
  (cd "$work" && exec env ONAIR_AUTH__JWT_SECRET="$secret" ONAIR_LISTEN="127.0.0.1:$candidate" \
    "$onair" --log-format json >"$work/onair.log" 2>&1) &
  pid=$!
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then port="$candidate"; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  [[ -n "$port" ]] && break
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=""
done
if [[ -z "$port" ]]; then
  echo "ci-smoke: onair did not start; its log:" >&2
  cat "$work/onair.log" >&2 || true
  exit 1
fi
echo "ci-smoke: onair (pid $pid) on 127.0.0.1:$port"

status=0
run() {
  echo "ci-smoke: onair-bots $*"
  if ! ONAIR_AUTH__JWT_SECRET="$secret" timeout 120 "$bots" --quiet --max-secs 100 \
    --url "ws://127.0.0.1:$port/signaling" --server-pid "$pid" "$@"; then
    status=1
  fi
}
run fanout --rooms 5 --room-size 10 --rate 2 --warmup 1 --duration 3 --drain 5
run consent-churn --rooms 5 --room-size 10 --rate 1 --warmup 1 --duration 3 --drain 5

if [[ "$status" -ne 0 ]]; then
  echo "ci-smoke: FAILED (errors or missed deliveries above); onair's log tail:" >&2
  tail -n 30 "$work/onair.log" >&2 || true
  exit 1
fi
echo "ci-smoke: 2 passed, 0 failed"
