"""Issue: a region with 3 controllers behind a VIP, with the real engine."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.sandbox import SUBNET

pytestmark = pytest.mark.engine

NODES = ("node7", "node8", "node9")


def host_interface() -> str:
    """keepalived -t wants an existing non-loopback interface; it only checks the name."""
    names = sorted(p.name for p in __import__("pathlib").Path("/sys/class/net").iterdir() if p.name != "lo")
    return "eth0" if "eth0" in names else names[0]
VIP = f"{SUBNET}.100"


def controllers(sandbox, names) -> list[dict]:
    """Stack config `nodes` entries for these sandbox nodes, all controllers."""
    by_name = {n["name"]: n for n in sandbox.nodes}
    return [{"name": n, "address": by_name[n]["address"], "sshPort": by_name[n]["port"],
             "hostKey": by_name[n]["host_key"], "roles": ["controller"]} for n in names]
GLANCE_DATABASE: dict[str, str] = {}  # the generated password, read from the node
SECRETS = {"vrrpPassword": "vr7Pass", "haproxyStatsPassword": "stats-" + "q" * 16, "erlangCookie": "C" * 24}


def test_three_controllers_behind_a_vip(sandbox, cli, admin):
    config = {
        "region": "RegionHa", "keystone": {"stack": "region-one"}, "services": ["image", "placement"],
        "nodes": controllers(sandbox, NODES),
        "nodeRoot": str(sandbox.dir / "nodes" / "{node}" / "root"), "serviceManager": "none", "plainHttp": True,
        "virtualenv": __import__("sys").prefix,
        "ha": {"vip": VIP, "virtualRouterId": 77, "interface": host_interface(),
               "galeraProvider": "/usr/lib/galera/libgalera_smm.so"},  # Debian's path
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
                (root / "etc/mysql/mariadb.conf.d/60-galera.cnf").read_text()
            if shutil.which("haproxy") or shutil.which("/usr/sbin/haproxy"):
                check = subprocess.run(["/usr/sbin/haproxy", "-c", "-f", str(haproxy)], capture_output=True, text=True)
                assert check.returncode == 0, check.stdout + check.stderr
        assert states == {"node7": "MASTER", "node8": "BACKUP", "node9": "BACKUP"}
        assert cli.preview_steps("region-ha") == []
        GLANCE_DATABASE["password"] = glance_database_password(sandbox)
        assert_galera_cluster_serves_the_region_through_failover(sandbox, admin)
        assert_router_id_77_is_refused_to_another_region(sandbox, cli, admin)
    finally:
        cli.destroy("region-ha")
    # Destroy stopped what the region ran on its controllers.
    leftovers = subprocess.run(["pgrep", "-af", "|".join(f"{sandbox.dir}/nodes/{n}/root/" for n in NODES)],
                               capture_output=True, text=True).stdout
    assert not [line for line in leftovers.splitlines() if "mariadbd" in line or "haproxy" in line], leftovers


def glance_database_password(sandbox) -> str:
    """The password the program made for the glance database user, as glance reads it."""
    from urllib.parse import unquote, urlsplit

    conf = (sandbox.dir / "nodes" / NODES[0] / "root/etc/glance/glance-api.conf").read_text()
    url = re.search(r"^connection = (.+)$", conf, re.M).group(1)
    return unquote(urlsplit(url).password)


def galera_status(address: str) -> dict:
    """wsrep status of one node, read over TCP with the region's glance database user."""
    import pymysql

    conn = pymysql.connect(host=address, user="glance", password=GLANCE_DATABASE["password"], database="glance",
                           connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW STATUS WHERE Variable_name IN ('wsrep_cluster_size', 'wsrep_local_state_comment')")
            return dict(cur.fetchall())
    finally:
        conn.close()


def assert_galera_cluster_serves_the_region_through_failover(sandbox, admin):
    """The three controllers form one real Galera cluster (bootstrapped on node7, joined
    by node8 and node9); Glance on every controller keeps its records there, reached
    through HAProxy on the VIP; losing node7's MariaDB and Glance loses nothing."""
    import os
    import signal
    import time

    addresses = {n["name"]: n["address"] for n in sandbox.nodes if n["name"] in NODES}
    for node, address in addresses.items():
        assert galera_status(address) == {"wsrep_cluster_size": "3", "wsrep_local_state_comment": "Synced"}, node
    image_file = sandbox.dir / "ha-image.raw"
    image_file.write_bytes(b"\0" * 1024)

    def image_create(name):
        sandbox.openstack("image", "create", "--disk-format", "raw", "--container-format", "bare",
                          "--file", str(image_file), name, region="RegionHa", auth=admin)

    image_create("ha-before")
    # node7 is the Galera node HAProxy writes to (the others are `backup`): crash it,
    # and stop node7's Glance too.
    run7 = sandbox.dir / "nodes" / "node7" / "root" / "run"
    os.kill(int((run7 / "mysqld" / "mariadb.pid").read_text()), signal.SIGKILL)
    os.kill(int((run7 / "openstack-multiregion" / "glance-api.pid").read_text()), signal.SIGTERM)
    deadline, names = time.time() + 90, set()
    while time.time() < deadline and "ha-before" not in names:
        listed = sandbox.openstack("image", "list", "-f", "json", region="RegionHa", auth=admin, check=False)
        names = {i["Name"] for i in __import__("json").loads(listed.stdout)} if listed.returncode == 0 else set()
        time.sleep(2)
    assert "ha-before" in names, "the image written before the failover is not served after it"
    image_create("ha-after")
    for node in ("node8", "node9"):
        assert galera_status(addresses[node])["wsrep_cluster_size"] == "2", node



def assert_router_id_77_is_refused_to_another_region(sandbox, cli, admin):
    """Two regions' keepalived on one subnet must not share a virtual_router_id: each
    region records its ids on its Keystone region, and the next stack checks them."""
    # `openstack region show` prints only the standard fields; openstacksdk reads the record.
    import openstack

    conn = openstack.connect(auth_url=admin["authUrl"], username="admin", password=admin["password"],
                             project_name="admin", user_domain_name="Default", project_domain_name="Default")
    shown = conn.identity.get("/regions/RegionHa").json()["region"]
    assert shown["vrrp_router_ids"] == [{"instance": "api", "vip": VIP, "virtual_router_id": 77,
                                        "subnet": f"{SUBNET}.0/24"}]
    clash_nodes = ("node5", "node6")
    clash = {
        "region": "RegionClash", "keystone": {"stack": "region-one"}, "services": ["image"],
        "nodes": controllers(sandbox, clash_nodes),
        "nodeRoot": str(sandbox.dir / "nodes" / "{node}" / "root"), "serviceManager": "none", "plainHttp": True,
        "virtualenv": __import__("sys").prefix,
        "ha": {"vip": f"{SUBNET}.101", "virtualRouterId": 77, "interface": host_interface(),
               "allowSmallGalera": True},
    }
    cli.write_stack("region-clash", clash, SECRETS)
    try:
        expected = ("config openstack-multiregion:ha.virtualRouterId = 77: expected a VRRP router id that no other "
                    f"region uses on {SUBNET}.0/24; region RegionHa uses 77 there")
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


KEYSTONE_VIP = f"{SUBNET}.110"


def test_keystone_on_three_controllers_behind_a_vip(sandbox, cli):
    """A Keystone stack with `ha` (seed 003): Keystone on every controller on the Galera
    database, the same fernet keys everywhere, reached through HAProxy on the VIP."""
    import os
    import signal
    import time

    from keystoneauth1 import session as ks_session
    from keystoneauth1.identity import v3

    by_name = {n["name"]: n for n in sandbox.nodes}
    config = {
        "region": "RegionKsHa", "keystone": {"node": "node7"}, "services": [],
        "nodes": controllers(sandbox, NODES),
        "nodeRoot": str(sandbox.dir / "nodes" / "{node}" / "root"), "serviceManager": "none", "plainHttp": True,
        "virtualenv": __import__("sys").prefix,
        "ha": {"vip": KEYSTONE_VIP, "virtualRouterId": 80, "interface": host_interface(),
               "galeraProvider": "/usr/lib/galera/libgalera_smm.so"},
    }
    admin_password = "adm-" + "k" * 20
    cli.write_stack("keystone-ha", config, {**SECRETS, "servicePassword": "svc-" + "p" * 20,
                                            "sshPrivateKey": sandbox.private_key, "adminPassword": admin_password})

    def session_at(address):
        auth = v3.Password(auth_url=f"http://{address}:5000/v3", username="admin", password=admin_password,
                           project_name="admin", user_domain_name="Default", project_domain_name="Default")
        return ks_session.Session(auth=auth)

    try:
        cli.up("keystone-ha")
        auth = {"authUrl": f"http://{KEYSTONE_VIP}:5000/v3/", "password": admin_password}
        identity = [e for e in sandbox.openstack_json("endpoint", "list", auth=auth) if e["Region"] == "RegionKsHa"]
        assert {e["URL"] for e in identity} == {f"http://{KEYSTONE_VIP}:5000/v3/"} and len(identity) == 3
        # A token issued by node7 is valid on node9: the nodes share their fernet keys
        # and their database.
        token = session_at(by_name["node7"]["address"]).get_token()
        check = session_at(by_name["node9"]["address"]).get(
            f"http://{by_name['node9']['address']}:5000/v3/auth/tokens", headers={"X-Subject-Token": token},
            raise_exc=False)
        assert check.status_code == 200, check.text
        keys = {n: (sandbox.dir / "nodes" / n / "root" / "etc/keystone/fernet-keys/1").read_text() for n in NODES}
        assert len(set(keys.values())) == 1
        # The generated keys and the database password are secrets in the state.
        state = sandbox.state_text()
        assert keys["node7"] not in state and ("svc-" + "p" * 20) not in state
        assert cli.preview_steps("keystone-ha") == []
        # node7's Keystone goes away: the VIP keeps answering from node8/node9.
        run7 = sandbox.dir / "nodes" / "node7" / "root" / "run" / "openstack-multiregion"
        os.kill(int((run7 / "keystone.pid").read_text()), signal.SIGTERM)
        deadline, issued = time.time() + 60, None
        while time.time() < deadline and issued is None:
            out = sandbox.openstack("token", "issue", "-f", "json", auth=auth, check=False)
            issued = out.stdout if out.returncode == 0 else None
            time.sleep(2)
        assert issued, "no token through the VIP after node7's Keystone stopped"
    finally:
        cli.destroy("keystone-ha")
    leftovers = subprocess.run(["pgrep", "-af", "|".join(f"{sandbox.dir}/nodes/{n}/root/" for n in NODES)],
                               capture_output=True, text=True).stdout
    assert not leftovers.strip(), leftovers
