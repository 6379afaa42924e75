"""Nova, the compute service of a region: API, conductor and scheduler on the
controller, nova-compute on every compute node. Every section that finds another
service through the catalog names this region, and nova calls placement, neutron,
glance and cinder as its own user."""
from components.registry.context import NodeContext, RegionContext, only_on_controller
from components.registry.model import (CatalogEntry, ConfigFile, Database, Hook, Listen, Ready, ServiceDefinition,
                                       Step, Unit, Wsgi)

NOVA_CONF = "/etc/nova/nova.conf"
SUDOERS = "/etc/sudoers.d/nova"
PORT = 8774
COMPUTE_DRIVERS = {
    "libvirt": "libvirt.LibvirtDriver",
    # Records a compute id like a real driver, so nova-compute can start again
    # (plain fake.FakeDriver cannot).
    "fake": "fake.FakeDriverWithoutFakeNodes",
}


def nova_conf(ctx: RegionContext, node: NodeContext) -> dict:
    """One nova.conf for controller, compute, or both roles on one node. A compute's
    holds no database connection ("No DB access allowed in nova-compute")."""
    return {
        "region": ctx.region,
        "roles": node.roles,
        "host": node.host,
        "my_ip": node.address,
        "transport_url": ctx.transport_url,
        **only_on_controller(node, {
            "database_connection": ctx.database_connections.get("nova"),
            "api_database_connection": ctx.database_connections.get("nova_api"),
            "memcached_servers": ctx.memcached_servers,
            "memcached_sasl": ctx.memcached_sasl,
            "keystone_authtoken": ctx.authtoken("nova"),
            "metadata_proxy_shared_secret": ctx.metadata_secret,
        }),
        "auth": ctx.keystoneauth("nova"),
        "messaging": ctx.messaging_tls,
        "glance_cafile": ctx.ca_file,
        "compute_driver": COMPUTE_DRIVERS[ctx.compute_driver],
        "virt_type": ctx.virt_type,
        "state_path": ctx.state_dir("/var/lib/nova"),
        "lock_path": ctx.state_dir("/var/lib/nova/tmp"),
        "rootwrap_config": "/etc/nova/rootwrap.conf",
    }


def sudoers(ctx: RegionContext, node: NodeContext) -> dict:
    return {"venv": ctx.venv}


def nova_service(binary: str, roles: tuple[str, ...], description: str, after: tuple[str, ...] = (),
                 needs: tuple[str, ...] = ()) -> Unit:
    return Unit(binary, roles, (NOVA_CONF,), command=f"{{venv}}/bin/{binary} --config-file {NOVA_CONF}",
                description=description, ready=Ready("compute-service", "compute", binary=binary), after=after,
                needs=needs)


def cell_url_templates(rabbitmq_hosts: int, tls: bool = False) -> dict[str, str]:
    """The cell mappings' URLs as templates of nova.conf's own (nova's CellMapping
    format): [database] connection (with its TLS query), and [DEFAULT] transport_url
    with one entry per RabbitMQ host."""
    if rabbitmq_hosts <= 1:
        hosts = "{username}:{password}@{hostname}:{port}"
    else:
        hosts = ",".join(f"{{username{i}}}:{{password{i}}}@{{hostname{i}}}:{{port{i}}}"
                         for i in range(1, rabbitmq_hosts + 1))
    database = "{scheme}://{username}:{password}@{hostname}/{path}"
    query = "?{query}" if tls else ""
    return {"cell_database": database + query, "cell0_database": database + "_cell0" + query,
            "cell_transport": "{scheme}://" + hosts + "/{path}"}


SERVICE = ServiceDefinition(
    name="nova",
    catalog=(CatalogEntry("compute", "nova", "OpenStack Compute", PORT, "/v2.1"),),
    user="nova",
    databases=(Database("nova_api", "nova"), Database("nova", "nova"), Database("nova_cell0", "nova")),
    messaging=True,
    files=(
        ConfigFile(NOVA_CONF, "nova/nova.conf.j2", ("controller", "compute"), nova_conf),
        # nova-compute runs privileged helpers through rootwrap.
        ConfigFile(SUDOERS, "nova/sudoers.j2", ("compute",), sudoers, oslo=False, mode="0440", group="root"),
    ),
    units=(
        Unit("nova-api", ("controller",), (NOVA_CONF,), description="OpenStack Compute API",
             wsgi=Wsgi("nova.wsgi.osapi_compute", PORT, "/etc/nova", (("OS_NOVA_CONFIG_DIR", "{config_dir}"),),
                       shipped_files=("api-paste.ini",)),
             ready=Ready("api", "compute", "/flavors")),
        # Both exit at start when placement does not answer yet ("The placement service
        # for ... exists but does not have any supported versions").
        nova_service("nova-conductor", ("controller",), "OpenStack Compute conductor", needs=("placement-api",)),
        nova_service("nova-scheduler", ("controller",), "OpenStack Compute scheduler", needs=("placement-api",)),
        nova_service("nova-compute", ("compute",), "OpenStack Compute", after=("ovn-controller.service",)),
    ),
    listens=(
        Listen("nova_compute_api_cluster", PORT),
        # Seed 002's metadata (8775) and VNC proxy (6080) blocks come with those services:
        # nothing serves them yet, and HAProxy would only report dead backends.
    ),
    haproxy_order=40,
    pip={"*": ("nova",), "compute+libvirt": ("libvirt-python",)},
    apt={"compute": ("sudo",),
         "compute+libvirt": ("libvirt-daemon-system", "qemu-system-x86", "qemu-utils", "pkg-config", "libvirt-dev",
                             "gcc", "python3-dev")},
    setup=(
        Step("nova-dirs", ("controller", "compute"),
             "install -d -o nova -g nova -m 0750 /var/lib/nova /var/lib/nova/tmp /var/lib/nova/instances"),
        Step("nova-rootwrap", ("compute",),
             "install -d -m 0755 /etc/nova/rootwrap.d && install -m 0644 {venv}/etc/nova/rootwrap.d/* "
             "/etc/nova/rootwrap.d/ && sed 's|^exec_dirs=.*|exec_dirs={venv}/bin,/sbin,/usr/sbin,/bin,/usr/bin|' "
             "{venv}/etc/nova/rootwrap.conf > /etc/nova/rootwrap.conf && chmod 0644 /etc/nova/rootwrap.conf"),
    ),
    # The cell mappings hold URL templates that nova fills from nova.conf, so a rotated
    # database or RabbitMQ password reaches them without a password on a command line.
    db_sync=(
        "{venv}/bin/nova-manage api_db sync",
        "{venv}/bin/nova-manage cell_v2 map_cell0 --database_connection '{cell0_database}'",
        "{venv}/bin/nova-manage cell_v2 update_cell --cell_uuid 00000000-0000-0000-0000-000000000000 "
        "--database_connection '{cell0_database}' --transport-url none:///",
        "{venv}/bin/nova-manage cell_v2 list_cells | grep -q ' cell1 ' || {venv}/bin/nova-manage cell_v2 create_cell "
        "--name cell1 --database_connection '{cell_database}' --transport-url '{cell_transport}'",
        "{venv}/bin/nova-manage cell_v2 update_cell --cell_uuid \"$({venv}/bin/nova-manage cell_v2 list_cells | "
        "awk -F'|' '$2 ~ / cell1 / {{gsub(/ /, \"\", $3); print $3}}')\" "
        "--database_connection '{cell_database}' --transport-url '{cell_transport}'",
        "{venv}/bin/nova-manage db sync",
    ),
    # Once every compute node's nova-compute is up: map the new hosts to cell1, so the
    # scheduler can place servers on them.
    hooks=(Hook("discover-hosts", "{venv}/bin/nova-manage cell_v2 discover_hosts --verbose", ("compute",)),),
    placeholders=cell_url_templates,
)
