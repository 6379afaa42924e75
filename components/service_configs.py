"""Every configuration file a node of a region needs, rendered from templates/<service>/.

Pure Python (no Pulumi), so the rendered files are unit-tested directly against
seed 000's RegionTwo. The wiring that makes a region a region of ONE shared
Keystone (seed 000, steps 3-9):

- every keystoneauth section points at the shared Keystone and names THIS region,
  so no service ever picks another region's endpoint from the shared catalog;
- memcached, RabbitMQ, databases, glance and neutron URLs are the region's own.

A value the caller leaves out (a missing dict key, an empty string) is not passed
to the template at all, so Jinja2's StrictUndefined fails the preview instead of
writing an empty line to a node.
"""
from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional
from urllib.parse import urlsplit

from components.templates import render

ROLES = ("controller", "compute")

# service type (as in the catalog) -> the configuration that serves it.
# "dashboard" is not a catalog type: it marks the region that hosts Horizon.
CONFIG_OF_SERVICE: dict[str, str] = {
    "image": "glance",
    "network": "neutron",
    "compute": "nova",
    "placement": "placement",
    "volumev3": "cinder",
    "volumev2": "cinder",
    "dashboard": "horizon",
}

GLANCE_API_CONF = "/etc/glance/glance-api.conf"
NOVA_CONF = "/etc/nova/nova.conf"
NEUTRON_CONF = "/etc/neutron/neutron.conf"
CINDER_CONF = "/etc/cinder/cinder.conf"
PLACEMENT_CONF = "/etc/placement/placement.conf"
ADMIN_OPENRC = "/root/admin-openrc"  # seed 000 step 3: in the admin's home on each controller
CLOUDS_YAML = "/etc/openstack/clouds.yaml"
HORIZON_LOCAL_SETTINGS = "/etc/openstack-dashboard/local_settings"  # RDO's path (seed 000 is CentOS)
DASHBOARD_REDIRECT = "/var/www/html/index.html"  # seed 000 step 9

# path -> role -> the systemd units (seed 000's names) that read the file.
_UNITS_BY_ROLE: dict[str, dict[str, tuple[str, ...]]] = {
    GLANCE_API_CONF: {"controller": ("openstack-glance-api",)},
    NOVA_CONF: {
        "controller": ("openstack-nova-api", "openstack-nova-scheduler",
                       "openstack-nova-conductor", "openstack-nova-novncproxy"),
        "compute": ("libvirtd", "openstack-nova-compute"),
    },
    NEUTRON_CONF: {
        "controller": ("neutron-server", "neutron-linuxbridge-agent", "neutron-l3-agent"),
        "compute": ("neutron-linuxbridge-agent", "neutron-dhcp-agent", "neutron-metadata-agent"),
    },
    CINDER_CONF: {"controller": ("openstack-cinder-api", "openstack-cinder-scheduler",
                                 "openstack-cinder-volume")},
    # Placement and Horizon run inside httpd on RDO; seed 000 restarts neither.
    PLACEMENT_CONF: {"controller": ("httpd",)},
    HORIZON_LOCAL_SETTINGS: {"controller": ("httpd",)},
    # Read by people and clients, not by a daemon.
    ADMIN_OPENRC: {},
    CLOUDS_YAML: {},
    DASHBOARD_REDIRECT: {},
}


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


# path -> every unit that may read it, whatever the node's roles.
UNITS: dict[str, tuple[str, ...]] = {
    path: _unique(unit for units in by_role.values() for unit in units)
    for path, by_role in _UNITS_BY_ROLE.items()
}


@dataclass(frozen=True)
class RegionContext:
    region: str  # e.g. "RegionTwo"
    keystone_url: str  # shared Keystone base, e.g. "http://192.168.80.83:5000" (no /v3)
    controller_address: str  # the region's controller (or VIP), where its APIs answer
    memcached_servers: str  # "192.168.80.85:11211" (comma-separated list for HA)
    transport_url: str  # "rabbit://openstack:PASS@192.168.80.85:5672/" (a secret)
    database_connections: dict[str, str]  # "glance","nova","nova_api","nova_cell0","neutron","cinder","placement"
    service_users: dict[str, str]  # "glance","nova","neutron","cinder","placement" -> Keystone user
    service_password: str  # password of those users (a secret)
    admin_password: str  # for admin-openrc / clouds.yaml (a secret)
    dashboard_url: str = ""  # the admin region's Horizon, for the redirect page
    regions: tuple[str, ...] = ()  # every region name, for Horizon/clouds.yaml
    state_root: str = ""  # prefix of state/lock/data dirs (the node root when not "/")
    metadata_secret: str = ""  # nova <-> neutron metadata proxy secret; seed 000 reuses the service password
    virt_type: str = "kvm"  # libvirt virt_type on computes; seed 000 uses "qemu" (no VT-x)


# --- public entry points ----------------------------------------------------------

def node_files(ctx: RegionContext, node_address: str, roles: tuple[str, ...],
               services: tuple[str, ...]) -> dict[str, str]:
    """path on the node (e.g. "/etc/nova/nova.conf") -> rendered content, for a node
    with these roles ("controller", "compute") in a region running these service
    types ("image", "network", "compute", "placement", "volumev3", "volumev2", and
    "dashboard" in the region that hosts Horizon)."""
    _check_roles(roles)
    configs = _configs_for(services)
    files: dict[str, str] = {}
    if "controller" in roles:
        files.update(_controller_files(ctx, node_address, roles, configs))
    if "compute" in roles:
        files.update(_compute_files(ctx, node_address, roles, configs))
    return files


def units_for(path: str, roles: Iterable[str]) -> tuple[str, ...]:
    """The units to restart on a node with these roles when `path` changes."""
    roles = tuple(roles)
    _check_roles(roles)
    if path not in _UNITS_BY_ROLE:
        raise KeyError(f"no units are known for {path}; known: {', '.join(_UNITS_BY_ROLE)}")
    by_role = _UNITS_BY_ROLE[path]
    return _unique(unit for role in ROLES if role in roles for unit in by_role.get(role, ()))


# --- which files a node gets ------------------------------------------------------

def _check_roles(roles: Iterable[str]) -> None:
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise ValueError(f"unknown node role {unknown[0]!r}: expected one of {', '.join(ROLES)}")


def _configs_for(services: Iterable[str]) -> frozenset[str]:
    unknown = sorted(set(services) - set(CONFIG_OF_SERVICE))
    if unknown:
        raise ValueError(f"unknown service type {unknown[0]!r}: expected one of {', '.join(CONFIG_OF_SERVICE)}")
    return frozenset(CONFIG_OF_SERVICE[s] for s in services)


def _controller_files(ctx: RegionContext, node_address: str, roles: tuple[str, ...],
                      configs: frozenset[str]) -> dict[str, str]:
    files: dict[str, str] = {}
    if "glance" in configs:
        files[GLANCE_API_CONF] = glance_api_conf(ctx, node_address)
    if "nova" in configs:
        files[NOVA_CONF] = nova_conf(ctx, node_address, roles)
    if "neutron" in configs:
        files[NEUTRON_CONF] = neutron_conf(ctx, node_address, roles)
    if "cinder" in configs:
        files[CINDER_CONF] = cinder_conf(ctx, node_address)
    if "placement" in configs:
        files[PLACEMENT_CONF] = placement_conf(ctx)
    files[ADMIN_OPENRC] = admin_openrc(ctx)
    files[CLOUDS_YAML] = clouds_yaml(ctx)
    files.update(_dashboard_files(ctx, node_address, configs))
    return files


def _compute_files(ctx: RegionContext, node_address: str, roles: tuple[str, ...],
                   configs: frozenset[str]) -> dict[str, str]:
    files: dict[str, str] = {}
    if "nova" in configs:
        files[NOVA_CONF] = nova_conf(ctx, node_address, roles)
    if "neutron" in configs:
        files[NEUTRON_CONF] = neutron_conf(ctx, node_address, roles)
    return files


def _dashboard_files(ctx: RegionContext, node_address: str, configs: frozenset[str]) -> dict[str, str]:
    """Horizon in the region that hosts it; elsewhere a page that redirects there."""
    if "horizon" in configs:
        return {HORIZON_LOCAL_SETTINGS: horizon_local_settings(ctx, node_address)}
    if ctx.dashboard_url:
        return {DASHBOARD_REDIRECT: dashboard_redirect(ctx)}
    return {}


# --- one function per file --------------------------------------------------------

def glance_api_conf(ctx: RegionContext, node_address: str) -> str:
    return _render_conf("glance/glance-api.conf.j2", {
        **_authtoken_values("glance", ctx, user="glance"),
        "glance_bind_host": node_address,
        "glance_database_connection": ctx.database_connections.get("glance"),
        "glance_images_dir": _state_dir(ctx, "/var/lib/glance/images/"),
        "glance_staging_dir": _state_dir(ctx, "/var/lib/glance/staging/"),
        "glance_tasks_dir": _state_dir(ctx, "/var/lib/glance/tasks_work_dir/"),
    })


def nova_conf(ctx: RegionContext, node_address: str, roles: tuple[str, ...]) -> str:
    """One nova.conf for controller, compute, or both roles on one node."""
    _check_roles(roles)
    return _render_conf("nova/nova.conf.j2", {
        **_authtoken_values("nova", ctx, user="nova"),
        "nova_roles": tuple(r for r in ROLES if r in roles),
        "nova_my_ip": node_address,
        "nova_transport_url": ctx.transport_url,
        **_only_on_controller(roles, {
            "nova_database_connection": ctx.database_connections.get("nova"),
            "nova_api_database_connection": ctx.database_connections.get("nova_api"),
            "nova_metadata_proxy_shared_secret": ctx.metadata_secret or ctx.service_password,
        }),
        "nova_auth_url_v3": _keystone_v3(ctx),
        "nova_glance_api_servers": _glance_url(ctx),
        "nova_neutron_url": _neutron_url(ctx),
        "nova_neutron_user": ctx.service_users.get("neutron"),
        "nova_placement_user": ctx.service_users.get("placement"),
        "nova_virt_type": ctx.virt_type,
        "nova_vnc_server_listen": "0.0.0.0" if "compute" in roles else node_address,
        "nova_novncproxy_base_url": _http(ctx.controller_address, 6080, "/vnc_auto.html"),
        "nova_lock_path": _state_dir(ctx, "/var/lib/nova/tmp"),
    })


def neutron_conf(ctx: RegionContext, node_address: str, roles: tuple[str, ...]) -> str:
    """One neutron.conf for controller, compute, or both roles on one node."""
    _check_roles(roles)
    return _render_conf("neutron/neutron.conf.j2", {
        **_authtoken_values("neutron", ctx, user="neutron"),
        "neutron_roles": tuple(r for r in ROLES if r in roles),
        "neutron_transport_url": ctx.transport_url,
        **_only_on_controller(roles, {
            "neutron_bind_host": node_address,
            "neutron_database_connection": ctx.database_connections.get("neutron"),
            "neutron_nova_user": ctx.service_users.get("nova"),
        }),
        "neutron_lock_path": _state_dir(ctx, "/var/lib/neutron/tmp"),
    })


def cinder_conf(ctx: RegionContext, node_address: str) -> str:
    return _render_conf("cinder/cinder.conf.j2", {
        **_authtoken_values("cinder", ctx, user="cinder"),
        "cinder_transport_url": ctx.transport_url,
        "cinder_my_ip": node_address,
        "cinder_glance_api_servers": _glance_url(ctx),
        "cinder_database_connection": ctx.database_connections.get("cinder"),
        "cinder_nova_user": ctx.service_users.get("nova"),
        "cinder_lock_path": _state_dir(ctx, "/var/lib/cinder/tmp"),
    })


def placement_conf(ctx: RegionContext) -> str:
    return _render_conf("placement/placement.conf.j2", {
        **_authtoken_values("placement", ctx, user="placement"),
        "placement_auth_url": _keystone_v3(ctx),
        "placement_database_connection": ctx.database_connections.get("placement"),
    })


def admin_openrc(ctx: RegionContext) -> str:
    return _render("openrc/admin-openrc.j2", {
        "openrc_region": _shell(ctx.region),
        "openrc_admin_password": _shell(ctx.admin_password),
        "openrc_auth_url": _shell(_keystone_v3(ctx)),
    })


def clouds_yaml(ctx: RegionContext) -> str:
    return _render("openrc/clouds.yaml.j2", {
        "clouds_regions": [{"name": name, "region": region} for name, region in _cloud_names(ctx)],
        "clouds_auth_url": _keystone_v3(ctx),
        "clouds_admin_password": ctx.admin_password,
    })


def horizon_local_settings(ctx: RegionContext, node_address: str) -> str:
    return _render("horizon/local_settings.py.j2", {
        "horizon_region": ctx.region,
        "horizon_keystone_url": _keystone_v3(ctx),
        "horizon_regions": list(_all_regions(ctx)),
        "horizon_allowed_hosts": list(_allowed_hosts(ctx, node_address)),
        "horizon_memcached_servers": _split_list(ctx.memcached_servers),
        "horizon_secret_key_file": _state_dir(ctx, "/var/lib/openstack-dashboard/secret_key"),
    })


def dashboard_redirect(ctx: RegionContext) -> str:
    return _render("horizon/redirect.html.j2", {
        "redirect_region": ctx.region,
        "redirect_dashboard_url": ctx.dashboard_url,
    })


# --- values shared by several files -----------------------------------------------

def _authtoken_values(prefix: str, ctx: RegionContext, user: str) -> dict[str, Any]:
    """[keystone_authtoken] of a service: the shared Keystone, this region's memcached."""
    return {
        f"{prefix}_region": ctx.region,
        f"{prefix}_www_authenticate_uri": _keystone_base(ctx),
        f"{prefix}_auth_url": _keystone_base(ctx),
        f"{prefix}_memcached_servers": ctx.memcached_servers,
        f"{prefix}_keystone_user": ctx.service_users.get(user),
        f"{prefix}_service_password": ctx.service_password,
    }


def _only_on_controller(roles: tuple[str, ...], values: dict[str, Any]) -> dict[str, Any]:
    """Values only a controller's file uses (a compute holds no database password)."""
    return values if "controller" in roles else {}


def _keystone_base(ctx: RegionContext) -> str:
    url = ctx.keystone_url.rstrip("/")
    if url.endswith("/v3"):
        raise ValueError(f"keystone_url {ctx.keystone_url!r}: give the Keystone base URL, without /v3")
    return url


def _keystone_v3(ctx: RegionContext) -> str:
    return _keystone_base(ctx) + "/v3" if ctx.keystone_url else ""


def _glance_url(ctx: RegionContext) -> str:
    return _http(ctx.controller_address, 9292)


def _neutron_url(ctx: RegionContext) -> str:
    return _http(ctx.controller_address, 9696)


def _http(host: str, port: int, path: str = "") -> str:
    if not host:
        return ""
    return f"http://{_url_host(host)}:{port}{path}"


def _url_host(host: str) -> str:
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host  # a host name


def _state_dir(ctx: RegionContext, path: str) -> str:
    return ctx.state_root.rstrip("/") + path


def _all_regions(ctx: RegionContext) -> tuple[str, ...]:
    return _unique((*ctx.regions, ctx.region))


def _cloud_names(ctx: RegionContext) -> list[tuple[str, str]]:
    """(cloud name, region): the region name in lower case."""
    names = [(region.lower(), region) for region in _all_regions(ctx)]
    clashing = len({name for name, _ in names}) != len(names)
    if clashing:
        raise ValueError(f"regions {list(_all_regions(ctx))} differ only by case: clouds.yaml needs distinct names")
    return names


def _allowed_hosts(ctx: RegionContext, node_address: str) -> tuple[str, ...]:
    dashboard_host: Optional[str] = urlsplit(ctx.dashboard_url).hostname if ctx.dashboard_url else None
    return _unique(h for h in (dashboard_host, ctx.controller_address, node_address, "localhost") if h)


def _split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


# --- rendering --------------------------------------------------------------------

def _present(values: Mapping[str, Any]) -> dict[str, Any]:
    """Drop missing values (None or ""), so StrictUndefined names them."""
    return {k: v for k, v in values.items() if v is not None and v != ""}


def _render(template: str, values: Mapping[str, Any]) -> str:
    return render(template, **_present(values))


def _render_conf(template: str, values: Mapping[str, Any]) -> str:
    """An oslo.config file: every text value escaped for it."""
    return _render(template, {k: _oslo_value(k, v) if isinstance(v, str) else v for k, v in values.items()})


def _oslo_value(name: str, value: str) -> str:
    """oslo.config substitutes `$name` and reads one line: `$$` is a literal `$`."""
    if "\n" in value or "\r" in value:
        raise ValueError(f"{name}: a configuration value cannot contain a line break")
    return value.replace("$", "$$")


def _shell(value: str) -> str:
    return shlex.quote(value) if value else ""
