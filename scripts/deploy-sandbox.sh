#!/usr/bin/env bash
# The main job: set up (cached), start the test bed's machines (systemd-nspawn, bare
# Debian 12), bring up region-one (the shared Keystone + RegionOne) and region-two on
# them with `pulumi up`, print the catalog, and boot a real guest (QEMU under libvirt)
# in RegionTwo, whose console shows the address its DHCP lease gave it.
#   scripts/deploy-sandbox.sh [region-one region-two ...]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
stacks=("$@"); [ ${#stacks[@]} -gt 0 ] || stacks=(region-one region-two)
start=$(date +%s)
env_file=$(bash "$here/scripts/setup.sh" | tail -n 1)
# shellcheck source=/dev/null
. "$env_file"
cd "$here"
python scripts/sandbox.py up --kind machines --nodes $(( ${#stacks[@]} * 2 ))
eval "$(python scripts/sandbox.py env)"
for stack in "${stacks[@]}"; do
  python scripts/sandbox.py stack-config "$stack" >/dev/null
  echo "== pulumi -C $OMR_SANDBOX_PROJECT up --stack $stack"
  pulumi -C "$OMR_SANDBOX_PROJECT" up --yes --skip-preview --stack "$stack" --suppress-permalink
done

# The admin credential comes from the stack's secret output, into the environment only;
# the cloud's CA (every endpoint is HTTPS) into a file the client verifies with.
export OS_CACERT="$OMR_SANDBOX/ca.pem"
pulumi -C "$OMR_SANDBOX_PROJECT" stack output tlsCa --stack region-one > "$OS_CACERT"
read -r OS_AUTH_URL OS_PASSWORD < <(pulumi -C "$OMR_SANDBOX_PROJECT" stack output adminAuth --show-secrets --json --stack region-one |
  python -c 'import json, sys; a = json.load(sys.stdin); print(a["authUrl"], a["password"])')
export OS_AUTH_URL OS_PASSWORD OS_USERNAME=admin OS_PROJECT_NAME=admin OS_USER_DOMAIN_NAME=Default \
  OS_PROJECT_DOMAIN_NAME=Default OS_IDENTITY_API_VERSION=3 PYTHONWARNINGS=ignore
echo "== openstack endpoint list (the shared Keystone)"
openstack endpoint list --sort-column Region --sort-column "Service Type"

region=RegionTwo
[[ " ${stacks[*]} " == *" region-two "* ]] || region=RegionOne
echo "== a server in $region, through $region's own services"
os() { openstack --os-region-name "$region" "$@"; }
os network show demo-net >/dev/null 2>&1 || os network create demo-net >/dev/null
os subnet show demo-subnet >/dev/null 2>&1 || os subnet create --network demo-net --subnet-range 10.99.0.0/24 demo-subnet >/dev/null
# The test bed's guest image, built from Debian packages (cached): a kernel, an
# initramfs, and the root disk whose properties name both.
if ! os image show demo-guest >/dev/null 2>&1; then
  guest=$(python scripts/guest_image.py)
  kernel=$(os image create --disk-format aki --container-format aki --file "$guest/vmlinuz" demo-guest-kernel -f value -c id)
  ramdisk=$(os image create --disk-format ari --container-format ari --file "$guest/initrd.img" demo-guest-ramdisk -f value -c id)
  os image create --disk-format raw --container-format bare --file "$guest/disk.raw" --property kernel_id="$kernel" \
    --property ramdisk_id="$ramdisk" --property os_command_line="$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["command_line"])' "$guest/manifest.json")" demo-guest >/dev/null
fi
os flavor show demo-small >/dev/null 2>&1 || os flavor create --vcpus 1 --ram 128 --disk 1 demo-small >/dev/null
# A key pair of this region's nova: the guest reads it from the metadata service.
[ -f "$OMR_SANDBOX/demo-key" ] || ssh-keygen -q -t ed25519 -N "" -C demo-key -f "$OMR_SANDBOX/demo-key"
os keypair show demo-key >/dev/null 2>&1 || os keypair create --public-key "$OMR_SANDBOX/demo-key.pub" demo-key >/dev/null
os server show demo-server >/dev/null 2>&1 ||
  os server create --image demo-guest --flavor demo-small --network demo-net --key-name demo-key --wait demo-server >/dev/null
os server show demo-server -c name -c status -c OS-EXT-SRV-ATTR:host -c OS-EXT-SRV-ATTR:instance_name -c addresses
echo "== the guest's own console (a QEMU guest under libvirt on the compute node)"
for _ in $(seq 1 60); do
  os console log show demo-server | grep -aq "omr-guest: ready" && break
  sleep 3
done
os console log show demo-server | grep -a "omr-guest:"
os compute service list
dashboard=$(pulumi -C "$OMR_SANDBOX_PROJECT" stack output dashboardUrl --stack region-one 2>/dev/null || true)
[ -z "$dashboard" ] || echo "== Horizon: $dashboard (user admin; its password: pulumi -C $OMR_SANDBOX_PROJECT stack output adminAuth --show-secrets --stack region-one; the CA your browser must trust: $OS_CACERT)"
echo "== done in $(( $(date +%s) - start ))s; sandbox: $OMR_SANDBOX (scripts/sandbox.py status|down)"
