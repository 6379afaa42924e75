"""An HA region from bare machines (seeds 001/002): three controllers behind a VIP that
keepalived really moves (VRRP on the test bed's bridge), MariaDB Galera and RabbitMQ
clustered across them, HAProxy in front of every API, the OpenStack services on all
three, and a compute node. The same install path as a region without `ha`."""
from __future__ import annotations

import re
import time

import pytest

from tests.sandbox import MACHINE_ALIASES, machine_name

pytestmark = [pytest.mark.engine, pytest.mark.machines]

# Stack names unlike the machines' hostnames (node5..node8): RabbitMQ's cluster, nova,
# cinder and OVN must all go by these.
CONTROLLERS, COMPUTE = ("rha-ctl1", "rha-ctl2", "rha-ctl3"), "rha-cmp"
MACHINE_ALIASES.update(zip((*CONTROLLERS, COMPUTE), ("node5", "node6", "node7", "node8")))
REGION, STACK = "RegionHa", "region-ha"
SECRETS = {"vrrpPassword": "vr7Pass", "haproxyStatsPassword": "stats-" + "q" * 16, "erlangCookie": "C" * 24}


def node_entries(machines) -> list[dict]:
    by_name = {n["name"]: n for n in machines.nodes}
    return [{"name": name, "address": by_name[machine_name(name)]["address"],
             "hostKey": by_name[machine_name(name)]["host_key"],
             "roles": ["compute"] if name == COMPUTE else ["controller"]} for name in (*CONTROLLERS, COMPUTE)]


def vip(machines) -> str:
    """An unused address of the test bed's subnet (nodes are .11 and up)."""
    return f"{machines.data['subnet']}.100"


def vip_holders(machines) -> list[str]:
    return [n for n in CONTROLLERS if f" {vip(machines)}/" in machines.ssh(n, "ip -4 -o addr show dev host0")]


def wait_for(what, check, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(2)
    raise AssertionError(f"{what} within {timeout}s")


def write_ha_stack(machines, cli) -> str:
    """The ha region's stack file; tests/conftest.py's machine_cli brings it up from the
    bare machines together with region-two."""
    config = {
        "region": REGION, "keystone": {"stack": "region-one"},
        "services": ["image", "network", "compute", "placement", "volumev3"],
        "nodes": node_entries(machines), "serviceManager": "systemd",
        "compute": {"driver": "fake"}, "network": {"datapath": "netdev"},
        "ha": {"vip": vip(machines), "virtualRouterId": 51, "interface": "host0"},
    }
    cli.write_stack(STACK, config, {**SECRETS, "sshPrivateKey": machines.private_key})
    return STACK


@pytest.fixture(scope="module")
def ha_region(machines, machine_cli):
    """Deployed by machine_cli; removed once this module is done (before the tests that
    change the shared cloud for good)."""
    yield machine_cli
    machine_cli.destroy(STACK, check=False)


def test_the_cluster_runs_across_the_three_controllers(machines, ha_region):
    assert vip_holders(machines) == [CONTROLLERS[0]]  # MASTER: the first controller (seed 001)
    for node in CONTROLLERS:
        galera = machines.ssh(node, "mysql -N -B -e \"SHOW STATUS WHERE Variable_name IN "
                                    "('wsrep_cluster_size', 'wsrep_local_state_comment')\"")
        assert dict(line.split("\t") for line in galera.splitlines()) == {
            "wsrep_cluster_size": "3", "wsrep_local_state_comment": "Synced"}, (node, galera)
    running = machines.ssh(CONTROLLERS[1], "rabbitmqctl -q cluster_status --formatter json")
    assert sorted(re.findall(r"rabbit@[\w-]+", running.split('"running_nodes"')[1].split("]")[0])) == \
        [f"rabbit@{n}" for n in CONTROLLERS]
    for node in CONTROLLERS:  # every controller runs the region's services
        states = machines.ssh(node, "systemctl is-active nova-api nova-conductor glance-api placement-api "
                                    "neutron-api haproxy keepalived memcached").split()
        assert set(states) == {"active"}, (node, states)


def test_the_region_boots_a_server_through_the_vip(machines, machine_admin, ha_region, tmp_path):
    from tests.engine.test_bare_machines import allocation, boot_server, cli_json, provider_names

    endpoints = [e for e in cli_json(machines, machine_admin, None, "endpoint", "list") if e["Region"] == REGION]
    assert endpoints and all(e["URL"].startswith(f"https://{vip(machines)}:") for e in endpoints
                             if e["Service Type"] != "identity")
    services = {(s["Binary"], s["Host"]): s["State"]
                for s in cli_json(machines, machine_admin, REGION, "compute", "service", "list")}
    assert services == {**{(b, n): "up" for b in ("nova-conductor", "nova-scheduler") for n in CONTROLLERS},
                        ("nova-compute", COMPUTE): "up"}, services
    server = boot_server(machines, machine_admin, REGION, tmp_path)["server"]
    assert server["OS-EXT-SRV-ATTR:host"] == COMPUTE
    mine = allocation(machines, machine_admin, REGION, server["id"])
    assert [provider_names(machines, machine_admin, REGION).get(rp) for rp in mine] == [COMPUTE]


def test_the_vip_moves_when_the_master_loses_haproxy(machines, machine_admin, ha_region):
    """keepalived's check on haproxy (seed 001): the VIP goes to a BACKUP, the APIs keep
    answering there; with haproxy back the first controller takes the VIP again."""
    first, second = CONTROLLERS[:2]
    machines.ssh(first, "systemctl stop haproxy")
    try:
        holder = wait_for("the VIP on another controller", lambda: [n for n in vip_holders(machines)
                                                                      if n != first])
        assert holder == [second], holder  # the next priority
        images = machines.openstack("image", "list", region=REGION, auth=machine_admin)
        assert images.returncode == 0
    finally:
        machines.ssh(first, "systemctl start haproxy")
    wait_for(f"the VIP back on {first}", lambda: vip_holders(machines) == [first])


def test_haproxy_reaches_the_apis_over_tls_it_verifies(machines, ha_region):
    """From another controller (where HAProxy runs): an API on the first controller
    answers only TLS, with a certificate the cloud's CA verifies; plain HTTP gets no
    answer an HTTP client accepts."""
    first, second = CONTROLLERS[:2]
    address = next(n["address"] for n in machines.nodes if n["name"] == machine_name(first))
    ca = "/etc/openstack-multiregion/tls/ca.pem"
    for port in (9292, 8774, 8778, 9696, 8776):  # its APIs (the shared Keystone is region-one's)
        verified = machines.ssh(second, f"echo | openssl s_client -connect {address}:{port} -CAfile {ca} "
                                        f"-verify_return_error 2>&1 | grep -q 'Verify return code: 0 (ok)' "
                                        f"&& echo verified || true")
        assert verified.strip() == "verified", (port, verified)
        plain = machines.ssh(second, f"python3 -c \"import urllib.request; "
                                     f"urllib.request.urlopen('http://{address}:{port}/', timeout=10)\" "
                                     f">/dev/null 2>&1; echo $?").strip()
        assert plain != "0", port
    haproxy = machines.ssh(second, "grep -c 'ssl verify required ca-file' /etc/haproxy/haproxy.cfg").strip()
    assert int(haproxy) >= 3 * 5, haproxy


def galera_status(machines, node) -> dict:
    out = machines.ssh(node, "mysql -N -B -e \"SHOW STATUS WHERE Variable_name IN ('wsrep_cluster_size', "
                             "'wsrep_cluster_status', 'wsrep_cluster_state_uuid', 'wsrep_local_state_comment')\"")
    return dict(line.split("\t") for line in out.splitlines())


def test_a_rerun_bootstrap_joins_the_running_cluster(machines, ha_region):
    """The first controller's MariaDB stopped while the other two keep the cluster; its
    bootstrap step run again (`up --replace`) asks them first and joins: one Primary
    component of three, never a second one."""
    first = CONTROLLERS[0]
    machines.ssh(first, "systemctl stop mariadb")
    try:
        wait_for("the other two in a Primary component of 2",
                 lambda: galera_status(machines, CONTROLLERS[1]).get("wsrep_cluster_size") == "2")
        step = ha_region.urn(STACK, f"ha-{first}-cluster-bootstrap")
        ha_region.up(STACK, "--replace", step, timeout=1200)
    finally:
        machines.ssh(first, "systemctl is-active -q mariadb || systemctl start mariadb", check=False)
    states = {n: galera_status(machines, n) for n in CONTROLLERS}
    assert {s["wsrep_cluster_state_uuid"] for s in states.values()} and \
        len({s["wsrep_cluster_state_uuid"] for s in states.values()}) == 1, states  # one cluster
    assert all(s["wsrep_cluster_size"] == "3" and s["wsrep_cluster_status"] == "Primary"
               and s["wsrep_local_state_comment"] == "Synced" for s in states.values()), states
