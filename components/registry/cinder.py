"""Cinder, the block storage service of a region: API and scheduler on the controller."""
from components.registry.context import NodeContext, RegionContext
from components.registry.model import (CatalogEntry, ConfigFile, Database, Listen, Ready, ServiceDefinition, Step,
                                       Unit, Wsgi)

CINDER_CONF = "/etc/cinder/cinder.conf"
PORT = 8776
GLANCE_PORT = 9292


def cinder_conf(ctx: RegionContext, node: NodeContext) -> dict:
    return {
        "region": ctx.region,
        "transport_url": ctx.transport_url,
        "host": node.host,
        "my_ip": node.address,
        # This region's glance: without it a volume created from an image fails with
        # "Invalid image identifier" (seed 000, step 8).
        "glance_api_servers": ctx.api_url(GLANCE_PORT),
        "database_connection": ctx.database_connections.get("cinder"),
        # cinder-api monkey-patches eventlet, under which keystonemiddleware's SASL
        # memcached client sends requests unauthenticated (memcached: "Auth failure"):
        # with SASL, its token cache stays in the process.
        "keystone_authtoken": ctx.authtoken("cinder", shared_cache=not ctx.memcached_password),
        # Cinder calls this region's nova (volume extend and snapshot events) as itself.
        "auth": ctx.keystoneauth("cinder"),
        "messaging": ctx.messaging_tls,
        "glance_cafile": ctx.ca_file,
        "state_path": ctx.state_dir("/var/lib/cinder"),
        "lock_path": ctx.state_dir("/var/lib/cinder/tmp"),
    }


SERVICE = ServiceDefinition(
    name="cinder",
    catalog=(
        CatalogEntry("volumev3", "cinderv3", "OpenStack Block Storage", PORT, "/v3/%(project_id)s"),
        CatalogEntry("volumev2", "cinderv2", "OpenStack Block Storage (v2, legacy)", PORT, "/v2/%(project_id)s",
                     legacy=True),
    ),
    user="cinder",
    databases=(Database("cinder", "cinder"),),
    messaging=True,
    files=(ConfigFile(CINDER_CONF, "cinder/cinder.conf.j2", ("controller",), cinder_conf),),
    units=(
        Unit("cinder-api", ("controller",), (CINDER_CONF,), description="OpenStack Block Storage API",
             wsgi=Wsgi("cinder.wsgi.api", PORT, "/etc/cinder", argv=("--config-file", "{config_dir}/cinder.conf"),
                       shipped_files=("api-paste.ini", "resource_filters.json")),
             ready=Ready("api", "volumev3", "/volumes")),
        Unit("cinder-scheduler", ("controller",), (CINDER_CONF,), description="OpenStack Block Storage scheduler",
             command=f"{{venv}}/bin/cinder-scheduler --config-file {CINDER_CONF}",
             ready=Ready("volume-service", "volumev3", binary="cinder-scheduler")),
    ),
    listens=(Listen("cinder_api_cluster", PORT),),
    haproxy_order=70,
    pip={"*": ("cinder",)},
    setup=(Step("cinder-dirs", ("controller",),
                "install -d -o cinder -g cinder -m 0750 /var/lib/cinder /var/lib/cinder/tmp"),),
    db_sync=("{venv}/bin/cinder-manage --config-file {config} db sync",),
)
