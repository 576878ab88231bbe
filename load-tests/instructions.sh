#!/usr/bin/env bash
# User-space instructions per delivery (issue 14): onair under callgrind, the shared kit's
# bench running a short and a long fan-out against it; the difference of the two totals,
# divided by the difference of the deliveries, is what one delivery costs onair in its own
# code and its libraries. Callgrind counts instructions, not time, so the figure repeats
# whatever else the machine is doing (wall-clock figures on this VM move by 2-3x with the
# host's load, see RESULTS.md). It leaves out the kernel (the socket writes and wake-ups),
# which the kit's CPU figure includes.
#
#   cargo build --release --bin onair           # and ../shared/peers/compare.sh once, for the bench
#   load-tests/instructions.sh                  # ONAIR=path/to/onair, ROOMS=4 (of 100), SHORT=5, LONG=25
#                                               # KEEP=dir keeps the callgrind files (callgrind_annotate)
#
# Prints one line: instructions per delivery, and the two runs it came from.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
onair="${ONAIR:-$here/../target/release/onair}"
bench="${PEERS_WORK:-${TMPDIR:-/tmp}/onair-peers}/target/release/bench"
[[ -x "$bench" ]] || { echo "no bench at $bench: run ../shared/peers/compare.sh once" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "valgrind is missing (apt-get install valgrind)" >&2; exit 2; }
export ONAIR_AUTH__JWT_SECRET=instructions-secret-0123456789
rooms="${ROOMS:-4}" short="${SHORT:-5}" long="${LONG:-25}" port="${PORT:-7813}"
work="$(mktemp -d)"
trap 'if [[ -n "${KEEP:-}" ]]; then mkdir -p "$KEEP" && cp "$work"/cg-* "$KEEP"/; fi; rm -rf "$work"' EXIT

# One run: onair under callgrind, a fan-out of `seconds`; prints "instructions deliveries".
run() {
  local seconds=$1 data="$work/data-$1"
  mkdir -p "$data"
  # No keepalive: a sweep that falls in one run and not the other is not a delivery's cost.
  (cd "$data" && exec env ONAIR_STORE__PATH="$data/onair.db" ONAIR_SERVER__PING_INTERVAL_S=0 RUST_LOG=warn \
    valgrind --tool=callgrind --callgrind-out-file="$work/cg-$seconds" "$onair" --listen "127.0.0.1:$port") \
    >"$work/onair-$seconds.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 600); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  "$bench" fanout --url "ws://127.0.0.1:$port/signaling" --rooms "$rooms" --size 100 --rate 1 \
    --seconds "$seconds" --drain-seconds 30 --setup-timeout 600 --json-out "$work/fan-$seconds.json" >/dev/null 2>&1
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  local total deliveries
  total=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$work/cg-$seconds")
  deliveries=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["deliveries"])' "$work/fan-$seconds.json")
  echo "$total $deliveries"
}

read -r short_i short_d < <(run "$short")
read -r long_i long_d < <(run "$long")
python3 - "$short_i" "$short_d" "$long_i" "$long_d" <<'PY'
import sys
si, sd, li, ld = map(int, sys.argv[1:])
print(f"{(li - si) / (ld - sd):,.0f} instructions per delivery "
      f"(runs: {si:,} instructions for {sd:,} deliveries, {li:,} for {ld:,})")
PY
