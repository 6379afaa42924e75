"""Golden tests of the per-service files against seed 000's RegionTwo.

Seed 000 turns controller 192.168.80.85 and compute 192.168.80.86 into RegionTwo,
authenticated by the shared Keystone on 192.168.80.83. Each test asserts the values
the seed writes into the section it edits (steps 3-9). Where the seed shows Keystone's
retired admin port 35357, the shared Keystone's one URL (port 5000) is expected.
"""
from __future__ import annotations

import ast
import configparser
import dataclasses
import subprocess

import jinja2
import pytest
import yaml

from components import service_configs as sc
from components.service_configs import RegionContext, node_files, units_for

KEYSTONE = "http://192.168.80.83:5000"
CONTROLLER = "192.168.80.85"
COMPUTE = "192.168.80.86"
MEMCACHED = "192.168.80.85:11211"
PASSWORD = "passla123"
ALL_SERVICES = ("image", "network", "compute", "placement", "volumev3", "volumev2")


def _db(user: str, name: str) -> str:
    return f"mysql+pymysql://{user}:{PASSWORD}@{CONTROLLER}/{name}"


@pytest.fixture
def ctx() -> RegionContext:
    return RegionContext(
        region="RegionTwo",
        keystone_url=KEYSTONE,
        controller_address=CONTROLLER,
        memcached_servers=MEMCACHED,
        transport_url=f"rabbit://openstack:{PASSWORD}@{CONTROLLER}:5672",
        database_connections={
            "glance": _db("glance", "glance"),
            "nova": _db("nova", "nova"),
            "nova_api": _db("nova", "nova_api"),
            "nova_cell0": _db("nova", "nova_cell0"),
            "neutron": _db("neutron", "neutron"),
            "cinder": _db("cinder", "cinder"),
            "placement": _db("placement", "placement"),
        },
        service_users={s: s for s in ("glance", "nova", "neutron", "cinder", "placement")},
        service_password=PASSWORD,
        admin_password=PASSWORD,
        dashboard_url="http://192.168.80.83/dashboard",
        regions=("RegionOne", "RegionTwo"),
        virt_type="qemu",
    )


def controller_files(ctx: RegionContext, services=ALL_SERVICES) -> dict[str, str]:
    return node_files(ctx, CONTROLLER, ("controller",), services)


def compute_files(ctx: RegionContext) -> dict[str, str]:
    return node_files(ctx, COMPUTE, ("compute",), ALL_SERVICES)


def ini(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read_string(text)
    return parser


def assert_section(conf: configparser.ConfigParser, section: str, expected: dict[str, str]) -> None:
    actual = {key: conf.get(section, key, fallback=None) for key in expected}
    assert actual == expected, f"[{section}]"


def authtoken(user: str, auth_url: str, legacy_auth_uri: bool) -> dict[str, str]:
    """[keystone_authtoken] as seed 000 writes it, with the domain names the brief fixes."""
    expected = {
        "www_authenticate_uri": KEYSTONE,
        "auth_url": auth_url,
        "memcached_servers": MEMCACHED,
        "auth_type": "password",
        "project_domain_name": "Default",
        "user_domain_name": "Default",
        "project_name": "service",
        "username": user,
        "password": PASSWORD,
        "region_name": "RegionTwo",
    }
    if legacy_auth_uri:
        expected["auth_uri"] = KEYSTONE
    return expected


# --- which node gets which file ---------------------------------------------------

def test_controller_gets_a_file_per_service_plus_openrc_clouds_and_redirect(ctx):
    assert set(controller_files(ctx)) == {
        "/etc/glance/glance-api.conf", "/etc/nova/nova.conf", "/etc/neutron/neutron.conf",
        "/etc/cinder/cinder.conf", "/etc/placement/placement.conf", sc.ADMIN_OPENRC,
        "/etc/openstack/clouds.yaml", "/var/www/html/index.html",
    }


def test_compute_gets_only_nova_and_neutron(ctx):
    files = compute_files(ctx)
    assert set(files) == {"/etc/nova/nova.conf", "/etc/neutron/neutron.conf"}
    assert not any(("glance" in p or "cinder" in p or "placement" in p) for p in files)


def test_controller_gets_only_the_services_of_the_region(ctx):
    files = controller_files(ctx, services=("image", "placement"))
    assert set(files) == {"/etc/glance/glance-api.conf", "/etc/placement/placement.conf",
                          sc.ADMIN_OPENRC, "/etc/openstack/clouds.yaml", "/var/www/html/index.html"}


def test_volumev2_alone_still_configures_cinder(ctx):
    assert "/etc/cinder/cinder.conf" in controller_files(ctx, services=("volumev2",))


def test_admin_region_gets_horizon_instead_of_the_redirect(ctx):
    files = node_files(ctx, "192.168.80.83", ("controller",), ("dashboard",))
    assert "/etc/openstack-dashboard/local_settings" in files
    assert "/var/www/html/index.html" not in files


def test_no_redirect_page_without_a_dashboard_url(ctx):
    assert "/var/www/html/index.html" not in controller_files(dataclasses.replace(ctx, dashboard_url=""))


def test_unknown_role_or_service_type_is_an_error(ctx):
    with pytest.raises(ValueError, match="'storage'"):
        node_files(ctx, CONTROLLER, ("storage",), ALL_SERVICES)
    with pytest.raises(ValueError, match="'object-store'"):
        node_files(ctx, CONTROLLER, ("controller",), ("object-store",))


# --- seed 000 step 4: glance ---------------------------------------------------------

def test_glance_api_conf(ctx):
    conf = ini(controller_files(ctx)["/etc/glance/glance-api.conf"])
    assert_section(conf, "keystone_authtoken", authtoken("glance", KEYSTONE, legacy_auth_uri=True))
    assert_section(conf, "DEFAULT", {"bind_host": CONTROLLER})
    assert_section(conf, "database", {"connection": "mysql+pymysql://glance:passla123@192.168.80.85/glance"})
    assert_section(conf, "paste_deploy", {"flavor": "keystone"})
    assert_section(conf, "fs", {"filesystem_store_datadir": "/var/lib/glance/images/"})


# --- seed 000 step 5: nova -----------------------------------------------------------

def test_nova_controller_conf(ctx):
    conf = ini(controller_files(ctx)["/etc/nova/nova.conf"])
    assert_section(conf, "DEFAULT", {"my_ip": CONTROLLER, "transport_url": "rabbit://openstack:passla123@192.168.80.85:5672",
                                     "enabled_apis": "osapi_compute,metadata", "osapi_compute_listen": CONTROLLER})
    assert_section(conf, "api_database", {"connection": "mysql+pymysql://nova:passla123@192.168.80.85/nova_api"})
    assert_section(conf, "database", {"connection": "mysql+pymysql://nova:passla123@192.168.80.85/nova"})
    assert_section(conf, "cache", {"memcache_servers": MEMCACHED, "enabled": "true"})
    assert_section(conf, "keystone_authtoken", authtoken("nova", f"{KEYSTONE}/v3", legacy_auth_uri=False))
    assert_section(conf, "cinder", {"os_region_name": "RegionTwo"})
    assert_section(conf, "glance", {"api_servers": "http://192.168.80.85:9292", "region_name": "RegionTwo"})
    assert_section(conf, "neutron", {"url": "http://192.168.80.85:9696", "auth_url": KEYSTONE, "region_name": "RegionTwo",
                                     "username": "neutron", "password": PASSWORD, "project_name": "service",
                                     "service_metadata_proxy": "true", "metadata_proxy_shared_secret": PASSWORD})
    assert_section(conf, "placement", {"os_region_name": "RegionTwo", "region_name": "RegionTwo",
                                       "auth_url": "http://192.168.80.83:5000/v3", "username": "placement",
                                       "password": PASSWORD, "project_domain_name": "Default",
                                       "user_domain_name": "Default"})
    assert_section(conf, "vnc", {"server_listen": CONTROLLER, "server_proxyclient_address": CONTROLLER,
                                 "novncproxy_host": CONTROLLER,
                                 "novncproxy_base_url": "http://192.168.80.85:6080/vnc_auto.html"})
    assert_section(conf, "oslo_concurrency", {"lock_path": "/var/lib/nova/tmp"})


def test_nova_compute_conf(ctx):
    conf = ini(compute_files(ctx)["/etc/nova/nova.conf"])
    assert_section(conf, "DEFAULT", {"my_ip": "192.168.80.86",
                                     "transport_url": "rabbit://openstack:passla123@192.168.80.85:5672"})
    assert_section(conf, "keystone_authtoken", authtoken("nova", f"{KEYSTONE}/v3", legacy_auth_uri=False))
    assert_section(conf, "cinder", {"os_region_name": "RegionTwo"})
    assert_section(conf, "glance", {"api_servers": "http://192.168.80.85:9292"})
    assert_section(conf, "neutron", {"url": "http://192.168.80.85:9696", "auth_url": KEYSTONE,
                                     "region_name": "RegionTwo", "username": "neutron"})
    assert_section(conf, "placement", {"os_region_name": "RegionTwo", "region_name": "RegionTwo",
                                       "auth_url": "http://192.168.80.83:5000/v3", "username": "placement"})
    assert_section(conf, "libvirt", {"virt_type": "qemu"})
    assert_section(conf, "vnc", {"enabled": "true", "server_listen": "0.0.0.0",
                                 "server_proxyclient_address": "192.168.80.86",
                                 "novncproxy_base_url": "http://192.168.80.85:6080/vnc_auto.html"})


def test_nova_compute_holds_no_database_password_nor_metadata_secret(ctx):
    conf = ini(compute_files(ctx)["/etc/nova/nova.conf"])
    assert not conf.has_section("database") and not conf.has_section("api_database")
    assert not conf.has_option("neutron", "metadata_proxy_shared_secret")


def test_one_node_with_both_roles_gets_one_nova_conf_with_both_flavours(ctx):
    files = node_files(ctx, CONTROLLER, ("controller", "compute"), ALL_SERVICES)
    conf = ini(files["/etc/nova/nova.conf"])
    assert conf.get("database", "connection") == "mysql+pymysql://nova:passla123@192.168.80.85/nova"
    assert conf.get("libvirt", "virt_type") == "qemu"
    assert conf.get("DEFAULT", "my_ip") == CONTROLLER
    assert ini(files["/etc/neutron/neutron.conf"]).get("nova", "region_name") == "RegionTwo"


# --- seed 000 step 6: cinder ---------------------------------------------------------

def test_cinder_conf(ctx):
    conf = ini(controller_files(ctx)["/etc/cinder/cinder.conf"])
    assert_section(conf, "DEFAULT", {"glance_api_servers": "http://192.168.80.85:9292", "my_ip": CONTROLLER,
                                     "auth_strategy": "keystone",
                                     "transport_url": "rabbit://openstack:passla123@192.168.80.85:5672"})
    assert_section(conf, "database", {"connection": "mysql+pymysql://cinder:passla123@192.168.80.85/cinder"})
    assert_section(conf, "keystone_authtoken", authtoken("cinder", KEYSTONE, legacy_auth_uri=True))
    assert_section(conf, "nova", {"region_name": "RegionTwo", "auth_url": KEYSTONE, "username": "nova"})
    assert_section(conf, "oslo_concurrency", {"lock_path": "/var/lib/cinder/tmp"})


# --- seed 000 step 7: neutron --------------------------------------------------------

def test_neutron_controller_conf(ctx):
    conf = ini(controller_files(ctx)["/etc/neutron/neutron.conf"])
    assert_section(conf, "DEFAULT", {"bind_host": CONTROLLER, "core_plugin": "ml2", "service_plugins": "router",
                                     "transport_url": "rabbit://openstack:passla123@192.168.80.85:5672",
                                     "auth_strategy": "keystone"})
    assert_section(conf, "database", {"connection": "mysql+pymysql://neutron:passla123@192.168.80.85/neutron"})
    assert_section(conf, "keystone_authtoken", authtoken("neutron", KEYSTONE, legacy_auth_uri=True))
    assert_section(conf, "nova", {"auth_url": KEYSTONE, "auth_type": "password", "region_name": "RegionTwo",
                                  "project_name": "service", "username": "nova", "password": PASSWORD})


def test_neutron_compute_conf(ctx):
    conf = ini(compute_files(ctx)["/etc/neutron/neutron.conf"])
    assert_section(conf, "DEFAULT", {"transport_url": "rabbit://openstack:passla123@192.168.80.85:5672",
                                     "auth_strategy": "keystone"})
    assert_section(conf, "keystone_authtoken", authtoken("neutron", KEYSTONE, legacy_auth_uri=True))
    assert not conf.has_section("database") and not conf.has_section("nova")


# --- placement (no step in seed 000; the same keystone_authtoken) -------------------

def test_placement_conf(ctx):
    conf = ini(controller_files(ctx)["/etc/placement/placement.conf"])
    assert_section(conf, "placement_database", {"connection": "mysql+pymysql://placement:passla123@192.168.80.85/placement"})
    assert_section(conf, "api", {"auth_strategy": "keystone"})
    assert_section(conf, "keystone_authtoken", authtoken("placement", f"{KEYSTONE}/v3", legacy_auth_uri=False))


# --- every keystoneauth section, in every file ---------------------------------------

KEYSTONEAUTH_SECTIONS = [
    ("controller", "/etc/glance/glance-api.conf", "keystone_authtoken"),
    ("controller", "/etc/nova/nova.conf", "keystone_authtoken"),
    ("controller", "/etc/nova/nova.conf", "neutron"),
    ("controller", "/etc/nova/nova.conf", "placement"),
    ("controller", "/etc/neutron/neutron.conf", "keystone_authtoken"),
    ("controller", "/etc/neutron/neutron.conf", "nova"),
    ("controller", "/etc/cinder/cinder.conf", "keystone_authtoken"),
    ("controller", "/etc/cinder/cinder.conf", "nova"),
    ("controller", "/etc/placement/placement.conf", "keystone_authtoken"),
    ("compute", "/etc/nova/nova.conf", "keystone_authtoken"),
    ("compute", "/etc/nova/nova.conf", "neutron"),
    ("compute", "/etc/nova/nova.conf", "placement"),
    ("compute", "/etc/neutron/neutron.conf", "keystone_authtoken"),
]


@pytest.mark.parametrize("role,path,section", KEYSTONEAUTH_SECTIONS)
def test_every_keystoneauth_section_uses_the_shared_keystone_and_names_region_two(ctx, role, path, section):
    files = controller_files(ctx) if role == "controller" else compute_files(ctx)
    conf = ini(files[path])
    assert conf.get(section, "region_name") == "RegionTwo"
    assert conf.get(section, "auth_url").startswith("http://192.168.80.83:5000")
    if section == "keystone_authtoken":
        assert conf.get(section, "www_authenticate_uri") == KEYSTONE
        assert conf.get(section, "memcached_servers") == MEMCACHED


def test_no_file_of_region_two_points_at_its_own_controller_for_keystone(ctx):
    files = {**controller_files(ctx), **{f"compute:{p}": c for p, c in compute_files(ctx).items()}}
    for path, text in files.items():
        assert "192.168.80.85:5000" not in text and "192.168.80.85:35357" not in text, path


def test_per_region_service_users_reach_every_section(ctx):
    users = {s: f"{s}-RegionTwo" for s in ("glance", "nova", "neutron", "cinder", "placement")}
    files = controller_files(dataclasses.replace(ctx, service_users=users))
    nova = ini(files["/etc/nova/nova.conf"])
    assert nova.get("keystone_authtoken", "username") == "nova-RegionTwo"
    assert nova.get("neutron", "username") == "neutron-RegionTwo"
    assert nova.get("placement", "username") == "placement-RegionTwo"
    assert ini(files["/etc/neutron/neutron.conf"]).get("nova", "username") == "nova-RegionTwo"
    assert ini(files["/etc/cinder/cinder.conf"]).get("nova", "username") == "nova-RegionTwo"
    assert ini(files["/etc/glance/glance-api.conf"]).get("keystone_authtoken", "username") == "glance-RegionTwo"


# --- seed 000 step 3: admin-openrc and clouds.yaml ------------------------------------

def sourced(text: str, tmp_path) -> dict[str, str]:
    """The environment after `source`-ing the file in bash."""
    script = tmp_path / "admin-openrc"
    script.write_text(text)
    out = subprocess.run(["bash", "-c", f'source "{script}" && env -0'], check=True,
                         capture_output=True, env={"PATH": "/usr/bin:/bin"}).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


def test_admin_openrc(ctx, tmp_path):
    env = sourced(controller_files(ctx)[sc.ADMIN_OPENRC], tmp_path)
    assert {k: env.get(k) for k in ("OS_REGION_NAME", "OS_AUTH_URL", "OS_PASSWORD", "OS_USERNAME",
                                    "OS_PROJECT_NAME", "OS_USER_DOMAIN_NAME", "OS_PROJECT_DOMAIN_NAME",
                                    "OS_IDENTITY_API_VERSION")} == {
        "OS_REGION_NAME": "RegionTwo", "OS_AUTH_URL": "http://192.168.80.83:5000/v3", "OS_PASSWORD": PASSWORD,
        "OS_USERNAME": "admin", "OS_PROJECT_NAME": "admin", "OS_USER_DOMAIN_NAME": "Default",
        "OS_PROJECT_DOMAIN_NAME": "Default", "OS_IDENTITY_API_VERSION": "3",
    }
    assert "export OS_REGION_NAME=RegionTwo\n" in controller_files(ctx)[sc.ADMIN_OPENRC]


def test_admin_openrc_quotes_a_password_the_shell_would_mangle(ctx, tmp_path):
    password = "p@ss word$HOME'\"`x`"
    text = controller_files(dataclasses.replace(ctx, admin_password=password))[sc.ADMIN_OPENRC]
    assert sourced(text, tmp_path)["OS_PASSWORD"] == password


def test_clouds_yaml_has_one_cloud_per_region(ctx):
    clouds = yaml.safe_load(controller_files(ctx)["/etc/openstack/clouds.yaml"])["clouds"]
    assert set(clouds) == {"regionone", "regiontwo"}
    assert clouds["regiontwo"] == {
        "auth": {"auth_url": "http://192.168.80.83:5000/v3", "username": "admin", "password": PASSWORD,
                 "project_name": "admin", "user_domain_name": "Default", "project_domain_name": "Default"},
        "region_name": "RegionTwo",
        "identity_api_version": 3,
    }
    assert clouds["regionone"]["region_name"] == "RegionOne"


def test_clouds_yaml_is_accepted_by_the_openstack_client_loader(ctx, tmp_path):
    loader = pytest.importorskip("openstack.config.loader")
    password = "pa:ss #{x}\\ \"q\" <&>"
    path = tmp_path / "clouds.yaml"
    path.write_text(controller_files(dataclasses.replace(ctx, admin_password=password))["/etc/openstack/clouds.yaml"])
    cloud = loader.OpenStackConfig(config_files=[str(path)], vendor_files=[]).get_one(cloud="regiontwo")
    assert cloud.region_name == "RegionTwo"
    assert cloud.config["auth"]["auth_url"] == "http://192.168.80.83:5000/v3"
    assert cloud.config["auth"]["password"] == password


def test_clouds_yaml_includes_this_region_when_regions_is_empty(ctx):
    clouds = yaml.safe_load(controller_files(dataclasses.replace(ctx, regions=()))["/etc/openstack/clouds.yaml"])
    assert list(clouds["clouds"]) == ["regiontwo"]


# --- seed 000 step 9: Horizon and the redirect -----------------------------------------

def python_assignments(source: str) -> dict[str, object]:
    tree = ast.parse(source)
    values = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass  # a call, e.g. SECRET_KEY
    return values


def test_horizon_local_settings_lists_every_region_on_the_shared_keystone(ctx):
    admin = dataclasses.replace(ctx, region="RegionOne", controller_address="192.168.80.83")
    text = node_files(admin, "192.168.80.83", ("controller",), ("dashboard",))["/etc/openstack-dashboard/local_settings"]
    settings = python_assignments(text)
    assert settings["OPENSTACK_KEYSTONE_URL"] == "http://192.168.80.83:5000/v3"
    assert settings["AVAILABLE_REGIONS"] == [("http://192.168.80.83:5000/v3", "RegionOne"),
                                             ("http://192.168.80.83:5000/v3", "RegionTwo")]
    assert settings["DEFAULT_SERVICE_REGIONS"] == {"*": "RegionOne"}
    assert settings["CACHES"]["default"]["LOCATION"] == [MEMCACHED]
    assert "192.168.80.83" in settings["ALLOWED_HOSTS"]


def test_redirect_page_sends_region_two_to_the_admin_dashboard(ctx):
    page = controller_files(ctx)["/var/www/html/index.html"]
    assert 'content="0.5; URL=http://192.168.80.83/dashboard"' in page


# --- a missing value fails instead of writing an empty line -----------------------------

def test_a_missing_database_connection_fails_the_render(ctx):
    broken = dataclasses.replace(ctx, database_connections={k: v for k, v in ctx.database_connections.items()
                                                            if k != "glance"})
    with pytest.raises(jinja2.UndefinedError, match="glance_database_connection"):
        controller_files(broken)


def test_an_empty_value_fails_the_render(ctx):
    with pytest.raises(jinja2.UndefinedError, match="memcached_servers"):
        compute_files(dataclasses.replace(ctx, memcached_servers=""))


def test_a_missing_service_user_fails_the_render(ctx):
    users = {k: v for k, v in ctx.service_users.items() if k != "placement"}
    with pytest.raises(jinja2.UndefinedError, match="nova_placement_user"):
        compute_files(dataclasses.replace(ctx, service_users=users))


def test_keystone_url_with_v3_is_refused(ctx):
    with pytest.raises(ValueError, match="without /v3"):
        controller_files(dataclasses.replace(ctx, keystone_url=f"{KEYSTONE}/v3"))


# --- values oslo.config would misread -----------------------------------------------

def test_a_dollar_in_a_secret_reaches_the_service_unchanged(ctx, tmp_path):
    cfg = pytest.importorskip("oslo_config.cfg")
    path = tmp_path / "glance-api.conf"
    path.write_text(controller_files(dataclasses.replace(ctx, service_password="pa$word$$x"))[
        "/etc/glance/glance-api.conf"])
    conf = cfg.ConfigOpts()
    conf.register_opts([cfg.StrOpt("password"), cfg.StrOpt("region_name")], group="keystone_authtoken")
    conf(args=[], default_config_files=[str(path)])
    assert conf.keystone_authtoken.password == "pa$word$$x"
    assert conf.keystone_authtoken.region_name == "RegionTwo"


def test_a_line_break_in_a_value_is_refused(ctx):
    with pytest.raises(ValueError, match="line break"):
        controller_files(dataclasses.replace(ctx, service_password="a\n[DEFAULT]\ndebug = true"))


def test_state_root_prefixes_state_dirs_but_not_node_paths(ctx):
    files = controller_files(dataclasses.replace(ctx, state_root="/srv/nodes/ctl/root/"))
    assert "/etc/nova/nova.conf" in files
    assert ini(files["/etc/nova/nova.conf"]).get("oslo_concurrency", "lock_path") == "/srv/nodes/ctl/root/var/lib/nova/tmp"
    assert ini(files["/etc/glance/glance-api.conf"]).get("fs", "filesystem_store_datadir") == \
        "/srv/nodes/ctl/root/var/lib/glance/images/"


def test_an_ipv6_controller_is_bracketed_in_urls(ctx):
    conf = ini(compute_files(dataclasses.replace(ctx, controller_address="fd00::85"))["/etc/nova/nova.conf"])
    assert conf.get("glance", "api_servers") == "http://[fd00::85]:9292"
    assert conf.get("neutron", "url") == "http://[fd00::85]:9696"


# --- restarts (seed 000's unit names) ---------------------------------------------------

def test_units_mapping():
    assert sc.UNITS == {
        "/etc/glance/glance-api.conf": ("openstack-glance-api",),
        "/etc/nova/nova.conf": ("openstack-nova-api", "openstack-nova-scheduler", "openstack-nova-conductor",
                                "openstack-nova-novncproxy", "libvirtd", "openstack-nova-compute"),
        "/etc/neutron/neutron.conf": ("neutron-server", "neutron-linuxbridge-agent", "neutron-l3-agent",
                                      "neutron-dhcp-agent", "neutron-metadata-agent"),
        "/etc/cinder/cinder.conf": ("openstack-cinder-api", "openstack-cinder-scheduler", "openstack-cinder-volume"),
        "/etc/placement/placement.conf": ("httpd",),
        "/etc/openstack-dashboard/local_settings": ("httpd",),
        sc.ADMIN_OPENRC: (),
        "/etc/openstack/clouds.yaml": (),
        "/var/www/html/index.html": (),
    }


def test_units_for_depends_on_the_node_roles():
    assert units_for("/etc/nova/nova.conf", ("compute",)) == ("libvirtd", "openstack-nova-compute")
    assert units_for("/etc/neutron/neutron.conf", ("compute",)) == (
        "neutron-linuxbridge-agent", "neutron-dhcp-agent", "neutron-metadata-agent")
    assert units_for("/etc/neutron/neutron.conf", ("controller", "compute")) == (
        "neutron-server", "neutron-linuxbridge-agent", "neutron-l3-agent", "neutron-dhcp-agent",
        "neutron-metadata-agent")
    assert units_for("/etc/cinder/cinder.conf", ("compute",)) == ()
    with pytest.raises(KeyError):
        units_for("/etc/swift/proxy-server.conf", ("controller",))


def test_every_file_a_node_gets_has_known_units(ctx):
    for roles in (("controller",), ("compute",), ("controller", "compute")):
        for path in node_files(ctx, CONTROLLER, roles, ALL_SERVICES + ("dashboard",)):
            assert path in sc.UNITS
