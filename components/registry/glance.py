"""Glance, the image service of a region: its API on the controller, images on the
controller's disk (file store)."""
from components.registry.context import NodeContext, RegionContext
from components.registry.model import (CatalogEntry, ConfigFile, Database, Listen, Ready, ServiceDefinition, Step,
                                       Unit, Wsgi)

GLANCE_API_CONF = "/etc/glance/glance-api.conf"
PORT = 9292


def glance_api_conf(ctx: RegionContext, node: NodeContext) -> dict:
    return {
        "region": ctx.region,
        "keystone_authtoken": ctx.authtoken("glance"),
        "bind_host": node.address,
        # Where other glance workers reach this one (image import) and what clients see.
        "public_endpoint": ctx.api_url(PORT),
        "self_url": ctx.node_url(node, PORT),
        "database_connection": ctx.database_connections.get("glance"),
        "images_dir": ctx.state_dir("/var/lib/glance/images/"),
        "staging_dir": ctx.state_dir("/var/lib/glance/staging/"),
        "tasks_dir": ctx.state_dir("/var/lib/glance/tasks_work_dir/"),
        "lock_path": ctx.state_dir("/var/lib/glance/tmp"),
        "python": f"{ctx.venv}/bin/python3",
    }


SERVICE = ServiceDefinition(
    name="glance",
    catalog=(CatalogEntry("image", "glance", "OpenStack Image", PORT),),
    user="glance",
    databases=(Database("glance", "glance"),),
    files=(ConfigFile(GLANCE_API_CONF, "glance/glance-api.conf.j2", ("controller",), glance_api_conf),),
    units=(Unit("glance-api", ("controller",), (GLANCE_API_CONF,), description="OpenStack Image API",
                wsgi=Wsgi("glance.wsgi.api", PORT, "/etc/glance", (("OS_GLANCE_CONFIG_DIR", "{config_dir}"),),
                          shipped_files=("glance-api-paste.ini",)),
                ready=Ready("api", "image", "/v2/images")),),
    # Uploads can take long (seed 002).
    listens=(Listen("glance_api_cluster", PORT, timeouts=("client 3h", "server 3h")),),
    haproxy_order=30,
    pip={"*": ("glance",)},
    setup=(Step("glance-dirs", ("controller",),
                "install -d -o glance -g glance -m 0750 /var/lib/glance/images /var/lib/glance/staging "
                "/var/lib/glance/tasks_work_dir /var/lib/glance/tmp"),),
    db_sync=("{venv}/bin/glance-manage --config-file {config} db_sync",),
    data_dirs=("/var/lib/glance/images",),  # the file store
)
