"""Keystone, the ONE identity service every region shares. It runs in the stack that
hosts it (`keystone: {node: ...}`): on that node, or with `ha` on every controller
behind the VIP (seed 003). Its endpoints in every region carry the same URL."""
from components.registry.model import CatalogEntry, Database, Listen, Ready, ServiceDefinition, Unit, Wsgi

KEYSTONE_CONF = "/etc/keystone/keystone.conf"
PORT = 5000


def keystone_conf(region: str, database_connection: str, config_dir: str, log_dir: str = "",
                  memcached_servers: str = "", memcached_user: str = "", memcached_password: str = "") -> dict:
    """`memcached_servers`: Keystone's cache (tokens, catalog, assignments), the region's
    memcached; with `memcached_password`, as its SASL user."""
    return {
        "region": region,
        "database_connection": database_connection,
        "config_dir": config_dir,
        "log_dir": log_dir,  # "": to stderr, that is the journal
        "memcached_servers": memcached_servers,
        "memcached_user": memcached_user,
        "memcached_password": memcached_password,
    }


SERVICE = ServiceDefinition(
    name="keystone",
    catalog=(CatalogEntry("identity", "keystone", "OpenStack Identity", PORT, "/v3/"),),
    databases=(Database("keystone", "keystone"),),
    units=(Unit("keystone", ("controller",), (KEYSTONE_CONF,), description="OpenStack Identity API",
                # Keystone reads its config files from this variable, and parses the
                # process's command line unless started through a module of our own.
                wsgi=Wsgi("keystone.server.wsgi", PORT, "/etc/keystone",
                          (("OS_KEYSTONE_CONFIG_FILES", "{config_dir}/keystone.conf"),),
                          factory="initialize_public_application"),
                ready=Ready("token")),),
    listens=(Listen("keystone_public_cluster", PORT),),
    haproxy_order=20,
    pip={"*": ("keystone",)},
    db_sync=("{venv}/bin/keystone-manage --config-file {config} db_sync",),
)
