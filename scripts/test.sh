#!/usr/bin/env bash
# Run every test: fast unit tests and the real-engine tests against both test beds.
# Sets the toolchain up first (cached after the first run).
#
# With no arguments (what CI runs) the tests run as two pytest processes AT THE SAME
# TIME, each with its own test bed, its own Pulumi state and its own subnet:
#   [machines]  tests marked `machines`: the cloud of real Debian machines (systemd-nspawn)
#   [loopback]  everything else: unit tests and the loopback test bed (127.0.77.x)
# The machine tests spend most of their time waiting on remote work (package installs,
# services starting, guests booting), which leaves the second core to the others. Each
# line of output carries its process's prefix; the run fails if either fails.
#
# Extra arguments go to ONE pytest process, e.g. `scripts/test.sh -m "not engine"` for
# the fast ones only, or `scripts/test.sh tests/engine/test_regions.py`.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
start=$(date +%s)
env_file=$(bash "$here/scripts/setup.sh" | tail -n 1)
echo "[timing] setup (toolchain, Python environments; cached after the first run): $(( $(date +%s) - start ))s"
# shellcheck source=/dev/null
. "$env_file"
cd "$here"
if [ $# -gt 0 ]; then
  exec python -m pytest "$@"
fi

export PYTHONUNBUFFERED=1
prefixed() {  # a pytest process, its output line by line under a prefix; its status
  local name=$1; shift
  set +e
  python -m pytest -p no:cacheprovider "$@" 2>&1 | sed -u "s/^/[$name] /"
  local status=${PIPESTATUS[0]}
  set -e
  echo "[$name] pytest exited with $status after $(( $(date +%s) - start ))s"
  return "$status"
}
prefixed machines -m machines &
machines=$!
loopback_status=0
prefixed loopback -m "not machines" || loopback_status=$?
machines_status=0
wait "$machines" || machines_status=$?
echo "[timing] all tests: $(( $(date +%s) - start ))s (machines: exit $machines_status, loopback: exit $loopback_status)"
[ "$machines_status" -eq 0 ] && [ "$loopback_status" -eq 0 ]
