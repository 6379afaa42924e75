"""A Keystone stack with `ha` on the loopback test bed, with the real engine. (A service
region with `ha` runs on real machines: tests/engine/test_ha_machines.py, with real
VRRP, Galera and RabbitMQ; its router-id rules are unit tests, tests/unit/test_ha_settings.py.)"""
from __future__ import annotations

import subprocess

import pytest

from tests.sandbox import SUBNET

pytestmark = pytest.mark.engine

NODES = ("node7", "node8", "node9")


def host_interface() -> str:
    """keepalived -t wants an existing non-loopback interface; it only checks the name."""
    names = sorted(p.name for p in __import__("pathlib").Path("/sys/class/net").iterdir() if p.name != "lo")
    return "eth0" if "eth0" in names else names[0]


def controllers(sandbox, names) -> list[dict]:
    """Stack config `nodes` entries for these sandbox nodes, all controllers."""
    by_name = {n["name"]: n for n in sandbox.nodes}
    return [{"name": n, "address": by_name[n]["address"], "sshPort": by_name[n]["port"],
             "hostKey": by_name[n]["host_key"], "roles": ["controller"]} for n in names]


SECRETS = {"vrrpPassword": "vr7Pass", "haproxyStatsPassword": "stats-" + "q" * 16, "erlangCookie": "C" * 24}


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
