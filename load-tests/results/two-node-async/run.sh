#!/usr/bin/env bash
# One node vs two nodes over Redis: the same bots on the same machine, RUNS
# rounds (default 3), each round single node first, then two nodes, so that
# both see the same background. Raw JSON: <round>.<single|two>.<join|fanout>.json;
# `python3 ../two-node/summary.py` prints the medians and ranges. A cluster keeps its
# files in S3, so the two nodes get a bucket of a local moto server
# (`python3 -m pip install 'moto[server]'`); nothing in these scenarios
# writes a file.
set -u
# The binaries: release builds of this repository (override with B=…).
B=${B:-$(cd "$(dirname "$0")/../../.." && pwd)/target/release}
RUNS=${RUNS:-3}
export ONAIR_AUTH__JWT_SECRET=loadtest-secret-0123456789
export ONAIR_SERVER__MESSAGES_PER_SECOND=1000 ONAIR_SERVER__MESSAGE_BURST=1000
S3=(ONAIR_STORAGE__S3_BUCKET=bench ONAIR_STORAGE__S3_REGION=us-east-1 ONAIR_STORAGE__S3_ENDPOINT=http://127.0.0.1:6398
    ONAIR_STORAGE__S3_ACCESS_KEY_ID=testing ONAIR_STORAGE__S3_SECRET_ACCESS_KEY=testing ONAIR_STORAGE__S3_ALLOW_HTTP=true)
python3 -m moto.server -p 6398 >/dev/null 2>&1 & MOTO=$!
trap 'kill $MOTO 2>/dev/null' EXIT
for _ in $(seq 50); do curl -sf -X PUT http://127.0.0.1:6398/bench >/dev/null && break; sleep 0.2; done
start() { # name port [redis]
  if [ -n "${3:-}" ]; then export ONAIR_CLUSTER__REDIS_URL=redis://127.0.0.1:6399/ "${S3[@]}"; else unset ONAIR_CLUSTER__REDIS_URL ONAIR_STORAGE__S3_BUCKET ONAIR_STORAGE__S3_REGION ONAIR_STORAGE__S3_ENDPOINT ONAIR_STORAGE__S3_ACCESS_KEY_ID ONAIR_STORAGE__S3_SECRET_ACCESS_KEY ONAIR_STORAGE__S3_ALLOW_HTTP; fi
  rm -rf "$PWD/$1"
  ONAIR_STORE__PATH=$PWD/$1/onair.db ONAIR_STORAGE__PATH=$PWD/$1/rec ONAIR_CLUSTER__NODE_ID=$1 \
    $B/onair --listen 127.0.0.1:$2 --log-format json >/dev/null 2>$1.log &
  echo $!
}
# Stops a node with SIGTERM; a node still alive 15 s later is reported (and killed).
stop() {
  for pid in "$@"; do kill "$pid"; done
  for pid in "$@"; do
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then echo "node $pid ignored SIGTERM for 15 s" >&2; kill -9 "$pid"; fi
  done
}
bots() { $B/onair-bots --quiet --json --url "$1" "${@:2}"; }
JOIN=(join-storm --clients 2000 --room-size 10)
FANOUT=(fanout --rooms 20 --room-size 50 --rate 1 --warmup 2 --duration 10)
for r in $(seq "$RUNS"); do
  S=$(start single 7901); sleep 1
  bots ws://127.0.0.1:7901/signaling --server-pid "$S" "${JOIN[@]}" > "$r.single.join.json"
  bots ws://127.0.0.1:7901/signaling --server-pid "$S" "${FANOUT[@]}" > "$r.single.fanout.json"
  stop "$S"
  redis-server --port 6399 --save '' --appendonly no --daemonize yes >/dev/null
  A=$(start node-a 7902 redis); Bn=$(start node-b 7903 redis); sleep 1
  U=ws://127.0.0.1:7902/signaling,ws://127.0.0.1:7903/signaling
  bots "$U" "${JOIN[@]}" > "$r.two.join.json"
  bots "$U" "${FANOUT[@]}" > "$r.two.fanout.json"
  stop "$A" "$Bn"
  redis-cli -p 6399 shutdown nosave >/dev/null 2>&1
done
