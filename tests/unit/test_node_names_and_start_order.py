"""Node names that are not the machines' hostnames, and units that start in the order
their services need (issue: hardening, items 10, 12 and 13)."""
from __future__ import annotations

import importlib.util
import re
import time
from datetime import datetime, timezone

import pytest

from components import ha_configs as ha
from components import registry
from components.node import NodeUnit, units_in_start_order
from components.systemd_units import Placeholders, unit_file
from tests.sandbox import REPO
from tests.unit.test_service_configs import compute_files, controller_files, ctx, ini  # noqa: F401 (fixture)


def test_every_service_registers_under_the_node_config_name(ctx):  # noqa: F811
    files = controller_files(ctx)  # the controller is "ctl2" in config
    assert ini(files["/etc/nova/nova.conf"]).get("DEFAULT", "host") == "ctl2"
    assert ini(files["/etc/cinder/cinder.conf"]).get("DEFAULT", "host") == "ctl2"
    assert ini(files["/etc/neutron/neutron.conf"]).get("DEFAULT", "host") == "ctl2"
    assert ini(compute_files(ctx)["/etc/nova/nova.conf"]).get("DEFAULT", "host") == "cmp2"


def test_ovn_chassis_goes_by_the_config_name():
    chassis = next(s for s in registry.by_name("neutron").setup if s.name == "ovn-chassis")
    at = Placeholders("/venv", "198.18.1.12", "r1-cmp", "198.18.1.11")
    command = at.fill(chassis.command)
    assert "external_ids:system-id=r1-cmp" in command and "external_ids:hostname=r1-cmp" in command


def test_rabbitmq_nodes_go_by_config_names_that_every_controller_resolves():
    controllers = (ha.HaController("osr1-a", "198.18.1.11"), ha.HaController("osr1-b", "198.18.1.12"),
                   ha.HaController("osr1-c", "198.18.1.13"))
    spec = ha.HaSpec(region="OSR1", vip="198.18.1.100", virtual_router_id=51, controllers=controllers,
                     vrrp_password="pw", erlang_cookie="C" * 20, stats_password="s" * 12)
    files = ha.ha_node_files(spec, controllers[1])
    assert "NODENAME=rabbit@osr1-b\n" in files[ha.RABBITMQ_ENV]
    assert "rabbit@osr1-a" in files[ha.RABBITMQ_CONF]
    assert ha.hosts_block(controllers).splitlines() == [
        f"198.18.1.1{i} osr1-{n} {ha.HOSTS_MARK}" for i, n in ((1, "a"), (2, "b"), (3, "c"))]


def test_the_hosts_block_replaces_its_own_lines_and_keeps_the_operators(tmp_path):
    import subprocess

    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n10.0.0.9 old-ctl # openstack-multiregion\n192.0.2.1 mine\n")
    command = ha.hosts_command([ha.HaController("c1", "198.18.1.11")])
    command = command.replace("/etc/.hosts", str(tmp_path / ".hosts")).replace("/etc/hosts", str(hosts))
    for _ in range(2):  # a rerun changes nothing
        subprocess.run(["sh", "-c", command], check=True)
    assert hosts.read_text() == ("127.0.0.1 localhost\n192.0.2.1 mine\n198.18.1.11 c1 # openstack-multiregion\n")


def test_nova_conductor_and_scheduler_start_after_placement_answers():
    nova = registry.by_name("nova")
    for name in ("nova-conductor", "nova-scheduler"):
        unit = next(u for u in nova.units if u.name == name)
        assert "placement-api" in unit.needs
        text = unit_file(nova, unit, Placeholders("/venv", "198.18.1.11", "r1-ctl", "198.18.1.11"))
        assert "placement-api.service" in text.split("After=")[1].splitlines()[0]
        # systemd never gives up inside (or after) the readiness window.
        assert "StartLimitIntervalSec=0" in text


def test_nova_compute_gets_the_time_nova_takes_to_stop():
    """nova-compute's TimeoutStopSec comes from compute.shutdownTimeout (nova waits that
    long when it stops); the other units keep 30 s."""
    nova = registry.by_name("nova")
    at = Placeholders("/venv", "198.18.1.12", "r1-cmp", "198.18.1.11", compute_stop_timeout=200)
    stop_timeouts = {u.name: re.search(r"^TimeoutStopSec=(\S+)$", unit_file(nova, u, at), re.M).group(1)
                     for u in nova.units if not u.packaged}
    assert stop_timeouts.pop("nova-compute") == "200"
    assert set(stop_timeouts.values()) == {"30"}


def test_apis_keep_idle_connections_longer_than_clients_batch_requests():
    """gunicorn's default keep-alive (2 s) equals neutron's interval between batches of
    port events to nova: a batch sent as gunicorn closed the pooled connection was lost."""
    nova = registry.by_name("nova")
    api = next(u for u in nova.units if u.name == "nova-api")
    text = unit_file(nova, api, Placeholders("/venv", "198.18.1.11", "r1-ctl", "198.18.1.11"))
    assert re.search(r"--keep-alive (\d+)", text).group(1) == "75"


def test_the_chassis_keeps_the_node_name_across_reboots():
    """OVN binds ports to the chassis whose hostname is nova's host: the config name.
    Debian's ovs-record-hostname.service would write the machine's hostname over it at
    every boot, so the chassis step disables it before it sets the name."""
    neutron = registry.by_name("neutron")
    step = next(s for s in neutron.setup if s.name == "ovn-chassis")
    command = Placeholders("/venv", "198.18.1.12", "r1-cmp", "198.18.1.11").fill(step.command)
    assert command.index("systemctl disable -q --now ovs-record-hostname.service") < \
        command.index("external_ids:hostname=r1-cmp")


def test_units_are_ordered_after_the_units_they_need():
    units = [NodeUnit("nova-conductor", (), needs=("placement-api",)), NodeUnit("nova-api", ()),
             NodeUnit("placement-api", ())]
    assert [u.name for u in units_in_start_order(units)] == ["placement-api", "nova-conductor", "nova-api"]
    with pytest.raises(ValueError, match="need each other"):
        units_in_start_order([NodeUnit("a", (), needs=("b",)), NodeUnit("b", (), needs=("a",))])


def ready_tool():
    spec = importlib.util.spec_from_file_location("ready_tool", REPO / "templates" / "tools" / "ready.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000000")


def test_a_heartbeat_from_before_the_restart_is_not_ready():
    """The old process's last heartbeat still reads `up`: only one written in a later
    second than the restart proves the new process (the database keeps whole seconds)."""
    fresh = ready_tool().heartbeat_after(since := time.time())
    assert not fresh({"updated_at": stamp(since - 5)})
    assert not fresh({"updated_at": stamp(int(since))})  # the same second: could be the old one
    assert fresh({"updated_at": stamp(int(since) + 1)})
    assert not fresh({"updated_at": None})


def test_a_renamed_component_never_deletes_what_its_successor_made(tmp_path):
    """A node renamed at the same address: the new component's files and manifest are
    made first, then Pulumi deletes the old component's resources. Those deletes run
    here for real (nodeRoot = tmp_path): the new component's file survives; a file no
    other manifest lists is removed."""
    import subprocess

    from components.node import NodeFile, _push_file_command, manifest_entries, on_node, unless_managed_elsewhere

    root = str(tmp_path)
    shared, dropped = NodeFile("/etc/nova/nova.conf", "x"), NodeFile("/etc/old/only-old.conf", "y")
    old_manifest = on_node(root, "/var/lib/openstack-multiregion/managed.d/region-two.nodes-ctl2")
    new_manifest = on_node(root, "/var/lib/openstack-multiregion/managed.d/region-two.nodes-r2-ctl")

    def sh(command, stdin=""):
        subprocess.run(["sh", "-c", command], input=stdin, text=True, check=True)

    for manifest, files in ((old_manifest, [shared, dropped]), (new_manifest, [shared])):
        sh(_push_file_command(manifest, "0644", "root"), manifest_entries(root, files, [NodeUnit("nova-api", ())]))
        for f in files:
            sh(_push_file_command(on_node(root, f.path), "0640", "root"), f.content)
    for f in (shared, dropped):  # the old component's deletes, after the new one's creates
        target = on_node(root, f.path)
        sh(unless_managed_elsewhere(root, old_manifest, f"file:{target}", f"rm -f {target}"))
    sh(unless_managed_elsewhere(root, old_manifest, "unit:nova-api", f"touch {tmp_path}/stopped"))
    assert (tmp_path / "etc/nova/nova.conf").read_text() == "x"
    assert not (tmp_path / "etc/old/only-old.conf").exists()
    assert not (tmp_path / "stopped").exists()  # the unit the new component runs is left running


# --- memcached answers only clients that authenticate -----------------------------------

def test_every_memcached_client_section_authenticates_with_sasl(ctx):  # noqa: F811
    import dataclasses

    secured = dataclasses.replace(ctx, memcached_password="mc-secret")
    files = controller_files(secured)
    for path, section in (("/etc/nova/nova.conf", "keystone_authtoken"), ("/etc/glance/glance-api.conf",
                                                                          "keystone_authtoken"),
                          ("/etc/neutron/neutron.conf", "keystone_authtoken"),
                          ("/etc/placement/placement.conf", "keystone_authtoken")):
        conf = ini(files[path])
        assert conf.get(section, "memcache_sasl_enabled") == "true", path
        # The advanced pool loses the credentials when the first requests race (macros.j2).
        assert conf.get(section, "memcache_use_advanced_pool") == "false", path
        assert (conf.get(section, "memcache_username"), conf.get(section, "memcache_password")) == \
            ("openstack", "mc-secret"), path
    # cinder-api (eventlet) keeps its token cache in the process: no memcached at all.
    cinder = ini(files["/etc/cinder/cinder.conf"])
    assert not cinder.has_option("keystone_authtoken", "memcached_servers")
    assert "mc-secret" not in files["/etc/cinder/cinder.conf"]
    cache = ini(files["/etc/nova/nova.conf"])
    assert (cache.get("cache", "memcache_sasl_enabled"), cache.get("cache", "username"),
            cache.get("cache", "password")) == ("true", "openstack", "mc-secret")
    assert "mc-secret" not in compute_files(secured)["/etc/nova/nova.conf"]  # computes use no memcached


def test_memcached_runs_with_sasl_on_every_tls_controller():
    from components.templates import render

    assert "\n-S\n" in render("memcached/memcached.conf.j2", region="R", address="198.18.1.11", sasl=True)
    assert "-S" not in render("memcached/memcached.conf.j2", region="R", address="127.0.77.1", sasl=False)
    controllers = (ha.HaController("a", "198.18.1.11"), ha.HaController("b", "198.18.1.12"),
                   ha.HaController("c", "198.18.1.13"))
    spec = ha.HaSpec(region="R", vip="198.18.1.100", controllers=controllers, vrrp_password="pw",
                     erlang_cookie="C" * 20, stats_password="s" * 12, server_pem="/x/server.pem", ca_file="/x/ca.pem")
    files = ha.ha_node_files(spec, controllers[0])
    assert "\n-S\n" in files[ha.MEMCACHED_CONF] and "mech_list: plain" in files[ha.MEMCACHED_SASL_CONF]
    command = ha.memcached_user_command("openstack")
    assert "saslpasswd2 -p" in command  # the password comes on stdin, never on the command line


def test_ovn_databases_take_only_clients_with_a_certificate_of_the_cloud(ctx):  # noqa: F811
    import dataclasses

    secured = dataclasses.replace(ctx, ca_file="/etc/omr/ca.pem", node_pem="/etc/omr/server.pem")
    ml2 = ini(controller_files(secured)["/etc/neutron/plugins/ml2/ml2_conf.ini"])
    assert ml2.get("ovn", "ovn_nb_connection").startswith("ssl:") and ml2.get("ovn", "ovn_sb_connection").startswith(
        "ssl:")
    for db in ("nb", "sb"):
        assert ml2.get("ovn", f"ovn_{db}_private_key") == ml2.get("ovn", f"ovn_{db}_certificate") == \
            "/etc/omr/server.pem"
        assert ml2.get("ovn", f"ovn_{db}_ca_cert") == "/etc/omr/ca.pem"
    plain = ini(controller_files(ctx)["/etc/neutron/plugins/ml2/ml2_conf.ini"])  # plainHttp: plain TCP
    assert plain.get("ovn", "ovn_nb_connection").startswith("tcp:") and not plain.has_option("ovn", "ovn_nb_ca_cert")
    steps = {s.name: s for s in registry.by_name("neutron").setup}
    at = Placeholders("/venv", "198.18.1.11", "r1-ctl", "198.18.1.11", ca_file="/etc/omr/ca.pem",
                      node_pem="/etc/omr/server.pem")
    assert "pssl:6641:198.18.1.11" in at.fill(steps["ovn-central"].command)
    assert "set-ssl /etc/omr/server.pem /etc/omr/server.pem /etc/omr/ca.pem" in at.fill(
        steps["ovn-central-ssl"].command)
    assert "ovn-remote=ssl:198.18.1.11:6642" in at.fill(steps["ovn-chassis"].command)
    assert steps["ovn-central-ssl"].tls_only and steps["ovn-chassis-ssl"].tls_only


def test_keystone_binds_the_configured_port():
    """`keystone.port` reaches the unit (it bound 5000 whatever the config said) and, with
    `ha`, HAProxy's listen on the VIP and its backends."""
    from components.admin_region import keystone_unit

    unit = keystone_unit(5001)
    text = unit_file(registry.KEYSTONE, unit, Placeholders("/venv", "198.18.1.11", "r1-ctl", "198.18.1.11"))
    assert "--bind 198.18.1.11:5001 " in text
    controllers = (ha.HaController("a", "198.18.1.11"), ha.HaController("b", "198.18.1.12"),
                   ha.HaController("c", "198.18.1.13"))
    spec = ha.HaSpec(region="R", vip="198.18.1.100", controllers=controllers, vrrp_password="pw",
                     erlang_cookie="C" * 20, stats_password="s" * 12, apis=("identity",), keystone_port=5001)
    haproxy = ha.ha_node_files(spec, controllers[0])[ha.HAPROXY_CFG]
    assert "198.18.1.100:5001" in haproxy and "198.18.1.12:5001" in haproxy and ":5000" not in haproxy


def test_haproxy_reaches_every_api_over_tls_it_verifies():
    controllers = (ha.HaController("a", "198.18.1.11"), ha.HaController("b", "198.18.1.12"),
                   ha.HaController("c", "198.18.1.13"))
    spec = ha.HaSpec(region="R", vip="198.18.1.100", controllers=controllers, vrrp_password="pw",
                     erlang_cookie="C" * 20, stats_password="s" * 12, apis=("identity", "image", "compute"),
                     server_pem="/x/server.pem", ca_file="/x/ca.pem")
    haproxy = ha.ha_node_files(spec, controllers[0])[ha.HAPROXY_CFG]
    api_servers = [line for line in haproxy.splitlines() if line.strip().startswith("server ")
                   and not line.strip().split()[2].endswith(":3306")]
    assert len(api_servers) == 4 * 3  # keystone, glance, nova's API and metadata API on three controllers
    assert all(line.endswith(" ssl verify required ca-file /x/ca.pem") for line in api_servers), api_servers


# --- the Keystone client: its own CA file, and no request without a timeout ------------

def test_a_planted_ca_file_is_never_trusted(tmp_path, monkeypatch):
    import hashlib
    import os
    import stat
    import tempfile

    from components import keystone_api

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(keystone_api, "_ca_files", {})
    ca = "-----BEGIN CERTIFICATE-----\nMIIB-the-cloud\n-----END CERTIFICATE-----\n"
    planted = tmp_path / f"omr-ca-{hashlib.sha256(ca.encode()).hexdigest()[:16]}.pem"
    planted.write_text(ca + "-----BEGIN CERTIFICATE-----\nMIIB-an-attacker\n-----END CERTIFICATE-----\n")
    path = keystone_api._ca_file(ca)
    assert path != str(planted) and open(path).read() == ca
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert keystone_api._ca_file(ca) == path  # one copy per process


def test_a_keystone_that_never_answers_fails_within_the_timeout(monkeypatch):
    import socket
    import time

    from components import keystone_api

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)  # accepts connections (the kernel does), never answers
    monkeypatch.setattr(keystone_api, "TOKEN_TIMEOUT", 2)
    monkeypatch.setattr(keystone_api, "_sessions", {})
    auth = {"authUrl": f"http://127.0.0.1:{server.getsockname()[1]}/v3/", "username": "admin", "password": "x"}
    started = time.monotonic()
    with pytest.raises(Exception):
        keystone_api.KeystoneApi(auth, quick=True).get("regions")
    assert time.monotonic() - started < 10
    server.close()
