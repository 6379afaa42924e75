"""Real guests on the test bed: the guest image built from Debian packages
(scripts/guest_image.py), uploaded to a region's Glance the way nova boots a kernel
directly, and what a guest says about itself on its console."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from tests.sandbox import REPO

sys.path.insert(0, str(REPO / "scripts"))
import guest_image  # noqa: E402

MARK = guest_image.MARK
LEASE = re.compile(re.escape(MARK) + r" lease (\d+\.\d+\.\d+\.\d+)/\d+ on eth0")


def new_keypair(sb, admin, region: str, directory: Path, name: str) -> Path:
    """A fresh SSH key pair; its public half as a key pair of `region`'s nova. Returns
    the private key's file."""
    key = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    sb.openstack("keypair", "create", "--public-key", f"{key}.pub", name, region=region, auth=admin)
    return key


def upload_guest_image(sb, admin, region: str, name: str, *visibility: str) -> str:
    """The kernel (aki), the initramfs (ari) and the root disk whose properties name
    both, in `region`'s Glance; returns the bootable image's id."""
    built = guest_image.ensure_guest_image(lambda m: print(f"[guest-image] {m}"))

    def create(suffix: str, disk_format: str, container: str, path: Path, *extra: str) -> str:
        return sb.openstack_json("image", "create", "--disk-format", disk_format, "--container-format", container,
                                 "--file", str(path), *visibility, *extra, f"{name}{suffix}",
                                 region=region, auth=admin)["id"]

    kernel = create("-kernel", "aki", "aki", built / "vmlinuz")
    ramdisk = create("-ramdisk", "ari", "ari", built / "initrd.img")
    return create("", "raw", "bare", built / "disk.raw", "--property", f"kernel_id={kernel}",
                  "--property", f"ramdisk_id={ramdisk}", "--property", f"os_command_line={guest_image.COMMAND_LINE}")


def console_log(sb, admin, region: str, server: str) -> str:
    return sb.openstack("console", "log", "show", server, region=region, auth=admin, check=False).stdout


def wait_for_console_match(sb, admin, region: str, server: str, pattern: re.Pattern,
                          timeout: float) -> tuple[re.Match | None, str]:
    """The first match of `pattern` in the guest's console log within the timeout (or
    None); and the console log."""
    deadline = time.monotonic() + timeout
    log = ""
    while time.monotonic() < deadline:
        log = console_log(sb, admin, region, server)
        found = pattern.search(log)
        if found:
            return found, log
        time.sleep(3)
    return None, log


def wait_for_console(sb, admin, region: str, server: str, line: str, timeout: float = 180.0) -> tuple[bool, str]:
    """Whether the guest printed `MARK line` within the timeout; and the console log."""
    found, log = wait_for_console_match(sb, admin, region, server, re.compile(re.escape(f"{MARK} {line}")), timeout)
    return found is not None, log


def ssh_from_the_metadata_namespace(sb, compute: str, network_id: str, key: Path, address: str,
                                    command: str) -> str:
    """Run `command` in the guest over SSH from its compute node, inside the network's
    ovnmeta-<network> namespace (the only place on the test bed with a leg in the
    tenant network until it has a router and floating IPs)."""
    remote_key = f"/root/.omr-test-{key.name}"
    sb.ssh(compute, f"umask 077; cat > {remote_key} <<'EOF'\n{key.read_text()}EOF")
    try:
        ssh = (f"ip netns exec ovnmeta-{network_id} ssh -q -i {remote_key} -o StrictHostKeyChecking=no "
               f"-o UserKnownHostsFile=/dev/null -o ConnectTimeout=10 root@{address} {shlex.quote(command)}")
        return sb.ssh(compute, ssh)
    finally:
        sb.ssh(compute, f"rm -f {remote_key}", check=False)


def wait_for_lease(sb, admin, region: str, server: str, timeout: float = 120.0) -> tuple[str | None, str]:
    """The address the guest's DHCP client applied (from its own console), or None
    when none shows within the timeout; and the console log."""
    found, log = wait_for_console_match(sb, admin, region, server, LEASE, timeout)
    return (found.group(1) if found else None), log
