#!/usr/bin/env bash
# Installs the fake LiveKit's npm packages (livekit-server-sdk and the
# protocol classes it uses) from package-lock.json. Needs Node.js >= 19 and npm.
# tests/livekit.rs runs this itself when node_modules is missing; CI may run
# it first to keep the install's output apart from the tests'.
set -euo pipefail
cd "$(dirname "$0")"
command -v node >/dev/null || { echo "tests/livekit: Node.js (node) is required" >&2; exit 1; }
command -v npm >/dev/null || { echo "tests/livekit: npm is required" >&2; exit 1; }
npm ci --no-audit --no-fund --loglevel=error
