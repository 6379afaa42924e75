"""The `ha` config: validated before any change, endpoints on the VIP, HA files per controller."""
from __future__ import annotations

import json

import pytest

from components.settings import ConfigError, parse
from tests.unit.test_program_graph import run_program
from tests.unit.test_settings import KEY, valid

CONTROLLERS = [{"name": f"ctl{i}", "address": f"172.16.181.3{i}", "roles": ["controller"], "hostKey": KEY}
               for i in (1, 2, 3)]
HA_SECRETS = {"vrrpPassword": "vrrp1234", "haproxyStatsPassword": "stats-Secret-99", "erlangCookie": "COOKIE" * 4}


def ha_config(**ha):
    base = {"vip": "172.16.181.30", "virtualRouterId": 51}
    base.update(ha)
    return valid(nodes=json.dumps(CONTROLLERS), ha=json.dumps(base), **HA_SECRETS)


def test_ha_region_uses_the_vip():
    s = parse(ha_config())
    assert s.ha.vip == "172.16.181.30" and s.service_address == "172.16.181.30"


@pytest.mark.parametrize("ha,key", [
    ({"vip": "172.16.181.31"}, "ha.vip"),  # a node's own address
    ({"vip": "10.9.9.9"}, "ha.vip"),  # outside the controllers' subnet
    ({"virtualRouterId": 300}, "ha.virtualRouterId"),
    ({"virtualRouterId": 0}, "ha.virtualRouterId"),
    ({"unknown": 1}, "ha.unknown"),
    ({"subnetPrefix": "24"}, "ha.subnetPrefix"),
])
def test_bad_ha_values_name_the_key(ha, key):
    with pytest.raises(ConfigError) as err:
        parse(ha_config(**ha))
    assert err.value.key == key


def test_fewer_than_three_galera_nodes_need_an_explicit_override():
    two = json.dumps(CONTROLLERS[:2])
    ha = json.dumps({"vip": "172.16.181.30", "virtualRouterId": 51})
    with pytest.raises(ConfigError) as err:
        parse(valid(nodes=two, ha=ha, **HA_SECRETS))
    assert err.value.key == "ha.controllers"
    override = json.dumps({"vip": "172.16.181.30", "virtualRouterId": 51, "allowSmallGalera": True})
    assert parse(valid(nodes=two, ha=override, **HA_SECRETS)).ha.allow_small_galera


def test_ha_secrets_are_required_and_never_shown():
    with pytest.raises(ConfigError) as err:
        parse(valid(nodes=json.dumps(CONTROLLERS), ha=json.dumps({"vip": "172.16.181.30", "virtualRouterId": 51})))
    assert err.value.key == "vrrpPassword"
    with pytest.raises(ConfigError) as err:
        parse(ha_config() | {"vrrpPassword": "much-too-long-for-vrrp"})
    assert "much-too-long" not in str(err.value)


def test_ha_graph_endpoints_on_vip_and_files_on_every_controller():
    rec = run_program({
        "region": "RegionTwo", "keystone": {"stack": "region-one"}, "services": ["image", "compute"],
        "nodes": CONTROLLERS, "servicePassword": "s", "sshPrivateKey": "k",
        "ha": {"vip": "172.16.181.30", "virtualRouterId": 51}, **HA_SECRETS,
    })
    urls = {e.inputs["url"] for e in rec.of_type("keystone:Endpoint") if "identity" not in e.name}
    assert urls and all(u.startswith("https://172.16.181.30:") for u in urls)
    names = {c.name for c in rec.of_type("remote:Command")}
    for i in (1, 2, 3):
        assert f"ha-ctl{i}-file-etc-keepalived-keepalived.conf" in names
        assert f"ha-ctl{i}-file-etc-haproxy-haproxy.cfg" in names
        assert f"ha-ctl{i}-check-haproxy" in names
        assert f"ha-ctl{i}-unit-haproxy" in names


def test_real_nodes_bootstrap_the_first_controller_and_join_the_others():
    rec = run_program({
        "region": "RegionTwo", "keystone": {"stack": "region-one"}, "services": ["image"],
        "nodes": CONTROLLERS, "servicePassword": "s", "sshPrivateKey": "k",
        "ha": {"vip": "172.16.181.30", "virtualRouterId": 51}, **HA_SECRETS,
    })
    commands = {c.name: c.inputs["create"] for c in rec.of_type("remote:Command")}
    assert "galera_new_cluster" in commands["ha-ctl1-cluster-bootstrap"]
    # ... unless another member already runs Galera: then it joins (never a second Primary).
    bootstrap = commands["ha-ctl1-cluster-bootstrap"]
    assert bootstrap.index("/4567") < bootstrap.index("galera_new_cluster")
    for other in ("ctl2", "ctl3"):
        assert "join_cluster rabbit@ctl1" in commands[f"ha-{other}-cluster-join"]
        assert f"ha-{other}-cluster-bootstrap" not in commands
    assert "ha-ctl1-cluster-join" not in commands


def test_ha_admin_region_puts_keystone_behind_the_vip():
    rec = run_program({
        "region": "RegionOne", "keystone": {"node": "ctl1"}, "services": ["image"],
        "nodes": CONTROLLERS, "adminPassword": "a", "servicePassword": "s", "sshPrivateKey": "k",
        "ha": {"vip": "172.16.181.30", "virtualRouterId": 51}, **HA_SECRETS,
    })
    identity = {e.inputs["url"] for e in rec.of_type("keystone:Endpoint") if "identity" in e.name}
    assert identity == {"https://172.16.181.30:5000/v3/"}
    bootstrap = [c for c in rec.of_type("remote:Command") if c.name.endswith("keystone-bootstrap")][0]
    assert "--bootstrap-public-url https://172.16.181.30:5000/v3/" in bootstrap.inputs["create"]
    unit = [c for c in rec.of_type("remote:Command") if c.name.endswith("unit-keystone")][0]
    # Readiness on the node itself, over HTTPS: HAProxy reaches the node's Keystone with TLS too.
    assert "https://172.16.181.31:5000/v3/" in unit.inputs["create"]
    keystone_unit_file = [c for c in rec.of_type("remote:Command")
                          if c.name.endswith("file-etc-systemd-system-keystone.service")][0]
    assert "--certfile /etc/openstack-multiregion/tls/server.pem" in str(keystone_unit_file.inputs["stdin"])


# --- VRRP router ids across regions (recorded on each Keystone region) --------

def region_record(region_id, claims):
    return {"id": region_id, "vrrp_router_ids": claims}


def test_an_ha_region_records_its_router_ids_and_subnet():
    s = parse(ha_config(dbVip="172.16.181.40", dbVirtualRouterId=52))
    assert s.vrrp_claims == [
        {"instance": "api", "vip": "172.16.181.30", "virtual_router_id": 51, "subnet": "172.16.181.0/24"},
        {"instance": "db", "vip": "172.16.181.40", "virtual_router_id": 52, "subnet": "172.16.181.0/24"}]
    assert parse(valid()).vrrp_claims == []


def test_a_router_id_taken_on_the_same_subnet_is_refused_with_the_config_key():
    from components.identity import vrrp_collision

    mine = parse(ha_config()).vrrp_claims
    other = parse(ha_config(vip="172.16.181.50", dbVip="172.16.181.40", dbVirtualRouterId=52)).vrrp_claims
    clash = vrrp_collision([region_record("RegionOne", other), region_record("RegionTwo", [])], "RegionTwo", mine)
    assert clash == ("config openstack-multiregion:ha.virtualRouterId = 51: expected a VRRP router id that no "
                     "other region uses on 172.16.181.0/24; region RegionOne uses 51, 52 there")


def test_the_same_vip_in_two_regions_is_refused():
    from components.identity import vrrp_collision

    mine = parse(ha_config()).vrrp_claims
    other = parse(ha_config(virtualRouterId=60)).vrrp_claims
    clash = vrrp_collision([region_record("RegionOne", other)], "RegionTwo", mine)
    assert clash.startswith("config openstack-multiregion:ha.vip = 172.16.181.30: expected an address")


@pytest.mark.parametrize("other_claims", [
    [{"instance": "api", "vip": "10.0.0.30", "virtual_router_id": 51, "subnet": "10.0.0.0/24"}],  # other subnet
    [{"instance": "api", "vip": "172.16.181.50", "virtual_router_id": 60.0, "subnet": "172.16.181.0/24"}],
    None,  # a region without HA (or created before router ids were recorded)
])
def test_router_ids_on_other_subnets_or_unused_are_accepted(other_claims):
    from components.identity import vrrp_collision

    mine = parse(ha_config()).vrrp_claims
    assert vrrp_collision([region_record("RegionOne", other_claims), region_record("RegionTwo", mine)],
                          "RegionTwo", mine) is None


def test_the_galera_provider_path_is_configurable_and_checked():
    from components import ha_configs
    from components.settings import ha_spec

    s = parse(ha_config(galeraProvider="/usr/lib/galera/libgalera_smm.so"))
    spec = ha_spec(s.ha, "RegionOne", (ha_configs.HaController("ctl1", "172.16.181.31"),), ("image",), False,
                   "vrrp1234", "stats-Secret-99", "C" * 20)
    assert "wsrep_provider = /usr/lib/galera/libgalera_smm.so" in ha_configs.galera_cnf(spec, spec.controllers[0])
    with pytest.raises(ConfigError) as err:
        parse(ha_config(galeraProvider="libgalera.so"))
    assert err.value.key == "ha.galeraProvider"


def test_the_region_databases_are_created_from_sql_on_stdin_with_the_password_quoted():
    from components.ha_cluster import region_database_sql

    s = parse(ha_config())
    passwords = {"glance": "it's\\secret", "nova": "nova-pw", "placement": "p", "neutron": "n", "cinder": "c",
                 "keystone": "k"}
    sql = region_database_sql(s, passwords)
    assert "CREATE DATABASE IF NOT EXISTS `glance`;" in sql and "CREATE DATABASE IF NOT EXISTS `nova_cell0`;" in sql
    # One user per service, with its own password, allowed in from the controllers only.
    assert "GRANT ALL PRIVILEGES ON `nova_api`.* TO 'nova'@'172.16.181.31';" in sql
    assert "'%'" not in sql
    assert "CREATE USER IF NOT EXISTS 'glance'@'172.16.181.32' IDENTIFIED BY 'it\\'s\\\\secret';" in sql
    assert "'nova'@'172.16.181.33' IDENTIFIED BY 'nova-pw';" in sql


def test_galera_listens_on_the_node_address_only():
    from components import ha_configs
    from components.settings import ha_spec

    s = parse(ha_config())
    controllers = tuple(ha_configs.HaController(n["name"], n["address"]) for n in CONTROLLERS)
    spec = ha_spec(s.ha, "RegionOne", controllers, ("image",), False, "vrrp1234", "stats-Secret-99", "C" * 20)
    cnf = ha_configs.galera_cnf(spec, controllers[1])
    assert "gmcast.listen_addr=tcp://172.16.181.32:4567;ist.recv_addr=172.16.181.32:4568" in cnf
    assert "wsrep_sst_receive_address = 172.16.181.32:4444" in cnf


def test_ha_keystone_runs_on_every_controller_with_shared_keys_and_one_bootstrap():
    rec = run_program({
        "region": "RegionOne", "keystone": {"node": "ctl2"}, "services": [],
        "nodes": CONTROLLERS, "adminPassword": "a", "servicePassword": "s", "sshPrivateKey": "k",
        "ha": {"vip": "172.16.181.30", "virtualRouterId": 51}, **HA_SECRETS,
    })
    commands = {c.name: c.inputs for c in rec.of_type("remote:Command")}
    assert {n for n in commands if n.endswith("-unit-keystone")} == {f"admin-ctl{i}-unit-keystone" for i in (1, 2, 3)}
    # keystone.node bootstraps (after the HA cluster created the keystone database) ...
    assert [n for n in commands if n.endswith("keystone-bootstrap")] == ["admin-ctl2-keystone-bootstrap"]
    assert "fernet_setup" not in commands["admin-ctl2-keystone-db"]["create"]
    assert "CREATE DATABASE IF NOT EXISTS `keystone`;" in commands["ha-ctl1-databases"]["stdin"]["value"]
    # ... and every node gets the same generated key repositories.
    for i in (1, 2, 3):
        assert commands[f"admin-ctl{i}-file-etc-keystone-fernet-keys-1"]["stdin"]["value"] == "key-1"
        assert commands[f"admin-ctl{i}-file-etc-keystone-credential-keys-0"]["stdin"]["value"] == "key-0"
    assert len(rec.of_type("keystone:KeyRepository")) == 2


def test_keystone_node_must_be_a_controller_with_ha():
    with_compute = CONTROLLERS + [{"name": "cmp1", "address": "172.16.181.41", "roles": ["compute"], "hostKey": KEY}]
    raw = valid(nodes=json.dumps(with_compute), ha=json.dumps({"vip": "172.16.181.30", "virtualRouterId": 51}),
                keystone=json.dumps({"node": "cmp1"}), adminPassword="a", **HA_SECRETS)
    with pytest.raises(ConfigError) as err:
        parse(raw)
    assert err.value.key == "keystone.node"
