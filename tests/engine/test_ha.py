"""Issue: a region with 3 controllers behind a VIP, with the real engine."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.engine

NODES = ("node7", "node8", "node9")


def host_interface() -> str:
    """keepalived -t wants an existing non-loopback interface; it only checks the name."""
    names = sorted(p.name for p in __import__("pathlib").Path("/sys/class/net").iterdir() if p.name != "lo")
    return "eth0" if "eth0" in names else names[0]
VIP = "127.0.77.100"


def test_three_controllers_behind_a_vip(sandbox, cli, admin):
    by_name = {n["name"]: n for n in sandbox.nodes}
    config = {
        "region": "RegionHa", "keystone": {"stack": "region-one"}, "services": ["image", "placement"],
        "nodes": [{"name": n, "address": by_name[n]["address"], "sshPort": by_name[n]["port"],
                   "hostKey": by_name[n]["host_key"], "roles": ["controller"]} for n in NODES],
        "nodeRoot": str(sandbox.dir / "nodes" / "{node}" / "root"), "serviceManager": "none",
        "virtualenv": __import__("sys").prefix,
        "ha": {"vip": VIP, "virtualRouterId": 77, "interface": host_interface()},
    }
    cli.write_stack("region-ha", config, {
        "servicePassword": "svc-" + "p" * 20, "sshPrivateKey": sandbox.private_key,
        "vrrpPassword": "vr7Pass", "haproxyStatsPassword": "stats-" + "q" * 16, "erlangCookie": "C" * 24})
    try:
        cli.up("region-ha")
        eps = [e for e in sandbox.openstack_json("endpoint", "list", auth=admin) if e["Region"] == "RegionHa"]
        assert len(eps) == 9
        assert all(e["URL"].startswith(f"http://{VIP}:") for e in eps if e["Service Type"] != "identity")
        states = {}
        for node in NODES:
            root = sandbox.dir / "nodes" / node / "root"
            keepalived = (root / "etc/keepalived/keepalived.conf").read_text()
            haproxy = root / "etc/haproxy/haproxy.cfg"
            states[node] = re.search(r"state (MASTER|BACKUP)", keepalived).group(1)
            assert "virtual_router_id 77" in keepalived and VIP in keepalived
            assert f"bind {VIP}:9292" in haproxy.read_text() and f"bind {VIP}:8778" in haproxy.read_text()
            assert "admin:admin" not in haproxy.read_text()
            assert "gcomm://" + ",".join(sandbox.nodes[i]["address"] for i in (6, 7, 8)) in \
                (root / "etc/my.cnf.d/galera.cnf").read_text()
            if shutil.which("haproxy") or shutil.which("/usr/sbin/haproxy"):
                check = subprocess.run(["/usr/sbin/haproxy", "-c", "-f", str(haproxy)], capture_output=True, text=True)
                assert check.returncode == 0, check.stdout + check.stderr
        assert states == {"node7": "MASTER", "node8": "BACKUP", "node9": "BACKUP"}
        assert cli.preview_steps("region-ha") == []
    finally:
        cli.destroy("region-ha")
