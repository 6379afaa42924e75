#!/usr/bin/env bash
# The main job: set up (cached), start the local sandbox, deploy region-one (the
# shared Keystone + RegionOne) and region-two with `pulumi up`, then print the
# catalog the way `openstack endpoint list` shows it.
#   scripts/deploy-sandbox.sh [region-one region-two ...]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
stacks=("$@"); [ ${#stacks[@]} -gt 0 ] || stacks=(region-one region-two)
start=$(date +%s)
env_file=$(bash "$here/scripts/setup.sh" | tail -n 1)
# shellcheck source=/dev/null
. "$env_file"
cd "$here"
python scripts/sandbox.py up --nodes $(( ${#stacks[@]} * 2 ))
eval "$(python scripts/sandbox.py env)"
for stack in "${stacks[@]}"; do
  python scripts/sandbox.py stack-config "$stack" >/dev/null
  echo "== pulumi -C $OMR_SANDBOX_PROJECT up --stack $stack"
  pulumi -C "$OMR_SANDBOX_PROJECT" up --yes --skip-preview --stack "$stack" --suppress-permalink
done
echo "== openstack endpoint list (shared Keystone)"
# The admin credential comes from the stack's secret output, into the environment only.
read -r OS_AUTH_URL OS_PASSWORD < <(pulumi -C "$OMR_SANDBOX_PROJECT" stack output adminAuth --show-secrets --json --stack region-one |
  python -c 'import json, sys; a = json.load(sys.stdin); print(a["authUrl"], a["password"])')
export OS_AUTH_URL OS_PASSWORD
OS_USERNAME=admin OS_PROJECT_NAME=admin OS_USER_DOMAIN_NAME=Default OS_PROJECT_DOMAIN_NAME=Default \
OS_IDENTITY_API_VERSION=3 PYTHONWARNINGS=ignore openstack endpoint list --sort-column Region --sort-column "Service Type"
echo "== done in $(( $(date +%s) - start ))s; sandbox: $OMR_SANDBOX (scripts/sandbox.py status|down)"
