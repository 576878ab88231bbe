#!/usr/bin/env bash
# Large rooms (issue 14): idle memory of 10,000 joined clients in ONE room (large-room
# mode) beside 10,000 in 1,000 rooms of 10, with the shared kit's bench, ROUNDS rounds,
# a fresh onair for every run. Needs the bench that ../shared/peers/compare.sh builds
# (run that once) and a release build:
#
#   cargo build --release --bin onair
#   load-tests/hold-one-room.sh                 # ROUNDS=3, target/release/onair
#
# Raw reports: load-tests/results/hold-one-room/rooms<R>-<round>.{json,txt}
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
onair="${ONAIR:-$here/../target/release/onair}"
bench="${PEERS_WORK:-${TMPDIR:-/tmp}/onair-peers}/target/release/bench"
[[ -x "$bench" ]] || { echo "no bench at $bench: run ../shared/peers/compare.sh once" >&2; exit 2; }
export ONAIR_AUTH__JWT_SECRET=hold-one-room-secret-0123456789
out="$here/results/hold-one-room"; mkdir -p "$out"
port="${PORT:-7812}"
for round in $(seq 1 "${ROUNDS:-3}"); do
  for rooms in 1 1000; do
    data="$(mktemp -d)"
    (cd "$data" && exec env ONAIR_STORE__PATH="$data/onair.db" RUST_LOG=warn "$onair" --listen "127.0.0.1:$port") >>"$out/onair.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    sleep 1
    "$bench" hold --url "ws://127.0.0.1:$port/signaling" --clients 10000 --rooms "$rooms" \
      --server-pid "$pid" --json-out "$out/rooms$rooms-$round.json" >"$out/rooms$rooms-$round.txt" 2>/dev/null || true
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$data"
    sleep 1
  done
done
python3 - "$out" <<'PY'
import glob, json, statistics, sys
out = sys.argv[1]
for rooms in (1, 1000):
    runs = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/rooms{rooms}-*.json"))]
    kib = [r["server_rss_per_client_kib"] for r in runs]
    failed = [r["failed"] for r in runs]
    print(f"10,000 in {rooms} room(s): {statistics.median(kib):.2f} KiB per joined client "
          f"({min(kib):.2f}-{max(kib):.2f}), failed {max(failed)}, {len(runs)} runs")
PY
