"""Placement, the resource inventory of a region: nova-compute reports its host
here and the scheduler claims from it."""
from components.registry.context import NodeContext, RegionContext
from components.registry.model import CatalogEntry, ConfigFile, Database, Listen, Ready, ServiceDefinition, Unit, Wsgi

PLACEMENT_CONF = "/etc/placement/placement.conf"
PORT = 8778


def placement_conf(ctx: RegionContext, node: NodeContext) -> dict:
    return {
        "region": ctx.region,
        "keystone_authtoken": ctx.authtoken("placement"),
        "database_connection": ctx.database_connections.get("placement"),
    }


SERVICE = ServiceDefinition(
    name="placement",
    catalog=(CatalogEntry("placement", "placement", "Placement API", PORT),),
    user="placement",
    databases=(Database("placement", "placement"),),
    files=(ConfigFile(PLACEMENT_CONF, "placement/placement.conf.j2", ("controller",), placement_conf),),
    units=(Unit("placement-api", ("controller",), (PLACEMENT_CONF,), description="OpenStack Placement API",
                wsgi=Wsgi("placement.wsgi.api", PORT, "/etc/placement",
                          (("OS_PLACEMENT_CONFIG_DIR", "{config_dir}"),)),
                ready=Ready("api", "placement", "/resource_providers")),),
    listens=(Listen("placement_api_cluster", PORT),),
    haproxy_order=50,
    pip={"*": ("openstack-placement",)},
    db_sync=("{venv}/bin/placement-manage --config-file {config} db sync",),
)
