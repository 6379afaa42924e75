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
SECRETS = {"vrrpPassword": "vr7Pass", "haproxyStatsPassword": "stats-" + "q" * 16, "erlangCookie": "C" * 24}


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
    SECRETS.update(servicePassword="svc-" + "p" * 20, sshPrivateKey=sandbox.private_key)
    cli.write_stack("region-ha", config, SECRETS)
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
        assert_router_id_77_is_refused_to_another_region(sandbox, cli, admin)
    finally:
        cli.destroy("region-ha")



def assert_router_id_77_is_refused_to_another_region(sandbox, cli, admin):
    """Two regions' keepalived on one subnet must not share a virtual_router_id: each
    region records its ids on its Keystone region, and the next stack checks them."""
    # `openstack region show` prints only the standard fields; openstacksdk reads the record.
    import openstack

    conn = openstack.connect(auth_url=admin["authUrl"], username="admin", password=admin["password"],
                             project_name="admin", user_domain_name="Default", project_domain_name="Default")
    shown = conn.identity.get("/regions/RegionHa").json()["region"]
    assert shown["vrrp_router_ids"] == [{"instance": "api", "vip": VIP, "virtual_router_id": 77,
                                        "subnet": "127.0.77.0/24"}]
    by_name = {n["name"]: n for n in sandbox.nodes}
    clash_nodes = ("node5", "node6")
    clash = {
        "region": "RegionClash", "keystone": {"stack": "region-one"}, "services": ["image"],
        "nodes": [{"name": n, "address": by_name[n]["address"], "sshPort": by_name[n]["port"],
                   "hostKey": by_name[n]["host_key"], "roles": ["controller"]} for n in clash_nodes],
        "nodeRoot": str(sandbox.dir / "nodes" / "{node}" / "root"), "serviceManager": "none",
        "virtualenv": __import__("sys").prefix,
        "ha": {"vip": "127.0.77.101", "virtualRouterId": 77, "interface": host_interface(),
               "allowSmallGalera": True},
    }
    cli.write_stack("region-clash", clash, SECRETS)
    try:
        expected = ("config openstack-multiregion:ha.virtualRouterId = 77: expected a VRRP router id that no other "
                    "region uses on 127.0.77.0/24; region RegionHa uses 77 there")
        for attempt in (cli.run("preview", stack="region-clash", check=False), cli.up("region-clash", check=False)):
            text = attempt.stdout + attempt.stderr
            assert attempt.returncode != 0 and expected in text, text[-2000:]
            assert "Traceback" not in text
        # Nothing changed: no region, no users in Keystone, no file on its nodes.
        assert "RegionClash" not in {r["Region"] for r in sandbox.openstack_json("region", "list", auth=admin)}
        assert not [u for u in sandbox.openstack_json("user", "list", auth=admin) if u["Name"].endswith("RegionClash")]
        for node in clash_nodes:
            assert not (sandbox.dir / "nodes" / node / "root" / "etc/keepalived/keepalived.conf").exists()
        # Another id on the same subnet is fine.
        cli.write_stack("region-clash", {**clash, "ha": {**clash["ha"], "virtualRouterId": 78}}, {})
        cli.run("preview", stack="region-clash")
    finally:
        cli.destroy("region-clash", check=False)
        cli.run("stack", "rm", "--yes", "--force", stack="region-clash", check=False)
