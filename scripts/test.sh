#!/usr/bin/env bash
# Run every test: fast unit tests and the real-engine tests against both test beds.
# Sets the toolchain up first (cached after the first run). Extra arguments go to
# pytest, e.g. `scripts/test.sh -m "not engine"` for the fast ones only,
# `scripts/test.sh -m machines` for the tests on the test bed of real machines,
# `scripts/test.sh -m "engine and not machines"` for the loopback test bed's.
#
# One pytest process: both test beds and the Pulumi engine are CPU-bound, and run side
# by side on a 2-core machine they took about as long in all (62 min) as one after the
# other, each 1.65 times slower.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
start=$(date +%s)
env_file=$(bash "$here/scripts/setup.sh" | tail -n 1)
echo "[timing] setup (toolchain, Python environments; cached after the first run): $(( $(date +%s) - start ))s"
# shellcheck source=/dev/null
. "$env_file"
cd "$here"
exec python -m pytest "$@"
