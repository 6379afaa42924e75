"""Horizon, the one dashboard of every region, beside the shared Keystone (seed 000
step 9). A stack runs it when its `services` name `dashboard`."""
from urllib.parse import urlsplit

from components.registry.context import NodeContext, RegionContext
from components.registry.model import ConfigFile, Listen, ServiceDefinition

LOCAL_SETTINGS = "/etc/openstack-dashboard/local_settings"  # RDO's path (seed 000 is CentOS)


def local_settings(ctx: RegionContext, node: NodeContext) -> dict:
    dashboard_host = urlsplit(ctx.dashboard_url).hostname if ctx.dashboard_url else None
    return {
        "region": ctx.region,
        "keystone_url": ctx.keystone_v3,
        "regions": list(dict.fromkeys((*ctx.regions, ctx.region))),
        "allowed_hosts": list(dict.fromkeys(h for h in (dashboard_host, ctx.controller_address, node.address,
                                                        "localhost") if h)),
        "memcached_servers": [s.strip() for s in ctx.memcached_servers.split(",") if s.strip()],
        "secret_key_file": ctx.state_dir("/var/lib/openstack-dashboard/secret_key"),
    }


SERVICE = ServiceDefinition(
    name="horizon",
    selectors=("dashboard",),
    files=(ConfigFile(LOCAL_SETTINGS, "horizon/local_settings.py.j2", ("controller",), local_settings,
                      oslo=False, group="apache"),),
    # Horizon's WEBROOT is /dashboard/ (templates/horizon); "/" is httpd's 403 welcome page on RDO.
    listens=(Listen("dashboard_cluster", 80, httpchk="GET /dashboard/auth/login/"),),
    pip=("horizon",),
    haproxy_order=10,
)
