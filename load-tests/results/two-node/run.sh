#!/usr/bin/env bash
# Single node vs two nodes over Redis, same bots, same machine.
set -u
# The binaries: release builds of this repository (override with B=…).
B=${B:-$(cd "$(dirname "$0")/../../.." && pwd)/target/release}
export ONAIR_AUTH__JWT_SECRET=loadtest-secret-0123456789
export ONAIR_SERVER__MESSAGES_PER_SECOND=1000 ONAIR_SERVER__MESSAGE_BURST=1000
redis-server --port 6399 --save '' --appendonly no --daemonize yes >/dev/null
start() { # name port [redis]
  if [ -n "${3:-}" ]; then export ONAIR_CLUSTER__REDIS_URL=redis://127.0.0.1:6399/; else unset ONAIR_CLUSTER__REDIS_URL; fi
  ONAIR_STORE__PATH=$PWD/$1/onair.db ONAIR_STORAGE__PATH=$PWD/$1/rec ONAIR_CLUSTER__NODE_ID=$1 \
    $B/onair --listen 127.0.0.1:$2 --log-format json >/dev/null 2>$1.log &
  echo $!
}
bots() { $B/onair-bots --quiet --json --url "$1" "${@:2}"; }
S=$(start single 7901); sleep 1
bots ws://127.0.0.1:7901/signaling --server-pid $S join-storm --clients 2000 --room-size 10 > single.join.json
bots ws://127.0.0.1:7901/signaling --server-pid $S fanout --rooms 20 --room-size 50 --rate 1 --warmup 2 --duration 10 > single.fanout.json
kill $S; wait $S 2>/dev/null
A=$(start node-a 7902 redis); Bn=$(start node-b 7903 redis); sleep 1
U=ws://127.0.0.1:7902/signaling,ws://127.0.0.1:7903/signaling
bots $U join-storm --clients 2000 --room-size 10 > two.join.json
bots $U fanout --rooms 20 --room-size 50 --rate 1 --warmup 2 --duration 10 > two.fanout.json
kill $A $Bn; wait 2>/dev/null
redis-cli -p 6399 shutdown nosave >/dev/null 2>&1
