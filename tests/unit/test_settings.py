"""Config validation: every mistake is rejected with the key, the value and what is expected."""
from __future__ import annotations

import json

import pytest

from components.settings import ConfigError, parse

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHxDVG9o8V3l9pQ3B3p1p0y3Jb3q7b8z9q3J6yq3Jb3q"


def valid(**overrides):
    raw = {
        "region": "RegionTwo",
        "keystone": json.dumps({"stack": "region-one"}),
        "services": json.dumps(["image", "compute"]),
        "nodes": json.dumps([
            {"name": "ctl", "address": "192.168.80.85", "roles": ["controller"], "hostKey": KEY},
            {"name": "cmp", "address": "192.168.80.86", "roles": ["compute"], "hostKey": KEY, "sshPort": 2222},
        ]),
        "servicePassword": "s3cret",
        "sshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----",
    }
    raw.update(overrides)
    return {k: v for k, v in raw.items() if v is not None}


def nodes(*items):
    return json.dumps(list(items))


def test_valid_service_region_parses():
    s = parse(valid())
    assert s.region == "RegionTwo"
    assert s.keystone.stack == "region-one" and not s.hosts_keystone
    assert s.services == ("image", "compute")
    assert [n.name for n in s.controllers] == ["ctl"]
    assert s.service_address == "192.168.80.85"
    assert s.node("cmp").ssh_port == 2222
    assert s.service_users == "per-region"


def test_admin_only_region_with_domains_parses():
    s = parse(valid(region="AR", services="[]", keystone=json.dumps({"node": "ctl"}), adminPassword="a",
                    identity=json.dumps({"domains": [
                        {"name": "nhanhoa", "projects": ["phong_ky_thuat"]},
                        {"name": "cloud365", "projects": [{"name": "phong_ky_thuat", "description": "x"}]}]})))
    assert s.hosts_keystone and s.services == ()
    assert [d.projects[0].name for d in s.domains] == ["phong_ky_thuat", "phong_ky_thuat"]


def test_node_root_template():
    s = parse(valid(nodeRoot="/srv/sandbox/{node}/root"))
    assert s.node_root_for("ctl") == "/srv/sandbox/ctl/root"


BAD = [
    ("unknown top-level key", {"regoin": "x"}, "regoin"),
    ("region missing", {"region": None}, "region"),
    ("region with a space", {"region": "Region Two"}, "region"),
    ("region with a slash", {"region": "a/b"}, "region"),
    ("unknown service type", {"services": json.dumps(["image", "dns"])}, "services[1]"),
    ("services not a list", {"services": json.dumps({"image": 1})}, "services"),
    ("duplicate service", {"services": json.dumps(["image", "image"])}, "services"),
    ("duplicate node names", {"nodes": nodes(
        {"name": "ctl", "address": "10.0.0.1", "roles": ["controller"], "hostKey": KEY},
        {"name": "ctl", "address": "10.0.0.2", "roles": ["compute"], "hostKey": KEY})}, "nodes[1].name"),
    ("malformed address", {"nodes": nodes(
        {"name": "ctl", "address": "192.168.80.300", "roles": ["controller"], "hostKey": KEY})}, "nodes[0].address"),
    # Values with a trailing newline (a `$(cat file)` or a YAML block) are not the value.
    ("a region id with a trailing newline", {"region": "RegionTwo\n"}, "region"),
    ("a Keystone stack name with a trailing newline", {"keystone": json.dumps({"stack": "region-one\n"})},
     "keystone.stack"),
    ("a node name with a trailing newline", {"nodes": nodes(
        {"name": "ctl\n", "address": "10.0.0.1", "roles": ["controller"], "hostKey": KEY})}, "nodes[0].name"),
    # Derived names: the region's service users are <service>-<region>, Keystone takes 255.
    ("a region id too long for its service users", {"region": "R" * 250}, "region"),
    # Addresses of the wrong class for a node.
    ("a multicast node address", {"nodes": nodes(
        {"name": "ctl", "address": "224.0.0.5", "roles": ["controller"], "hostKey": KEY})}, "nodes[0].address"),
    ("0.0.0.0 as a node address", {"nodes": nodes(
        {"name": "ctl", "address": "0.0.0.0", "roles": ["controller"], "hostKey": KEY})}, "nodes[0].address"),
    ("a link-local node address", {"nodes": nodes(
        {"name": "ctl", "address": "169.254.1.1", "roles": ["controller"], "hostKey": KEY})}, "nodes[0].address"),
    # Keystone on a port another service of its node takes.
    ("Keystone on glance's port", {"keystone": json.dumps({"node": "ctl", "port": 9292}), "adminPassword": "a"},
     "keystone.port"),
    ("Keystone on MariaDB's port", {"keystone": json.dumps({"node": "ctl", "port": 3306}), "adminPassword": "a"},
     "keystone.port"),
    # Lists given as a string.
    ("services as a string", {"services": json.dumps("image")}, "services"),
    ("endpoint URL of a service the region lacks", {"endpointUrls": json.dumps(
        {"network": {"public": "https://net.example.org:9696"}})}, "endpointUrls.network"),
    ("endpoint URL of an unknown interface", {"endpointUrls": json.dumps(
        {"image": {"private": "https://img.example.org"}})}, "endpointUrls.image.private"),
    ("endpoint URL that is no URL", {"endpointUrls": json.dumps({"image": {"public": "img.example.org:9292"}})},
     "endpointUrls.image.public"),
    ("endpoint URL with a space", {"endpointUrls": json.dumps({"image": {"public": "https://img .example.org"}})},
     "endpointUrls.image.public"),
    ("endpoint URLs as a list", {"endpointUrls": json.dumps(["https://img.example.org"])}, "endpointUrls"),
    ("endpoint URL with a percent sign", {"endpointUrls": json.dumps({"image": {"public": "https://img/a%20b"}})},
     "endpointUrls.image.public"),
    ("roles as a string", {"nodes": nodes(
        {"name": "ctl", "address": "10.0.0.1", "roles": "controller", "hostKey": KEY})}, "nodes[0].roles"),
    # MariaDB's grants name addresses (skip-name-resolve): a DNS name would fail every login.
    ("a DNS name for a node", {"nodes": nodes(
        {"name": "ctl", "address": "ctl.example.org", "roles": ["controller"], "hostKey": KEY})}, "nodes[0].address"),
    ("unknown role", {"nodes": nodes(
        {"name": "ctl", "address": "10.0.0.1", "roles": ["network"], "hostKey": KEY})}, "nodes[0].roles"),
    ("missing host key", {"nodes": nodes(
        {"name": "ctl", "address": "10.0.0.1", "roles": ["controller"]})}, "nodes[0].hostKey"),
    ("ssh port out of range", {"nodes": nodes(
        {"name": "ctl", "address": "10.0.0.1", "roles": ["controller"], "hostKey": KEY, "sshPort": 70000})},
     "nodes[0].sshPort"),
    ("unknown node key", {"nodes": nodes(
        {"name": "ctl", "address": "10.0.0.1", "roles": ["controller"], "hostKey": KEY, "ip": "x"})}, "nodes[0].ip"),
    ("nodes not JSON", {"nodes": "[{name: ctl"}, "nodes"),
    ("keystone both ways", {"keystone": json.dumps({"node": "ctl", "stack": "region-one"})}, "keystone"),
    ("keystone neither way", {"keystone": json.dumps({})}, "keystone"),
    ("keystone missing", {"keystone": None}, "keystone"),
    ("keystone on an unknown node", {"keystone": json.dumps({"node": "nope"}), "adminPassword": "a"},
     "keystone.node"),
    ("missing ssh key", {"sshPrivateKey": None}, "sshPrivateKey"),
    ("missing admin password when hosting Keystone", {"keystone": json.dumps({"node": "ctl"})}, "adminPassword"),
    ("malformed endpoint address", {"endpointAddress": "not an address!"}, "endpointAddress"),
    ("relative node root", {"nodeRoot": "srv/x"}, "nodeRoot"),
    ("node root a shell would read", {"nodeRoot": "/srv/x;reboot"}, "nodeRoot"),
    ("virtualenv with a space", {"virtualenv": "/opt/open stack"}, "virtualenv"),
    ("virtualenv climbing out", {"virtualenv": "/opt/../etc"}, "virtualenv"),
    ("IPv6 endpoint address", {"endpointAddress": "fd00::85"}, "endpointAddress"),
    ("adminOpenrc not a boolean", {"adminOpenrc": "yes please"}, "adminOpenrc"),
    ("unknown service manager", {"serviceManager": "upstart"}, "serviceManager"),
    ("supervised without a virtualenv", {"serviceManager": "none"}, "serviceManager"),
    ("unknown service-user mode", {"serviceUsers": "global"}, "serviceUsers"),
    ("services but no controller", {"nodes": nodes(
        {"name": "cmp", "address": "10.0.0.1", "roles": ["compute"], "hostKey": KEY})}, "nodes"),
    ("malformed memcached server", {"memcachedServers": json.dumps(["10.0.0.1"])}, "memcachedServers[0]"),
    ("duplicate domain", {"identity": json.dumps({"domains": [{"name": "a"}, {"name": "A"}]})},
     "identity.domains[1].name"),
    ("unknown virt type", {"compute": json.dumps({"virtType": "xen"})}, "compute.virtType"),
    ("cgroup controllers as a string", {"compute": json.dumps({"qemuCgroupControllers": "cpu"})},
     "compute.qemuCgroupControllers"),
    ("unknown cgroup controller", {"compute": json.dumps({"qemuCgroupControllers": ["gpu"]})},
     "compute.qemuCgroupControllers"),
    ("shutdown timeout as a string", {"compute": json.dumps({"shutdownTimeout": "30"})}, "compute.shutdownTimeout"),
    ("negative shutdown timeout", {"compute": json.dumps({"shutdownTimeout": -1})}, "compute.shutdownTimeout"),
    # Formerly previews of the engine test (tests/engine/test_faults.py keeps one per class).
    ("endpoint address out of range", {"endpointAddress": "300.1.1.1"}, "endpointAddress"),
    ("memcached server without a port", {"memcachedServers": json.dumps(["nohostport"])}, "memcachedServers[0]"),
    ("node address of three parts", {"nodes": nodes(
        {"name": "ctl", "address": "1.2.3", "roles": ["controller"], "hostKey": KEY})}, "nodes[0].address"),
    ("unknown role", {"nodes": nodes(
        {"name": "ctl", "address": "10.0.0.1", "roles": ["storage"], "hostKey": KEY})}, "nodes[0].roles"),
    ("services as a string", {"services": json.dumps("image")}, "services"),
    ("project name not a string", {"identity": json.dumps({"domains": [{"name": "d", "projects": [42]}]})},
     "identity.domains[0].projects[0]"),
]


def test_endpoint_urls_replace_only_the_endpoints_they_name():
    s = parse(valid(endpointUrls=json.dumps({"image": {"public": "https://images.example.org:9292/v2"},
                                             "compute": {"admin": "http://10.0.0.9:8774/v2.1/%(project_id)s"}})))
    assert s.endpoint_url("image", "public") == "https://images.example.org:9292/v2"
    assert s.endpoint_url("compute", "admin") == "http://10.0.0.9:8774/v2.1/%(project_id)s"
    assert s.endpoint_url("image", "internal") is None and s.endpoint_url("compute", "public") is None


def test_an_endpoint_url_with_credentials_is_refused_without_showing_them():
    with pytest.raises(ConfigError) as err:
        parse(valid(endpointUrls=json.dumps({"image": {"public": "https://admin:URL-CANARY@img.example.org"}})))
    assert err.value.key == "endpointUrls.image.public" and "URL-CANARY" not in str(err.value)


def test_compute_settings_parse():
    compute = parse(valid(compute=json.dumps({"virtType": "qemu", "qemuCgroupControllers": []}))).compute
    assert (compute.driver, compute.virt_type, compute.qemu_cgroup_controllers) == ("libvirt", "qemu", ())
    assert parse(valid()).compute.qemu_cgroup_controllers is None


def test_systemd_waits_longer_than_nova_compute_shuts_down():
    """nova's defaults (160 s for the manager, 180 s in all) unless set, and systemd's
    stop timeout beyond both: a stop never SIGKILLs a nova-compute mid-task."""
    default = parse(valid()).compute
    assert (default.shutdown_timeout, default.graceful_shutdown_timeout) == (160, 180)
    short = parse(valid(compute=json.dumps({"shutdownTimeout": 30}))).compute
    for compute in (default, short):
        assert compute.shutdown_timeout < compute.graceful_shutdown_timeout < compute.stop_timeout


@pytest.mark.parametrize("what,overrides,key", BAD, ids=[b[0] for b in BAD])
def test_bad_config_names_the_key(what, overrides, key):
    with pytest.raises(ConfigError) as err:
        parse(valid(**overrides))
    message = str(err.value)
    assert err.value.key == key
    assert message.startswith(f"config openstack-multiregion:{key} = ")
    assert "expected" in message


def test_error_shows_the_bad_value():
    with pytest.raises(ConfigError, match=r"region = Region Two: expected a Keystone region id"):
        parse(valid(region="Region Two"))


def test_secret_values_never_appear_in_errors():
    with pytest.raises(ConfigError) as err:
        parse(valid(serviceManager="upstart", servicePassword="do-not-print-me"))
    assert "do-not-print-me" not in str(err.value)


# --- secrets never printed, whatever the key ---------------------------------------

CANARY = "canary-7f3a9c"


@pytest.mark.parametrize("overrides,key", [
    ({"adminPasword": CANARY}, "adminPasword"),  # a misspelt secret key
    ({"passwords": json.dumps({"rabitmq": CANARY})}, "passwords.rabitmq"),
    ({"passwords": json.dumps({"rabbitmq": ""})}, "passwords.rabbitmq"),
    ({"passwords": CANARY}, "passwords"),
    ({"passwords": json.dumps({"rabbitmq": CANARY + "/x"})}, "passwords.rabbitmq"),
    # dogpile.cache strips nova's [cache] password and coerces numbers and booleans.
    ({"passwords": json.dumps({"memcached": " " + CANARY})}, "passwords.memcached"),
    ({"passwords": json.dumps({"memcached": CANARY + " "})}, "passwords.memcached"),
    ({"passwords": json.dumps({"memcached": "12345"})}, "passwords.memcached"),
    ({"passwords": json.dumps({"memcached": "True"})}, "passwords.memcached"),
    ({"nodeRoot": CANARY + "/x;y"}, "nodeRoot"),
])
def test_no_config_error_shows_a_secret_value(overrides, key):
    from components.settings import parse as parse_with

    with pytest.raises(ConfigError) as err:
        parse_with(valid(**overrides), secret_keys=frozenset({"nodeRoot"}))
    assert err.value.key == key
    assert CANARY not in str(err.value)


def test_passwords_names_the_purposes_it_overrides():
    s = parse(valid(passwords=json.dumps({"rabbitmq": "r", "database-nova": "d"})))
    assert s.password_overrides == {"rabbitmq", "database-nova"}


def test_a_stack_that_references_itself_names_the_key():
    with pytest.raises(ConfigError) as err:
        parse(valid(keystone=json.dumps({"stack": "organization/openstack-multiregion/region-two"})),
              stack="region-two")
    assert str(err.value).startswith("config openstack-multiregion:keystone.stack = ")
    assert parse(valid(), stack="region-two").keystone.stack == "region-one"
