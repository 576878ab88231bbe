#!/usr/bin/env bash
# Tests of the JavaScript client and the page, against the real onair binary.
#
# Run from anywhere: bash clients/js/test.sh
# Needs target/debug/onair (cargo build; this script builds nothing) and Node 20+.
# Installs what is missing: Debian's chromium (apt) and the npm devDependencies.
# Environment: ONAIR_BIN (the binary, default target/debug/onair of this repository),
# CHROMIUM_BIN (default /usr/bin/chromium).
set -euo pipefail
# A relative ONAIR_BIN is taken from where the script was started.
if [[ -n "${ONAIR_BIN:-}" ]]; then ONAIR_BIN="$(realpath -m "$ONAIR_BIN")"; fi
cd "$(dirname "$0")"

export ONAIR_BIN="${ONAIR_BIN:-$(realpath -m ../../target/debug/onair)}"
export CHROMIUM_BIN="${CHROMIUM_BIN:-/usr/bin/chromium}"

if [[ ! -x "$ONAIR_BIN" ]]; then
  echo "test.sh: $ONAIR_BIN is missing: run 'cargo build' first" >&2
  exit 1
fi

if ! command -v node >/dev/null || (( $(node -p 'process.versions.node.split(".")[0]') < 20 )); then
  echo "test.sh: Node.js 20 or newer is needed (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

if [[ ! -x "$CHROMIUM_BIN" ]]; then
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  echo "test.sh: installing chromium" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi

npm ci --no-audit --no-fund --loglevel=error

mkdir -p test-artifacts
exec node --test test/*.test.mjs
