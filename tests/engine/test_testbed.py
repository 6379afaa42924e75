"""The machines test bed for real: a sandbox of two systemd-nspawn nodes on a bridge of
its own (198.18.77.0/24, or $OMR_TESTBED_SUBNET), reached over SSH the way the program
reaches nodes (components/remote.py: paramiko, pinned host key, RejectPolicy)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from components import remote
from tests.sandbox import SANDBOX_SCRIPT, SandboxInfo

sys.path.insert(0, str(SANDBOX_SCRIPT.parent))
import testbed  # noqa: E402

pytestmark = [pytest.mark.engine, pytest.mark.machines]

SUBNET = os.environ.get("OMR_TESTBED_SUBNET", "198.18.77")


def sandbox(directory: Path, *args: str) -> tuple[str, float]:
    """Run sandbox.py; its log (stderr) and how long it took."""
    start = time.time()
    result = subprocess.run([sys.executable, str(SANDBOX_SCRIPT), "--dir", str(directory), *args],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"sandbox.py {' '.join(args)} failed:\n{result.stderr[-3000:]}"
    return result.stderr, time.time() - start


def connection(sb: SandboxInfo, node: dict, host_key: str | None = None) -> dict:
    return {"node": node["name"], "host": node["address"], "port": node["port"], "user": "root",
            "host_key": host_key or node["host_key"], "private_key": sb.private_key, "dial_error_limit": 1}


def on(conn: dict, command: str) -> str:
    return remote.run(conn, command)[0]


def upstream_bytes(log: Path, client: str, suffix: str = "") -> int:
    """Bytes apt-cacher-ng fetched from outside (its `I` lines) for one client's requests."""
    total = 0
    for line in log.read_text().splitlines():
        fields = line.split("|")
        if len(fields) >= 5 and fields[1] == "I" and fields[3] == client and fields[4].endswith(suffix):
            total += int(fields[2])
    return total


def served_files(log: Path, client: str) -> list[str]:
    return [f.split("|")[4] for f in log.read_text().splitlines() if f.split("|")[1:2] == ["O"] and
            f.split("|")[3] == client]


def daemons(directory: Path, data: dict) -> dict[str, str]:
    """Pid files of what the sandbox runs: nodes' nspawn, the proxy, Keystone."""
    files = [directory / "nodes" / n["name"] / "nspawn.pid" for n in data["nodes"]]
    files += [directory / "proxy" / "apt-cacher-ng.pid", directory / "keystone" / "gunicorn.pid"]
    return {str(f): f.read_text().strip() for f in files}


def init_cgroup(node_dir: Path) -> str:
    """The cgroup lines of the node's systemd, seen from the host."""
    return Path(f"/proc/{testbed.container_init(testbed.container_pid(node_dir))}/cgroup").read_text()


def processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().decode(errors="replace").replace("\0", " ")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found


def test_machines_sandbox_of_two_nodes():
    directory = Path(tempfile.mkdtemp(prefix="omr-testbed-"))
    try:
        _, took = sandbox(directory, "up", "--kind", "machines", "--nodes", "2", "--subnet", SUBNET)
        print(f"up: {took:.1f}s", file=sys.stderr)
        data = json.loads((directory / "sandbox.json").read_text())
        sb = SandboxInfo(directory, data)
        node1, node2 = sb.nodes
        assert data["kind"] == "machines" and data["bridge"].startswith("omr-")
        assert (node1["address"], node2["address"]) == (f"{SUBNET}.11", f"{SUBNET}.12")
        conn1, conn2 = connection(sb, node1), connection(sb, node2)
        # Each node's systemd runs in a cgroup of its own: in a shared one, the nodes'
        # systemds raced over the same unit cgroups (a unit failed at boot: 219/CGROUP).
        machines = [testbed.machine_name(data["bridge"], n["name"]) for n in (node1, node2)]
        cgroups = [init_cgroup(directory / "nodes" / n["name"]) for n in (node1, node2)]
        assert [machine in cgroup for machine, cgroup in zip(machines, cgroups)] == [True, True], cgroups

        # Booted with systemd, reached with the pinned host key; a wrong key is refused.
        for conn, node in ((conn1, node1), (conn2, node2)):
            # A failed unit's own journal comes with the verdict (once, at boot, systemd-sysctl
            # failed on a loaded host; its cause is not known yet).
            state = on(conn, "systemctl is-system-running --wait || { systemctl --failed --no-legend; "
                             "for u in $(systemctl --failed --no-legend --plain | cut -d' ' -f1); do "
                             "journalctl -b -u \"$u\" --no-pager -o cat | tail -n 15; done; }")
            assert state.strip() == "running", state
            assert on(conn, "hostname").strip() == node["name"]
        with pytest.raises(remote.RemoteError, match="does not match the pinned hostKey"):
            on(connection(sb, node1, host_key=node2["host_key"]), "true")

        # What Open vSwitch's userspace datapath and the network agents need.
        on(conn1, "ip tuntap add mode tap tap0 && ip link show tap0 && ip link del tap0")
        on(conn1, "ip netns add omr-probe && ip netns exec omr-probe ip link set lo up && ip netns del omr-probe")

        # Debian packages through the proxy: node2's install downloads no package from outside.
        log = directory / "proxy" / "log" / "apt-cacher.log"
        install = "export DEBIAN_FRONTEND=noninteractive; apt-get update -q && apt-get install -y -q memcached"
        for conn, node in ((conn1, node1), (conn2, node2)):
            start = time.time()
            on(conn, install)
            assert on(conn, "systemctl is-active memcached").strip() == "active"
            print(f"{node['name']} apt install: {time.time() - start:.1f}s, upstream "
                  f"{upstream_bytes(log, node['address'])} bytes "
                  f"(.deb: {upstream_bytes(log, node['address'], '.deb')})", file=sys.stderr)
        assert any(re.search(r"/memcached_[^/]*\.deb$", f) for f in served_files(log, node2["address"]))
        assert upstream_bytes(log, node2["address"], ".deb") == 0

        # Python packages from the wheelhouse, with no index.
        out = on(conn1, "python3 -m venv /root/venv && /root/venv/bin/pip install PyMySQL 2>&1 && "
                        "/root/venv/bin/python -c 'import pymysql'")
        assert "Looking in links: /var/cache/wheelhouse/" in out and "Looking in indexes" not in out

        # A power loss: every process of node2 is gone when `power-off` returns, and its
        # cgroups with them (a node booted again into cgroups still holding the dying
        # processes of its last boot); `power-on` boots it as it was.
        sandbox(directory, "power-off", node2["name"])
        assert testbed.node_processes(machines[1]) == []
        assert [c for c in testbed.node_cgroups(machines[1]) if c.exists()] == []
        sandbox(directory, "power-on", node2["name"])
        assert on(conn2, "systemctl is-system-running --wait || systemctl --failed --no-legend").strip() == "running"
        assert machines[1] in init_cgroup(directory / "nodes" / node2["name"])

        # A second `up` changes nothing and restarts nothing.
        before = daemons(directory, data)
        log_text, took = sandbox(directory, "up")
        print(f"second up: {took:.1f}s", file=sys.stderr)
        assert daemons(directory, data) == before and "booting" not in log_text and took < 20

        # `down` leaves nothing behind.
        links = [link["ifname"] for link in json.loads(subprocess.run(
            ["ip", "-j", "link", "show", "master", data["bridge"]], capture_output=True, text=True, check=True).stdout)]
        assert len(links) == 2, links  # each node's host end of its link
        _, took = sandbox(directory, "down")
        print(f"down: {took:.1f}s", file=sys.stderr)
        assert processes_mentioning(str(directory)) == []
        assert subprocess.run(["ip", "link", "show", "dev", data["bridge"]], capture_output=True).returncode != 0
        assert [link for link in links
                if subprocess.run(["ip", "link", "show", "dev", link], capture_output=True).returncode == 0] == []
        assert str(directory) not in Path("/proc/self/mountinfo").read_text()
        assert [c for m in machines for c in testbed.node_cgroups(m) if c.exists()] == []
        sandbox(directory, "down")  # idempotent
    finally:
        if not os.environ.get("OMR_KEEP_SANDBOX"):
            subprocess.run([sys.executable, str(SANDBOX_SCRIPT), "--dir", str(directory), "down", "--purge"],
                           capture_output=True)
