#!/usr/bin/env bash
# Run every test: fast unit tests and the real-engine tests against a sandbox.
# Sets the toolchain up first (cached after the first run). Extra arguments go
# to pytest, e.g. `scripts/test.sh -m "not engine"` for the fast ones only.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
start=$(date +%s)
env_file=$(bash "$here/scripts/setup.sh" | tail -n 1)
echo "[timing] setup (toolchain, Python environments; cached after the first run): $(( $(date +%s) - start ))s"
# shellcheck source=/dev/null
. "$env_file"
cd "$here"
exec python -m pytest "$@"
