"""Golden tests of the per-service files, for seed 000's RegionTwo at the release the
nodes install (install/constraints.txt: nova 34, neutron 29, ...).

Seed 000 turns controller 192.168.80.85 and compute 192.168.80.86 into RegionTwo,
authenticated by the shared Keystone on 192.168.80.83. What the seed edits by hand
(steps 3-9) is asserted here section by section: every keystoneauth section points
at the shared Keystone and names RegionTwo; the region's own memcached, RabbitMQ,
databases, glance and neutron. Where the seed shows options a current release no
longer reads (auth_uri, the identity admin port 35357), the current ones are asserted.
"""
from __future__ import annotations

import ast
import configparser
import dataclasses
import subprocess

import jinja2
import pytest
import yaml

from components import registry
from components import service_configs as sc
from components.databases import database_url
from components.service_configs import RegionContext, node_files, units_for

KEYSTONE = "http://192.168.80.83:5000"
CONTROLLER = "192.168.80.85"
COMPUTE = "192.168.80.86"
MEMCACHED = "192.168.80.85:11211"
RABBIT = "rabbit://openstack:rabbit-secret@192.168.80.85:5672/"
ALL_SERVICES = ("image", "network", "compute", "placement", "volumev3", "volumev2")
SERVICE_USERS = ("glance", "nova", "neutron", "cinder", "placement")
VENV = "/opt/openstack/venv"


def _db(user: str, name: str) -> str:
    return database_url(user, name, f"{user}-db-secret", CONTROLLER)


@pytest.fixture
def ctx() -> RegionContext:
    return RegionContext(
        region="RegionTwo",
        keystone_url=KEYSTONE,
        controller_address=CONTROLLER,
        first_controller=CONTROLLER,
        memcached_servers=MEMCACHED,
        transport_url=RABBIT,
        database_connections={db.name: _db(db.user, db.name) for e in registry.SERVICES for db in e.databases},
        service_users={s: s for s in SERVICE_USERS},
        # One password per service user, so a test sees which user a section uses.
        service_passwords={s: f"{s}-secret" for s in SERVICE_USERS},
        metadata_secret="metadata-secret",
        admin_password="admin-secret",
        dashboard_url="http://192.168.80.83/dashboard",
        regions=("RegionOne", "RegionTwo"),
        virt_type="qemu",
        compute_driver="libvirt",
        venv=VENV,
    )


def controller_files(ctx: RegionContext, services=ALL_SERVICES) -> dict[str, str]:
    return node_files(ctx, CONTROLLER, ("controller",), services, "ctl2")


def compute_files(ctx: RegionContext) -> dict[str, str]:
    return node_files(ctx, COMPUTE, ("compute",), ALL_SERVICES, "cmp2")


def libvirt_compute_files(ctx: RegionContext) -> dict[str, str]:
    """A compute whose driver is libvirt, as the registry sees it (roles.registry_roles)."""
    return node_files(ctx, COMPUTE, registry_roles(("compute",), "libvirt"), ALL_SERVICES, "cmp2")


from components.registry.roles import registry_roles  # noqa: E402


def ini(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read_string(text)
    return parser


def assert_section(conf: configparser.ConfigParser, section: str, expected: dict[str, str]) -> None:
    actual = {key: conf.get(section, key, fallback=None) for key in expected}
    assert actual == expected, f"[{section}]"


def keystoneauth(user: str) -> dict[str, str]:
    """A keystoneauth section as seed 000 writes it, with the service's own user."""
    return {
        "auth_url": f"{KEYSTONE}/v3",
        "auth_type": "password",
        "project_domain_name": "Default",
        "user_domain_name": "Default",
        "project_name": "service",
        "username": user,
        "password": f"{user}-secret",
        "region_name": "RegionTwo",
    }


def authtoken(user: str) -> dict[str, str]:
    return {**keystoneauth(user), "www_authenticate_uri": KEYSTONE, "memcached_servers": MEMCACHED}


# --- which node gets which file ---------------------------------------------------

def test_controller_gets_the_files_of_each_service_plus_openrc_clouds_and_redirect(ctx):
    assert set(controller_files(ctx)) == {
        "/etc/glance/glance-api.conf", "/etc/nova/nova.conf", "/etc/neutron/neutron.conf",
        "/etc/neutron/plugins/ml2/ml2_conf.ini", "/etc/cinder/cinder.conf", "/etc/placement/placement.conf",
        sc.ADMIN_OPENRC, sc.CLOUDS_YAML, sc.DASHBOARD_REDIRECT,
    }


def test_compute_gets_nova_and_the_metadata_agent(ctx):
    # With ML2/OVN a compute runs no Neutron agent but OVN's metadata agent:
    # ovn-controller reads Open vSwitch.
    assert set(compute_files(ctx)) == {"/etc/nova/nova.conf", "/etc/sudoers.d/nova",
                                       "/etc/neutron/neutron_ovn_metadata_agent.ini"}


def test_controller_gets_only_the_services_of_the_region(ctx):
    files = controller_files(ctx, services=("image", "placement"))
    assert set(files) == {"/etc/glance/glance-api.conf", "/etc/placement/placement.conf",
                          sc.ADMIN_OPENRC, sc.CLOUDS_YAML, sc.DASHBOARD_REDIRECT}


def test_volumev2_alone_still_configures_cinder(ctx):
    assert "/etc/cinder/cinder.conf" in controller_files(ctx, services=("volumev2",))


def test_the_dashboard_node_gets_horizon_and_its_own_web_root_page(ctx):
    with_key = dataclasses.replace(ctx, extra={"dashboard_secret_key": "django-secret"})
    files = node_files(with_key, "192.168.80.83", ("controller",), ("dashboard",))
    assert "/etc/openstack-dashboard/local_settings.py" in files
    assert 'URL=/dashboard/"' in files[sc.DASHBOARD_REDIRECT]


def test_no_redirect_page_without_a_dashboard_url(ctx):
    assert sc.DASHBOARD_REDIRECT not in controller_files(dataclasses.replace(ctx, dashboard_url=""))


def test_unknown_role_or_service_type_is_an_error(ctx):
    with pytest.raises(ValueError, match="'storage'"):
        node_files(ctx, CONTROLLER, ("storage",), ALL_SERVICES)
    with pytest.raises(ValueError, match="'object-store'"):
        node_files(ctx, CONTROLLER, ("controller",), ("object-store",))


# --- every keystoneauth section, in every file ---------------------------------------

KEYSTONEAUTH_SECTIONS = [
    ("controller", "/etc/glance/glance-api.conf", "keystone_authtoken", "glance"),
    ("controller", "/etc/placement/placement.conf", "keystone_authtoken", "placement"),
    ("controller", "/etc/nova/nova.conf", "keystone_authtoken", "nova"),
    ("controller", "/etc/nova/nova.conf", "service_user", "nova"),
    ("controller", "/etc/nova/nova.conf", "placement", "nova"),
    ("controller", "/etc/nova/nova.conf", "neutron", "nova"),
    ("controller", "/etc/nova/nova.conf", "cinder", "nova"),
    ("controller", "/etc/neutron/neutron.conf", "keystone_authtoken", "neutron"),
    ("controller", "/etc/neutron/neutron.conf", "nova", "neutron"),
    ("controller", "/etc/neutron/neutron.conf", "placement", "neutron"),
    ("controller", "/etc/cinder/cinder.conf", "keystone_authtoken", "cinder"),
    ("controller", "/etc/cinder/cinder.conf", "service_user", "cinder"),
    ("controller", "/etc/cinder/cinder.conf", "nova", "cinder"),
    ("compute", "/etc/nova/nova.conf", "service_user", "nova"),
    ("compute", "/etc/nova/nova.conf", "placement", "nova"),
    ("compute", "/etc/nova/nova.conf", "neutron", "nova"),
    ("compute", "/etc/nova/nova.conf", "cinder", "nova"),
]


@pytest.mark.parametrize("role,path,section,user", KEYSTONEAUTH_SECTIONS)
def test_every_keystoneauth_section_uses_the_shared_keystone_names_region_two_and_its_own_user(
        ctx, role, path, section, user):
    files = controller_files(ctx) if role == "controller" else compute_files(ctx)
    conf = ini(files[path])
    assert_section(conf, section, authtoken(user) if section == "keystone_authtoken" else keystoneauth(user))


def test_no_section_is_left_without_its_region(ctx):
    """Every section that authenticates is in the list above: none was forgotten."""
    listed = {(role, path, section) for role, path, section, _ in KEYSTONEAUTH_SECTIONS}
    for role, files in (("controller", controller_files(ctx)), ("compute", compute_files(ctx))):
        for path, text in files.items():
            if path.endswith((".conf", ".ini")) and path.startswith("/etc/"):
                conf = ini(text)
                found = {(role, path, s) for s in conf.sections() if conf.has_option(s, "auth_url")}
                assert found <= listed, found - listed
    nova = ini(controller_files(ctx)["/etc/nova/nova.conf"])
    assert nova.get("cinder", "os_region_name") == "RegionTwo"  # nova's [cinder] name for it
    assert nova.get("glance", "region_name") == "RegionTwo"


def test_no_file_of_region_two_points_at_its_own_controller_for_keystone(ctx):
    files = {**controller_files(ctx), **{f"compute:{p}": c for p, c in compute_files(ctx).items()}}
    for path, text in files.items():
        assert "192.168.80.85:5000" not in text and "192.168.80.85:35357" not in text, path


def test_per_region_service_users_reach_every_section(ctx):
    users = {s: f"{s}-RegionTwo" for s in SERVICE_USERS}
    files = controller_files(dataclasses.replace(ctx, service_users=users))
    nova = ini(files["/etc/nova/nova.conf"])
    assert {nova.get(s, "username") for s in ("keystone_authtoken", "neutron", "placement", "service_user")} == \
        {"nova-RegionTwo"}
    assert ini(files["/etc/neutron/neutron.conf"]).get("nova", "username") == "neutron-RegionTwo"
    assert ini(files["/etc/cinder/cinder.conf"]).get("nova", "username") == "cinder-RegionTwo"
    assert ini(files["/etc/glance/glance-api.conf"]).get("keystone_authtoken", "username") == "glance-RegionTwo"


# --- seed 000 step 4: glance -----------------------------------------------------------

def test_glance_api_conf(ctx):
    conf = ini(controller_files(ctx)["/etc/glance/glance-api.conf"])
    assert_section(conf, "DEFAULT", {"bind_host": CONTROLLER, "public_endpoint": "http://192.168.80.85:9292",
                                     "enabled_backends": "file:file", "use_stderr": "true"})
    assert_section(conf, "database", {"connection": _db("glance", "glance")})
    assert_section(conf, "glance_store", {"default_backend": "file"})
    assert_section(conf, "file", {"filesystem_store_datadir": "/var/lib/glance/images/"})
    assert_section(conf, "paste_deploy", {"flavor": "keystone"})


# --- seed 000 step 5: nova -------------------------------------------------------------

def test_nova_controller_conf(ctx):
    conf = ini(controller_files(ctx)["/etc/nova/nova.conf"])
    assert_section(conf, "DEFAULT", {"my_ip": CONTROLLER, "host": "ctl2", "transport_url": RABBIT})
    assert_section(conf, "api_database", {"connection": _db("nova", "nova_api")})
    assert_section(conf, "database", {"connection": _db("nova", "nova")})
    assert_section(conf, "cache", {"memcache_servers": MEMCACHED, "enabled": "true"})
    assert_section(conf, "neutron", {"service_metadata_proxy": "true",
                                     "metadata_proxy_shared_secret": "metadata-secret"})
    assert_section(conf, "cinder", {"catalog_info": "volumev3:cinderv3:internalURL"})
    assert not conf.has_option("DEFAULT", "compute_driver")


def test_nova_compute_conf(ctx):
    conf = ini(compute_files(ctx)["/etc/nova/nova.conf"])
    assert_section(conf, "DEFAULT", {"my_ip": COMPUTE, "host": "cmp2", "transport_url": RABBIT,
                                     "compute_driver": "libvirt.LibvirtDriver",
                                     "rootwrap_config": "/etc/nova/rootwrap.conf"})
    assert_section(conf, "libvirt", {"virt_type": "qemu"})
    assert_section(conf, "libvirt", {"cpu_mode": "none"})  # TCG: QEMU's own CPU model
    assert conf.get("DEFAULT", "resume_guests_state_on_host_boot") == "true"  # nova reads it there only
    assert not conf.has_section("compute")
    # os-vif reaches Open vSwitch as root through its privileged helper, never over TCP.
    assert_section(conf, "os_vif_ovs", {"ovsdb_interface": "vsctl",
                                        "ovsdb_connection": "unix:/run/openvswitch/db.sock"})
    fake = ini(compute_files(dataclasses.replace(ctx, compute_driver="fake"))["/etc/nova/nova.conf"])
    assert fake.get("DEFAULT", "compute_driver") == "fake.FakeDriverWithoutFakeNodes"


def test_a_libvirt_compute_gets_qemu_conf_and_os_vif_privileges(ctx):
    files = libvirt_compute_files(ctx)
    assert set(files) - set(compute_files(ctx)) == {"/etc/libvirt/qemu.conf", "/etc/nova/rootwrap.d/os-vif.filters"}
    assert "cgroup_controllers" not in files["/etc/libvirt/qemu.conf"]  # libvirt's default
    contained = libvirt_compute_files(dataclasses.replace(ctx, extra={"qemu_cgroup_controllers": ()}))
    assert "\ncgroup_controllers = [  ]\n" in contained["/etc/libvirt/qemu.conf"]
    assert "vif_plug_ovs.privsep.vif_plug" in files["/etc/nova/rootwrap.d/os-vif.filters"]


def test_nova_compute_holds_no_database_password_nor_metadata_secret(ctx):
    files = compute_files(ctx)
    conf = ini(files["/etc/nova/nova.conf"])
    assert not conf.has_section("database") and not conf.has_section("api_database")
    assert not conf.has_option("neutron", "metadata_proxy_shared_secret")
    # Nothing of another service: only nova's password and RabbitMQ's, and the metadata
    # secret in the metadata agent's file, which signs what it forwards to nova.
    for other in ("glance-secret", "neutron-secret", "cinder-secret", "placement-secret", "db-secret",
                  "admin-secret"):
        assert not any(other in text for text in files.values()), other
    assert [p for p, text in files.items() if "metadata-secret" in text] == [
        "/etc/neutron/neutron_ovn_metadata_agent.ini"]


def test_the_metadata_agent_forwards_to_this_regions_nova_over_tls(ctx):
    agent = ini(compute_files(ctx)["/etc/neutron/neutron_ovn_metadata_agent.ini"])
    assert_section(agent, "DEFAULT", {"nova_metadata_host": ctx.controller_address, "nova_metadata_port": "8775",
                                      "nova_metadata_protocol": ctx.scheme,
                                      "metadata_proxy_shared_secret": "metadata-secret",
                                      "metadata_proxy_user": "neutron"})
    assert_section(agent, "ovs", {"ovsdb_connection": "unix:/run/openvswitch/db.sock"})
    assert agent.get("privsep_link", "helper_command").endswith(
        "/bin/privsep-helper --config-file /etc/neutron/neutron_ovn_metadata_agent.ini")


def test_one_node_with_both_roles_gets_one_nova_conf_with_both_flavours(ctx):
    files = node_files(ctx, CONTROLLER, ("controller", "compute"), ALL_SERVICES, "aio")
    conf = ini(files["/etc/nova/nova.conf"])
    assert conf.get("database", "connection") == _db("nova", "nova")
    assert conf.get("libvirt", "virt_type") == "qemu"
    assert conf.get("DEFAULT", "host") == "aio"
    # nova's own shutdown bounds, written out (systemd's stop timeout is derived from them).
    assert (conf.get("DEFAULT", "manager_shutdown_timeout"), conf.get("DEFAULT", "graceful_shutdown_timeout")) == \
        ("160", "180")


def test_nova_sudoers_allows_only_rootwrap(ctx):
    sudoers = compute_files(ctx)["/etc/sudoers.d/nova"]
    rules = [line for line in sudoers.splitlines() if line and not line.startswith(("#", "Defaults"))]
    assert rules == [f"nova ALL = (root) NOPASSWD: {VENV}/bin/nova-rootwrap /etc/nova/rootwrap.conf *"]


# --- seed 000 step 6: cinder -----------------------------------------------------------

def test_cinder_conf(ctx):
    conf = ini(controller_files(ctx)["/etc/cinder/cinder.conf"])
    assert_section(conf, "DEFAULT", {"glance_api_servers": "http://192.168.80.85:9292", "my_ip": CONTROLLER,
                                     "auth_strategy": "keystone", "transport_url": RABBIT})
    assert_section(conf, "database", {"connection": _db("cinder", "cinder")})
    assert_section(conf, "oslo_concurrency", {"lock_path": "/var/lib/cinder/tmp"})


# --- seed 000 step 7: neutron (ML2/OVN) --------------------------------------------------

def test_neutron_controller_conf(ctx):
    files = controller_files(ctx)
    conf = ini(files["/etc/neutron/neutron.conf"])
    assert_section(conf, "DEFAULT", {"bind_host": CONTROLLER, "core_plugin": "ml2", "service_plugins": "ovn-router",
                                     "transport_url": RABBIT, "auth_strategy": "keystone"})
    assert_section(conf, "database", {"connection": _db("neutron", "neutron")})
    ml2 = ini(files["/etc/neutron/plugins/ml2/ml2_conf.ini"])
    assert_section(ml2, "ml2", {"mechanism_drivers": "ovn", "project_network_types": "geneve"})
    assert_section(ml2, "ovn", {"ovn_nb_connection": "tcp:192.168.80.85:6641",
                                "ovn_sb_connection": "tcp:192.168.80.85:6642"})


def test_ovn_databases_are_on_the_first_controller_not_the_vip(ctx):
    ha = dataclasses.replace(ctx, controller_address="192.168.80.80", first_controller="192.168.80.81")
    ml2 = ini(controller_files(ha)["/etc/neutron/plugins/ml2/ml2_conf.ini"])
    assert ml2.get("ovn", "ovn_sb_connection") == "tcp:192.168.80.81:6642"


# --- placement -----------------------------------------------------------------------------

def test_placement_conf(ctx):
    conf = ini(controller_files(ctx)["/etc/placement/placement.conf"])
    assert_section(conf, "placement_database", {"connection": _db("placement", "placement")})
    assert_section(conf, "api", {"auth_strategy": "keystone"})


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
        "OS_REGION_NAME": "RegionTwo", "OS_AUTH_URL": "http://192.168.80.83:5000/v3", "OS_PASSWORD": "admin-secret",
        "OS_USERNAME": "admin", "OS_PROJECT_NAME": "admin", "OS_USER_DOMAIN_NAME": "Default",
        "OS_PROJECT_DOMAIN_NAME": "Default", "OS_IDENTITY_API_VERSION": "3",
    }


def test_admin_openrc_quotes_a_password_the_shell_would_mangle(ctx, tmp_path):
    password = "p@ss word$HOME'\"`x`"
    text = controller_files(dataclasses.replace(ctx, admin_password=password))[sc.ADMIN_OPENRC]
    assert sourced(text, tmp_path)["OS_PASSWORD"] == password


def test_the_admin_password_is_only_in_openrc_and_clouds_yaml(ctx):
    files = controller_files(dataclasses.replace(ctx, admin_password=""))
    assert sc.ADMIN_OPENRC not in files and sc.CLOUDS_YAML not in files
    files = controller_files(dataclasses.replace(ctx, admin_password="admin-canary"))
    assert {p for p, text in files.items() if "admin-canary" in text} == {sc.ADMIN_OPENRC, sc.CLOUDS_YAML}


def test_clouds_yaml_has_one_cloud_per_region(ctx):
    clouds = yaml.safe_load(controller_files(ctx)[sc.CLOUDS_YAML])["clouds"]
    assert set(clouds) == {"regionone", "regiontwo"}
    assert clouds["regiontwo"] == {
        "auth": {"auth_url": "http://192.168.80.83:5000/v3", "username": "admin", "password": "admin-secret",
                 "project_name": "admin", "user_domain_name": "Default", "project_domain_name": "Default"},
        "region_name": "RegionTwo",
        "identity_api_version": 3,
    }


def test_clouds_yaml_is_accepted_by_the_openstack_client_loader(ctx, tmp_path):
    loader = pytest.importorskip("openstack.config.loader")
    password = "pa:ss #{x}\\ \"q\" <&>"
    path = tmp_path / "clouds.yaml"
    path.write_text(controller_files(dataclasses.replace(ctx, admin_password=password))[sc.CLOUDS_YAML])
    cloud = loader.OpenStackConfig(config_files=[str(path)], vendor_files=[]).get_one(cloud="regiontwo")
    assert cloud.region_name == "RegionTwo"
    assert cloud.config["auth"]["password"] == password


# --- seed 000 step 9: Horizon and the redirect -----------------------------------------

def python_assignments(source: str) -> dict[str, object]:
    values = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass  # a call, e.g. SECRET_KEY
    return values


def test_horizon_takes_its_regions_from_the_catalog_of_the_shared_keystone(ctx):
    admin = dataclasses.replace(ctx, region="RegionOne", controller_address="192.168.80.83",
                                extra={"dashboard_secret_key": "django-secret"})
    text = node_files(admin, "192.168.80.83", ("controller",), ("dashboard",))["/etc/openstack-dashboard/local_settings.py"]
    settings = python_assignments(text)
    assert settings["OPENSTACK_KEYSTONE_URL"] == "http://192.168.80.83:5000/v3"
    # One Keystone: AVAILABLE_REGIONS would list Keystones; the picker reads the catalog.
    assert "AVAILABLE_REGIONS" not in settings
    assert settings["DEFAULT_SERVICE_REGIONS"] == {"*": "RegionOne"}
    # Sessions never in memcached (Django's cache backend unpickles what it reads): in files
    # that only horizon reads, written with Horizon's JSON serializer.
    assert settings["SESSION_ENGINE"] == "django.contrib.sessions.backends.file"
    assert settings["SESSION_FILE_PATH"] == "/var/lib/horizon/sessions"
    assert "memcached" not in str(settings["CACHES"]).lower()
    assert settings["SECRET_KEY"] == "django-secret"


def test_redirect_page_sends_region_two_to_the_admin_dashboard(ctx):
    assert 'content="0.5; URL=http://192.168.80.83/dashboard"' in controller_files(ctx)[sc.DASHBOARD_REDIRECT]


# --- a missing value fails instead of writing an empty line -----------------------------

def test_a_missing_database_connection_fails_the_render(ctx):
    broken = dataclasses.replace(ctx, database_connections={k: v for k, v in ctx.database_connections.items()
                                                            if k != "glance"})
    with pytest.raises(jinja2.UndefinedError, match="database_connection"):
        controller_files(broken)


def test_an_empty_value_fails_the_render(ctx):
    with pytest.raises(jinja2.UndefinedError, match="memcached_servers"):
        controller_files(dataclasses.replace(ctx, memcached_servers=""))


def test_a_missing_service_user_fails_the_render(ctx):
    users = {k: v for k, v in ctx.service_users.items() if k != "nova"}
    with pytest.raises(jinja2.UndefinedError, match="username"):
        compute_files(dataclasses.replace(ctx, service_users=users))


def test_keystone_url_with_v3_is_refused(ctx):
    with pytest.raises(ValueError, match="without /v3"):
        controller_files(dataclasses.replace(ctx, keystone_url=f"{KEYSTONE}/v3"))


# --- values oslo.config would misread -----------------------------------------------

# Every printable ASCII character, with blanks and quotes at both ends.
PRINTABLE = " \"" + "".join(chr(c) for c in range(33, 127)) + " x '"


@pytest.mark.parametrize("password", [PRINTABLE, '"quoted"', "'single'", "plain", "$HOME", "100%"])
def test_oslo_reads_back_what_was_written(password, tmp_path):
    cfg = pytest.importorskip("oslo_config.cfg")
    path = tmp_path / "x.conf"
    path.write_text(f"[s]\nv = {sc.oslo_escaped(password)}\n")
    conf = cfg.ConfigOpts()
    conf.register_opts([cfg.StrOpt("v")], group="s")
    conf(args=[], default_config_files=[str(path)])
    assert conf.s.v == password


def test_any_printable_password_reaches_the_service_unchanged(ctx, tmp_path):
    cfg = pytest.importorskip("oslo_config.cfg")
    sqlalchemy = pytest.importorskip("sqlalchemy.engine")
    password = PRINTABLE
    ctx = dataclasses.replace(ctx, service_passwords={**ctx.service_passwords, "glance": password},
                              database_connections={**ctx.database_connections,
                                                    "glance": database_url("glance", "glance", password, CONTROLLER)})
    path = tmp_path / "glance-api.conf"
    path.write_text(controller_files(ctx)["/etc/glance/glance-api.conf"])
    conf = cfg.ConfigOpts()
    conf.register_opts([cfg.StrOpt("password"), cfg.StrOpt("region_name")], group="keystone_authtoken")
    conf.register_opts([cfg.StrOpt("connection")], group="database")
    conf(args=[], default_config_files=[str(path)])
    assert conf.keystone_authtoken.password == password
    assert conf.keystone_authtoken.region_name == "RegionTwo"
    assert sqlalchemy.make_url(conf.database.connection).password == password


def test_a_line_break_in_a_value_is_refused(ctx):
    with pytest.raises(ValueError, match="line break"):
        controller_files(dataclasses.replace(ctx, service_passwords={**ctx.service_passwords,
                                                                     "nova": "a\n[DEFAULT]\ndebug = true"}))


def test_state_root_prefixes_state_dirs_but_not_node_paths(ctx):
    files = controller_files(dataclasses.replace(ctx, state_root="/srv/nodes/ctl/root/"))
    assert "/etc/nova/nova.conf" in files
    assert ini(files["/etc/nova/nova.conf"]).get("oslo_concurrency", "lock_path") == "/srv/nodes/ctl/root/var/lib/nova/tmp"
    assert ini(files["/etc/glance/glance-api.conf"]).get("file", "filesystem_store_datadir") == \
        "/srv/nodes/ctl/root/var/lib/glance/images/"


# --- restarts: the registry's units per role -------------------------------------------

def test_units_for_depends_on_the_node_roles():
    assert units_for("/etc/nova/nova.conf", ("compute",)) == ("nova-compute",)
    assert units_for("/etc/nova/nova.conf", ("controller",)) == ("nova-api", "nova-metadata-api",
                                                                  "nova-conductor", "nova-scheduler")
    assert units_for("/etc/neutron/plugins/ml2/ml2_conf.ini", ("controller",)) == (
        "neutron-api", "neutron-periodic-workers", "neutron-ovn-maintenance-worker")
    assert units_for("/etc/glance/glance-api.conf", ("controller",)) == ("glance-api",)
    assert units_for("/etc/cinder/cinder.conf", ("compute",)) == ()
    assert units_for("/etc/swift/proxy-server.conf", ("controller",)) == ()


def test_every_config_file_is_read_by_a_unit_of_its_service():
    for entry in registry.SERVICES:
        for f in entry.files:
            if entry.units and f.path.endswith((".conf", ".ini")):
                assert any(f.path in u.reads for u in entry.units), f.path


def test_on_the_userspace_datapath_libvirt_makes_the_guests_taps(ctx):
    """os-vif's own taps race ovs-vswitchd on the netdev datapath (a tap left down):
    there neutron tells nova to let libvirt create them; the kernel datapath keeps
    upstream's default."""
    ml2 = "/etc/neutron/plugins/ml2/ml2_conf.ini"
    netdev = ini(controller_files(dataclasses.replace(ctx, ovs_datapath="netdev"))[ml2])
    assert netdev.get("ovn", "ovs_create_tap") == "false"
    system = ini(controller_files(dataclasses.replace(ctx, ovs_datapath="system"))[ml2])
    assert not system.has_option("ovn", "ovs_create_tap")


def keystone_conf(**kw):
    from components.registry.keystone import keystone_conf as values
    from components.templates import render
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(render("keystone/keystone.conf.j2", **values("RegionOne", "mysql+pymysql://k@db/keystone",
                                                                     "/etc/keystone", **kw)))
    return parser


def test_keystone_caches_in_the_regions_memcached_as_its_sasl_user():
    """Keystone's cache (issue 19: without it every authorized request read the database
    a few dozen times, 250 ms each in the sandbox), on the region's memcached, which
    answers only SASL clients on real nodes."""
    cache = keystone_conf(memcached_servers="10.0.0.1:11211,10.0.0.2:11211", memcached_user="openstack",
                          memcached_password="MEMCACHED-CANARY")["cache"]
    assert cache["enabled"] == "true" and cache["backend"] == "oslo_cache.memcache_pool"
    assert cache["memcache_servers"] == "10.0.0.1:11211,10.0.0.2:11211"
    assert (cache["memcache_sasl_enabled"], cache["username"], cache["password"]) == (
        "true", "openstack", "MEMCACHED-CANARY")
    plain = keystone_conf(memcached_servers="127.0.0.1:11211")["cache"]
    assert plain["enabled"] == "true" and "memcache_sasl_enabled" not in plain and "password" not in plain
    assert keystone_conf()["cache"]["enabled"] == "false"
