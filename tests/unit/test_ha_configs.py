"""Golden tests of the HA files against seeds 001 and 002.

Seed 002 runs three controllers, controller01-03 on 172.16.181.31-.33, behind the VIP
172.16.181.30: one HAProxy `listen` per API with `balance source`, `option httpchk` and
`check inter 2000 rise 2 fall 5`, MariaDB on the VIP with controller01 active and the
others `backup`, Galera over `gcomm://`, RabbitMQ reached directly by every service.
Seed 001 gives the keepalived side: a vrrp_script on haproxy tracked by the instance,
state MASTER with priority 101 on the first node.

Where a seed is unsafe the test asserts the fix: no admin:admin stats page, no stats
page on 0.0.0.0, a track weight that really moves the VIP.
"""
from __future__ import annotations

import configparser
import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from components import ha_configs as ha
from components.ha_configs import (HA_UNITS, HaConfigError, HaController, HaSpec, ha_node_files,
                                   memcached_servers, transport_url, validate)

VIP = "172.16.181.30"
CONTROLLERS = (
    HaController("controller01", "172.16.181.31"),
    HaController("controller02", "172.16.181.32"),
    HaController("controller03", "172.16.181.33"),
)
VRRP_PASSWORD = "Vr7-pass"
STATS_PASSWORD = "St4ts-s3cret$#\"x"
# The admin region runs Keystone and Horizon too (seed 002's controllers run everything).
ALL_APIS = ("identity", "dashboard", "image", "compute", "placement", "network", "volumev3", "volumev2")
SERVER_CHECK = "check inter 2000 rise 2 fall 5"

# Seed 002's listen blocks on the VIP (name -> port); seed 002 calls placement
# "nova_placement_cluster", seed 001 "placement_api_cluster", which is kept here.
# Seed 002's dashboard_cluster (port 80) is not here: Horizon is served over HTTPS by
# Apache on its own node (components/registry/horizon.py), not behind HAProxy.
SEED_LISTENS = {
    "keystone_public_cluster": 5000,
    "glance_api_cluster": 9292,
    "nova_compute_api_cluster": 8774,
    "nova_metadata_api_cluster": 8775,
    # Seed 002's nova_vncproxy_cluster (6080) comes with the VNC proxy: nothing serves it yet.
    "placement_api_cluster": 8778,
    "neutron_api_cluster": 9696,
    "cinder_api_cluster": 8776,
}


@pytest.fixture
def spec() -> HaSpec:
    return HaSpec(
        region="RegionOne",
        vip=VIP,
        controllers=CONTROLLERS,
        interface="eth0",
        virtual_router_id=51,
        vrrp_password=VRRP_PASSWORD,
        stats_password=STATS_PASSWORD,
        stats_address="172.16.181.31",
        apis=ALL_APIS,
        erlang_cookie="RLYWYOQDNFINUBXPUOSA",  # seed 002's cookie, as an example value
    )


def files_of(spec: HaSpec, controller: HaController = CONTROLLERS[0]) -> dict[str, str]:
    return ha_node_files(spec, controller)


# --- small parsers ---------------------------------------------------------------

def haproxy_sections(text: str) -> dict[str, list[str]]:
    """'listen glance_api_cluster' -> its lines, stripped, comments and blanks dropped."""
    sections: dict[str, list[str]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip() if not raw.lstrip().startswith("stats auth") else raw.rstrip()
        if not line.strip():
            continue
        if not line[0].isspace():
            current = " ".join(line.split())
            assert current not in sections, f"section {current!r} twice"
            sections[current] = []
        else:
            assert current is not None, f"line outside a section: {raw!r}"
            sections[current].append(" ".join(line.split()))
    return sections


def listens(text: str) -> dict[str, list[str]]:
    return {name.split(" ", 1)[1]: lines for name, lines in haproxy_sections(text).items()
            if name.startswith("listen ")}


def keepalived_blocks(text: str) -> list[tuple[str, list]]:
    """keepalived.conf as nested (statement, children) pairs; children None for a leaf."""
    root: list = []
    stack = [root]
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line == "}":
            stack.pop()
            assert stack, "unbalanced }"
        elif line.endswith("{"):
            children: list = []
            stack[-1].append((line[:-1].strip(), children))
            stack.append(children)
        else:
            stack[-1].append((line, None))
    assert len(stack) == 1, "unclosed {"
    return root


def block(items: list, name: str) -> list:
    found = [children for statement, children in items if statement == name and children is not None]
    assert len(found) == 1, f"{name!r}: {len(found)} blocks"
    return found[0]


def value(items: list, key: str) -> str:
    found = [statement.split(None, 1)[1] for statement, children in items
             if children is None and statement.split()[0] == key]
    assert len(found) == 1, f"{key!r}: {found}"
    return found[0]


def leaves(items: list) -> list[str]:
    return [statement for statement, children in items if children is None]


def vrrp_instances(text: str) -> dict[str, list]:
    return {statement.split()[1]: children for statement, children in keepalived_blocks(text)
            if statement.startswith("vrrp_instance ")}


def ini(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.read_string(text)
    return parser


def rabbitmq_settings(text: str) -> dict[str, str]:
    settings = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, val = line.partition("=")
            assert key.strip() not in settings, key
            settings[key.strip()] = val.strip()
    return settings


# --- haproxy.cfg -----------------------------------------------------------------

def test_every_api_of_seed_002_listens_on_the_vip(spec):
    blocks = listens(files_of(spec)[ha.HAPROXY_CFG])
    for name, port in SEED_LISTENS.items():
        assert name in blocks, f"listen {name} missing"
        lines = blocks[name]
        assert f"bind {VIP}:{port}" in lines, name
        assert "balance source" in lines, name
        servers = [line for line in lines if line.startswith("server ")]
        # Seed 002's server lines, byte for byte.
        assert servers == [f"server {c.name} {c.address}:{port} {SERVER_CHECK}" for c in CONTROLLERS], name
    assert set(blocks) == {*SEED_LISTENS, "galera_cluster", "stats"}


def test_api_health_checks_are_http(spec):
    blocks = listens(files_of(spec)[ha.HAPROXY_CFG])
    for name in SEED_LISTENS:
        httpchk = [line for line in blocks[name] if line.startswith("option httpchk")]
        # Every API answers its version document on "/" without a token (2xx or 3xx).
        assert httpchk == ["option httpchk GET /"], name


def test_every_api_server_line_checks_2000_2_5(spec):
    text = files_of(spec)[ha.HAPROXY_CFG]
    for name, lines in listens(text).items():
        for line in lines:
            if line.startswith("server "):
                assert line.endswith(SERVER_CHECK), line


def test_only_the_apis_the_region_runs(spec):
    service_region = dataclasses.replace(spec, apis=("image", "network", "compute", "placement", "volumev3"))
    blocks = listens(files_of(service_region)[ha.HAPROXY_CFG])
    assert "keystone_public_cluster" not in blocks and "dashboard_cluster" not in blocks
    assert {"glance_api_cluster", "neutron_api_cluster", "nova_compute_api_cluster", "placement_api_cluster",
            "cinder_api_cluster"} <= set(blocks)
    # volumev2 and volumev3 share one cinder listen block.
    both = dataclasses.replace(spec, apis=("volumev2", "volumev3"))
    assert [n for n in listens(files_of(both)[ha.HAPROXY_CFG]) if n.startswith("cinder")] == ["cinder_api_cluster"]


def test_galera_has_one_active_server_and_the_others_backup(spec):
    blocks = listens(files_of(spec)[ha.HAPROXY_CFG])
    galera = blocks["galera_cluster"]
    assert f"bind {VIP}:3306" in galera
    assert "mode tcp" in galera
    servers = [line for line in galera if line.startswith("server ")]
    # Seed 002's lines exactly: controller01 active, controller02/03 backup.
    assert servers == [
        f"server controller01 172.16.181.31:3306 {SERVER_CHECK}",
        f"server controller02 172.16.181.32:3306 backup {SERVER_CHECK}",
        f"server controller03 172.16.181.33:3306 backup {SERVER_CHECK}",
    ]
    assert len([s for s in servers if " backup " not in s]) == 1
    assert len([s for s in servers if " backup " in s]) == 2


def test_galera_binds_the_db_vip_when_there_is_one(spec):
    with_db_vip = dataclasses.replace(spec, db_vip="172.16.181.29", db_virtual_router_id=52)
    blocks = listens(files_of(with_db_vip)[ha.HAPROXY_CFG])
    assert "bind 172.16.181.29:3306" in blocks["galera_cluster"]
    assert f"bind {VIP}:9292" in blocks["glance_api_cluster"]


def test_rabbitmq_is_not_behind_haproxy(spec):
    text = files_of(spec)[ha.HAPROXY_CFG]
    assert "rabbitmq" not in listens(text)
    assert ":5672" not in text and ":5673" not in text


def test_stats_page_has_a_secret_credential_on_the_given_address(spec):
    text = files_of(spec)[ha.HAPROXY_CFG]
    stats = listens(text)["stats"]
    assert "bind 172.16.181.31:1080" in stats
    auth = [line for line in stats if line.startswith("stats auth")]
    # Single-quoted: haproxy reads $, # and " in the password literally.
    assert auth == [f"stats auth 'haproxy:{STATS_PASSWORD}'"]
    assert "admin:admin" not in text
    assert "0.0.0.0" not in text


def test_stats_page_defaults_to_each_nodes_own_address(spec):
    per_node = dataclasses.replace(spec, stats_address="")
    for c in CONTROLLERS:
        stats = listens(files_of(per_node, c)[ha.HAPROXY_CFG])["stats"]
        assert f"bind {c.address}:1080" in stats


@pytest.mark.parametrize("user,password", [("admin", "admin"), ("haproxy", "haproxy"), ("haproxy", ""),
                                           ("stats", "ADMIN"), ("haproxy", "has'quote"), ("haproxy", "two words")])
def test_stats_credential_is_never_a_default(spec, user, password):
    with pytest.raises(HaConfigError) as error:
        validate(dataclasses.replace(spec, stats_user=user, stats_password=password))
    assert error.value.key == "ha.statsPassword"
    assert "ha.statsPassword = [secret]: expected" in str(error.value)  # a secret is never shown


# --- keepalived.conf --------------------------------------------------------------

def test_vrrp_master_on_the_first_controller_backup_on_the_others(spec):
    instances = [vrrp_instances(files_of(spec, c)[ha.KEEPALIVED_CONF]) for c in CONTROLLERS]
    assert all(list(i) == ["openstack_api"] for i in instances)
    api = [i["openstack_api"] for i in instances]
    assert [value(i, "state") for i in api] == ["MASTER", "BACKUP", "BACKUP"]
    priorities = [int(value(i, "priority")) for i in api]
    assert priorities[0] == 101  # seed 001's MASTER
    assert all(a > b for a, b in zip(priorities, priorities[1:])), priorities
    for i in api:
        assert value(i, "virtual_router_id") == "51"
        assert value(i, "interface") == "eth0"
        assert leaves(block(i, "virtual_ipaddress")) == [f"{VIP} dev eth0"]
        assert leaves(block(i, "track_script")) == ["check_haproxy"]
        auth = block(i, "authentication")
        assert value(auth, "auth_type") == "PASS"
        assert value(auth, "auth_pass") == VRRP_PASSWORD


def test_vrrp_script_tracks_haproxy_with_a_weight_that_moves_the_vip(spec):
    for c in CONTROLLERS:
        top = keepalived_blocks(files_of(spec, c)[ha.KEEPALIVED_CONF])
        script = block(top, "vrrp_script check_haproxy")
        assert value(script, "script") == '"/usr/bin/killall -0 haproxy"'
        weight = int(value(script, "weight"))
        priorities = [ha.priority(spec, other) for other in CONTROLLERS]
        # Every node whose haproxy runs outranks every node whose haproxy is down
        # (seed 001's backup priority 50 with weight 2 never fails over).
        assert min(priorities) + weight > max(priorities)


def test_separate_db_vip_gets_its_own_instance(spec):
    with_db_vip = dataclasses.replace(spec, db_vip="172.16.181.29", db_virtual_router_id=52)
    for index, c in enumerate(CONTROLLERS):
        instances = vrrp_instances(files_of(with_db_vip, c)[ha.KEEPALIVED_CONF])
        assert set(instances) == {"openstack_api", "openstack_db"}
        db = instances["openstack_db"]
        assert value(db, "virtual_router_id") == "52"
        assert leaves(block(db, "virtual_ipaddress")) == ["172.16.181.29 dev eth0"]
        assert leaves(block(db, "track_script")) == ["check_haproxy"]
        assert value(db, "state") == ("MASTER" if index == 0 else "BACKUP")


def test_unicast_peers_are_the_other_controllers(spec):
    unicast = dataclasses.replace(spec, vrrp_unicast=True)
    api = vrrp_instances(files_of(unicast, CONTROLLERS[1])[ha.KEEPALIVED_CONF])["openstack_api"]
    assert value(api, "unicast_src_ip") == "172.16.181.32"
    assert leaves(block(api, "unicast_peer")) == ["172.16.181.31", "172.16.181.33"]
    multicast = vrrp_instances(files_of(spec)[ha.KEEPALIVED_CONF])["openstack_api"]
    assert not [s for s, _ in multicast if s.startswith("unicast")]


# --- galera.cnf ------------------------------------------------------------------

def test_galera_node_settings_of_seed_002(spec):
    for c in CONTROLLERS:
        conf = ini(files_of(spec, c)[ha.GALERA_CNF])
        assert conf.get("mysqld", "bind-address") == c.address
        assert conf.get("mysqld", "binlog_format") == "ROW"
        assert conf.get("mysqld", "default_storage_engine") == "InnoDB"
        assert conf.get("mysqld", "innodb_autoinc_lock_mode") == "2"
        assert conf.get("galera", "wsrep_on") == "ON"
        assert conf.get("galera", "wsrep_provider") == "/usr/lib/galera/libgalera_smm.so"
        assert conf.get("galera", "wsrep_cluster_address") == '"gcomm://172.16.181.31,172.16.181.32,172.16.181.33"'
        assert conf.get("galera", "wsrep_cluster_name") == '"RegionOne"'
        assert conf.get("galera", "wsrep_node_name") == f'"{c.name}"'
        assert conf.get("galera", "wsrep_node_address") == f'"{c.address}"'
        assert conf.get("galera", "wsrep_sst_method") == "rsync"


def test_galera_sst_method_and_provider_are_configurable(spec):
    conf = ini(files_of(dataclasses.replace(spec, sst_method="mariabackup",
                                            galera_provider="/usr/lib/galera/libgalera_smm.so"))[ha.GALERA_CNF])
    assert conf.get("galera", "wsrep_sst_method") == "mariabackup"
    assert conf.get("galera", "wsrep_provider") == "/usr/lib/galera/libgalera_smm.so"


# --- rabbitmq --------------------------------------------------------------------

def test_rabbitmq_listens_on_the_node_and_knows_every_node(spec):
    for c in CONTROLLERS:
        files = files_of(spec, c)
        settings = rabbitmq_settings(files[ha.RABBITMQ_CONF])
        assert settings["listeners.tcp.1"] == f"{c.address}:5672"
        assert settings["cluster_formation.peer_discovery_backend"] == "classic_config"
        nodes = [v for k, v in settings.items() if k.startswith("cluster_formation.classic_config.nodes.")]
        assert nodes == ["rabbit@controller01", "rabbit@controller02", "rabbit@controller03"]
        assert settings["cluster_partition_handling"] == "pause_minority"
        assert "management.tcp.ip" not in settings
        # One cookie on every node, nothing else in the file.
        assert files[ha.ERLANG_COOKIE] == "RLYWYOQDNFINUBXPUOSA"


def test_rabbitmq_management_binds_the_node_address(spec):
    files = files_of(dataclasses.replace(spec, rabbitmq_management=True), CONTROLLERS[2])
    settings = rabbitmq_settings(files[ha.RABBITMQ_CONF])
    assert settings["management.tcp.ip"] == "172.16.181.33"
    assert files[ha.RABBITMQ_ENABLED_PLUGINS] == "[rabbitmq_management].\n"


def test_transport_url_lists_every_node():
    # Seed 002's transport_url, with addresses instead of host names (and the trailing /).
    assert transport_url("openstack", "123456", CONTROLLERS) == (
        "rabbit://openstack:123456@172.16.181.31:5672,openstack:123456@172.16.181.32:5672,"
        "openstack:123456@172.16.181.33:5672/")
    # Host names work too: seed 002's exact list.
    assert transport_url("openstack", "123456", ["controller01", "controller02", "controller03"]) == (
        "rabbit://openstack:123456@controller01:5672,openstack:123456@controller02:5672,"
        "openstack:123456@controller03:5672/")
    # A password with URL characters is percent-encoded (oslo.messaging decodes it).
    assert transport_url("openstack", "p@ss:w/rd", CONTROLLERS[:1]) == \
        "rabbit://openstack:p%40ss%3Aw%2Frd@172.16.181.31:5672/"
    with pytest.raises(ValueError):
        transport_url("openstack", "123456", [])


def test_memcached_servers_lists_every_node():
    assert memcached_servers(CONTROLLERS) == "172.16.181.31:11211,172.16.181.32:11211,172.16.181.33:11211"
    assert memcached_servers(["controller01", "controller02", "controller03"]) == \
        "controller01:11211,controller02:11211,controller03:11211"


# --- the set of files -------------------------------------------------------------

def test_node_files_and_their_units(spec):
    files = files_of(spec)
    assert {ha.KEEPALIVED_CONF, ha.HAPROXY_CFG, ha.GALERA_CNF, ha.RABBITMQ_CONF} <= set(files)
    assert "net.ipv4.ip_nonlocal_bind = 1" in files[ha.SYSCTL_CONF]
    for path in files:
        assert HA_UNITS[path], path
        assert path in ha.HA_FILE_MODES, path
    assert HA_UNITS[ha.KEEPALIVED_CONF] == ("keepalived",)
    assert HA_UNITS[ha.HAPROXY_CFG] == ("haproxy",)
    assert HA_UNITS[ha.GALERA_CNF] == ("mariadb",)
    assert HA_UNITS[ha.RABBITMQ_CONF] == ("rabbitmq-server",)
    assert ha.HA_FILE_MODES[ha.ERLANG_COOKIE] == ("rabbitmq", "rabbitmq", "0400")
    for path, content in files.items():
        if path != ha.ERLANG_COOKIE:
            assert content.startswith("# Managed by openstack-multiregion") or path == ha.RABBITMQ_ENABLED_PLUGINS


def test_node_files_for_an_unknown_controller(spec):
    with pytest.raises(HaConfigError) as error:
        ha_node_files(spec, HaController("controller09", "172.16.181.39"))
    assert error.value.key == "ha.controllers"


def test_small_galera_is_allowed_only_when_asked(spec):
    two = dataclasses.replace(spec, controllers=CONTROLLERS[:2], allow_small_galera=True)
    validate(two)
    assert rabbitmq_settings(files_of(two)[ha.RABBITMQ_CONF])["cluster_partition_handling"] == "autoheal"
    one = dataclasses.replace(spec, controllers=CONTROLLERS[:1], allow_small_galera=True, erlang_cookie="")
    validate(one)
    assert ha.ERLANG_COOKIE not in files_of(one)


# --- validation -------------------------------------------------------------------

def test_seed_spec_is_valid(spec):
    validate(spec)
    validate(spec, subnet_prefix=16)  # seed 002's VIP is a /16 address


@pytest.mark.parametrize("changes,key", [
    ({"vip": "172.16.181.31"}, "ha.vip"),  # the VIP is a controller's own address
    ({"vip": "172.16.182.30"}, "ha.vip"),  # outside the controllers' /24
    ({"vip": "172.16.181.0"}, "ha.vip"),  # the subnet's network address
    ({"vip": "not-an-ip"}, "ha.vip"),
    ({"db_vip": "172.16.181.32", "db_virtual_router_id": 52}, "ha.dbVip"),
    ({"db_vip": "10.0.0.200", "db_virtual_router_id": 52}, "ha.dbVip"),
    ({"db_vip": VIP, "db_virtual_router_id": 52}, "ha.dbVip"),
    ({"virtual_router_id": 0}, "ha.virtualRouterId"),
    ({"virtual_router_id": 256}, "ha.virtualRouterId"),
    ({"db_vip": "172.16.181.29", "db_virtual_router_id": 51}, "ha.dbVirtualRouterId"),
    ({"db_vip": "172.16.181.29"}, "ha.dbVirtualRouterId"),
    ({"db_vip": "172.16.181.29", "db_virtual_router_id": 300}, "ha.dbVirtualRouterId"),
    ({"db_virtual_router_id": 52}, "ha.dbVirtualRouterId"),
    ({"controllers": CONTROLLERS[:2]}, "ha.controllers"),
    ({"controllers": ()}, "ha.controllers"),
    ({"controllers": (*CONTROLLERS[:2], HaController("controller03", "172.16.181.32"))}, "ha.controllers"),
    ({"controllers": (*CONTROLLERS[:2], HaController("controller02", "172.16.181.34"))}, "ha.controllers"),
    ({"controllers": (*CONTROLLERS[:2], HaController("controller03", "172.16.182.33"))}, "ha.controllers"),
    ({"controllers": (*CONTROLLERS[:2], HaController("controller03.example.org", "172.16.181.33"))},
     "ha.controllers[2].name"),
    ({"controllers": (*CONTROLLERS[:2], HaController("controller03", "fe80::1"))}, "ha.controllers[2].address"),
    ({"vrrp_password": ""}, "ha.vrrpPassword"),
    ({"vrrp_password": "longer-than-8"}, "ha.vrrpPassword"),
    ({"vrrp_password": "pa#ss"}, "ha.vrrpPassword"),
    ({"stats_password": ""}, "ha.statsPassword"),
    ({"stats_address": "controller01"}, "ha.statsAddress"),
    ({"stats_port": 5000}, "ha.statsPort"),
    ({"interface": "eth0 eth1"}, "ha.interface"),
    ({"sst_method": "xtrabackup"}, "ha.sstMethod"),
    ({"apis": ("image", "object-store")}, "ha.apis"),
    ({"apis": "image"}, "ha.apis"),
    ({"erlang_cookie": ""}, "ha.erlangCookie"),
    ({"erlang_cookie": "has space"}, "ha.erlangCookie"),
    ({"region": ""}, "region"),
])
def test_validate_names_the_key(spec, changes, key):
    bad = dataclasses.replace(spec, **changes)
    with pytest.raises(HaConfigError) as error:
        validate(bad)
    assert error.value.key == key
    message = str(error.value)
    assert f"openstack-multiregion:{key} = " in message and ": expected " in message


@pytest.mark.parametrize("changes", [
    {"vip": "172.16.181.31"}, {"virtual_router_id": 0}, {"controllers": CONTROLLERS[:2]},
    {"vrrp_password": ""}, {"stats_password": "admin"}, {"erlang_cookie": ""}, {"apis": ("object-store",)},
])
def test_node_files_are_never_rendered_from_a_bad_spec(spec, changes):
    with pytest.raises(HaConfigError):
        ha_node_files(dataclasses.replace(spec, **changes), CONTROLLERS[0])


def test_error_message_names_the_bad_value_but_never_a_secret(spec):
    with pytest.raises(HaConfigError) as error:
        validate(dataclasses.replace(spec, vip="172.16.182.30"))
    assert "172.16.182.30" in str(error.value) and "172.16.181.0/24" in str(error.value)
    with pytest.raises(HaConfigError) as error:
        validate(dataclasses.replace(spec, vrrp_password="longer-than-8"))
    assert "longer-than-8" not in str(error.value) and "[secret]" in str(error.value)


def test_subnet_prefix_decides_what_is_inside(spec):
    far = dataclasses.replace(spec, vip="172.16.200.30")
    with pytest.raises(HaConfigError):
        validate(far)
    validate(far, subnet_prefix=16)
    with pytest.raises(ValueError):
        validate(spec, subnet_prefix=33)


# --- the real tools, when installed -------------------------------------------------

def _tool(name: str) -> str | None:
    """The binary, also where PATH lacks the sbin directories (a non-root PATH)."""
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin",
                                                    "/sbin"]))


HAPROXY = _tool("haproxy")
KEEPALIVED = _tool("keepalived")
VARIANTS = {
    "seed": {},
    "db-vip-unicast": {"db_vip": "172.16.181.29", "db_virtual_router_id": 52, "vrrp_unicast": True},
    "service-region": {"apis": ("image", "compute", "network"), "stats_address": "",
                       "stats_password": "a\\b$HOME#x"},
}


def _write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content)
    return path


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_haproxy_accepts_the_rendered_file(spec, tmp_path, variant):
    s = dataclasses.replace(spec, **VARIANTS[variant])
    for c in CONTROLLERS:
        path = _write(tmp_path, f"haproxy-{c.name}.cfg", files_of(s, c)[ha.HAPROXY_CFG])
        # -c parses and checks without binding: the VIP need not be on this machine.
        result = subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "WARNING" not in result.stdout + result.stderr and "ALERT" not in result.stdout + result.stderr, \
            result.stdout + result.stderr


@pytest.mark.skipif(KEEPALIVED is None, reason="keepalived is not installed")
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_keepalived_accepts_the_rendered_file(spec, tmp_path, variant):
    s = dataclasses.replace(spec, **VARIANTS[variant])
    for c in CONTROLLERS:
        path = _write(tmp_path, f"keepalived-{c.name}.conf", files_of(s, c)[ha.KEEPALIVED_CONF])
        result = subprocess.run([KEEPALIVED, "-t", "-f", str(path)], capture_output=True, text=True, timeout=60)
        # keepalived -t exits 0 on some problems (a missing file) but always says so.
        assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


@pytest.mark.skipif(KEEPALIVED is None, reason="keepalived is not installed")
def test_keepalived_config_test_reports_a_broken_file(spec, tmp_path):
    """The check above would catch a mistake: keepalived -t speaks up on a bad file."""
    text = files_of(spec)[ha.KEEPALIVED_CONF].replace("virtual_router_id 51", "virtual_router_id 300")
    path = _write(tmp_path, "broken.conf", text)
    result = subprocess.run([KEEPALIVED, "-t", "-f", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 or (result.stdout + result.stderr).strip()
