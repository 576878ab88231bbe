#!/usr/bin/env bash
# System calls, context switches and CPU per delivery (issue 14): a server under the shared kit's
# fan-out (100 rooms x 100 at 1 command/s per room), counted by `perf stat` over a 5-second
# window in the middle of the run. Where the kit's CPU figure says how much, this says on what:
# sends, reads, wake-ups of the runtime's threads, SQLite's writes. Wall-clock figures on this VM
# move with the host's load (see RESULTS.md): compare servers measured in turns, by ratio.
#
#   cargo build --release --bin onair           # and ../shared/peers/compare.sh once, for the bench
#   load-tests/syscalls.sh onair [path/to/onair]
#   load-tests/syscalls.sh floor                # the kit's floor, for comparison
#
# Prints one line per counter (a send is `sendto`, or `writev` for several frames at once): the count in the window and per delivery (50,000 in the window).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="${PEERS_WORK:-${TMPDIR:-/tmp}/onair-peers}/target/release"
[[ -x "$work/bench" ]] || { echo "no bench in $work: run ../shared/peers/compare.sh once" >&2; exit 2; }
command -v perf >/dev/null || { echo "perf is missing (apt-get install linux-perf)" >&2; exit 2; }
export ONAIR_AUTH__JWT_SECRET=syscalls-secret-0123456789
server="${1:-onair}" port="${PORT:-7814}"
scratch="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$scratch"' EXIT
case "$server" in
  onair)
    binary="$(realpath "${2:-$here/../target/release/onair}")"
    (cd "$scratch" && exec env ONAIR_STORE__PATH="$scratch/onair.db" RUST_LOG=warn \
      "$binary" --listen "127.0.0.1:$port") >"$scratch/server.log" 2>&1 &
    pid=$!; target=(--url "ws://127.0.0.1:$port/signaling") ;;
  floor)
    "$work/floor" --port "$port" >"$scratch/server.log" 2>&1 &
    pid=$!; target=(--mode floor --url "ws://127.0.0.1:$port/signaling") ;;
  *) echo "usage: $0 onair [binary] | floor" >&2; exit 2 ;;
esac
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
"$work/bench" fanout "${target[@]}" --rooms 100 --size 100 --rate 1 --seconds 16 \
  --server-pid "$pid" --json-out "$scratch/fan.json" >/dev/null 2>&1 &
bench=$!
sleep 8
events=syscalls:sys_enter_sendto,syscalls:sys_enter_writev,syscalls:sys_enter_recvfrom
events+=,syscalls:sys_enter_write,syscalls:sys_enter_pwrite64,syscalls:sys_enter_futex
events+=,syscalls:sys_enter_epoll_wait,context-switches,cpu-migrations,task-clock
perf stat -x, -e "$events" -p "$pid" -o "$scratch/stat" -- sleep 5 >/dev/null 2>&1
wait "$bench" || true
echo "$server: a 5 s window of the fan-out, 50,000 deliveries"
grep -v '^#' "$scratch/stat" | awk -F, 'NF > 2 && $1 != "" {
  name = $3; if (name == "task-clock") name = "task-clock (ms)";
  printf "%-36s %12.0f   per delivery %.4f\n", name, $1, $1 / 50000 }'
