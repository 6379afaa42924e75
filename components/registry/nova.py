"""Nova, the compute service of a region: API, conductor and scheduler on the
controller, nova-compute on every compute node. Every section that finds another
service through the catalog names this region, and nova calls placement, neutron,
glance and cinder as its own user."""
from components.registry.context import NodeContext, RegionContext, only_on_controller
from components.registry.model import (CatalogEntry, ConfigFile, Database, Hook, Listen, Ready, ServiceDefinition,
                                       Step, Unit, Wsgi)

NOVA_CONF = "/etc/nova/nova.conf"
SUDOERS = "/etc/sudoers.d/nova"
QEMU_CONF = "/etc/libvirt/qemu.conf"
OS_VIF_FILTERS = "/etc/nova/rootwrap.d/os-vif.filters"
LIBVIRT = "compute+libvirt"  # a compute node whose nova-compute runs libvirt (registry/roles.py)
PORT = 8774
METADATA_PORT = 8775  # what OVN's metadata agent on each compute forwards guests' requests to
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
        # TCG emulates QEMU's default CPU model; host-model would ask for the host's features.
        "cpu_mode": "none" if ctx.virt_type == "qemu" else "host-model",
        "state_path": ctx.state_dir("/var/lib/nova"),
        "lock_path": ctx.state_dir("/var/lib/nova/tmp"),
        "rootwrap_config": "/etc/nova/rootwrap.conf",
        # compute.shutdownTimeout (components/settings.py); nova's defaults otherwise.
        "manager_shutdown_timeout": ctx.extra.get("manager_shutdown_timeout", 160),
        "graceful_shutdown_timeout": ctx.extra.get("graceful_shutdown_timeout", 180),
    }


def sudoers(ctx: RegionContext, node: NodeContext) -> dict:
    return {"venv": ctx.venv}


def qemu_conf(ctx: RegionContext, node: NodeContext) -> dict:
    controllers = ctx.extra.get("qemu_cgroup_controllers")
    return {"region": ctx.region, "set_cgroup_controllers": controllers is not None,
            "cgroup_controllers": list(controllers or ())}


def no_values(ctx: RegionContext, node: NodeContext) -> dict:
    return {}


def nova_service(binary: str, roles: tuple[str, ...], description: str, after: tuple[str, ...] = (),
                 needs: tuple[str, ...] = (), stop_timeout: str = Unit.stop_timeout) -> Unit:
    return Unit(binary, roles, (NOVA_CONF,), command=f"{{venv}}/bin/{binary} --config-file {NOVA_CONF}",
                description=description, ready=Ready("compute-service", "compute", binary=binary), after=after,
                needs=needs, stop_timeout=stop_timeout)


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
        ConfigFile(QEMU_CONF, "nova/qemu.conf.j2", (LIBVIRT,), qemu_conf, oslo=False, mode="0600", group="root"),
        # Root's, like the shipped filters: rootwrap trusts no file nova could write.
        ConfigFile(OS_VIF_FILTERS, "nova/os-vif.filters.j2", (LIBVIRT,), no_values, oslo=False, mode="0644",
                   group="root"),
    ),
    units=(
        Unit("nova-api", ("controller",), (NOVA_CONF,), description="OpenStack Compute API",
             wsgi=Wsgi("nova.wsgi.osapi_compute", PORT, "/etc/nova", (("OS_NOVA_CONFIG_DIR", "{config_dir}"),),
                       shipped_files=("api-paste.ini",)),
             ready=Ready("api", "compute", "/flavors")),
        # The metadata API answers guests' requests that OVN's metadata agents forward,
        # signed with the shared secret; its root lists the metadata versions.
        Unit("nova-metadata-api", ("controller",), (NOVA_CONF,), description="OpenStack Compute metadata API",
             wsgi=Wsgi("nova.wsgi.metadata", METADATA_PORT, "/etc/nova", (("OS_NOVA_CONFIG_DIR", "{config_dir}"),)),
             ready=Ready("url", path=f"{{scheme}}://{{address}}:{METADATA_PORT}/")),
        # Both exit at start when placement does not answer yet ("The placement service
        # for ... exists but does not have any supported versions").
        nova_service("nova-conductor", ("controller",), "OpenStack Compute conductor", needs=("placement-api",)),
        nova_service("nova-scheduler", ("controller",), "OpenStack Compute scheduler", needs=("placement-api",)),
        # Debian's libvirtd, restarted when its qemu.conf changes.
        Unit("libvirtd", (LIBVIRT,), (QEMU_CONF,), packaged=True, description="libvirt"),
        nova_service("nova-compute", ("compute",), "OpenStack Compute",
                     after=("ovn-controller.service", "libvirtd.service"), needs=("libvirtd",),
                     stop_timeout="{compute_stop_timeout}"),
    ),
    listens=(
        Listen("nova_compute_api_cluster", PORT),
        Listen("nova_metadata_api_cluster", METADATA_PORT),
        # Seed 002's VNC proxy (6080) block comes with that service: nothing serves it
        # yet, and HAProxy would only report dead backends.
    ),
    haproxy_order=40,
    # os-vif's Open vSwitch plugin imports pyroute2 without requiring it.
    pip={"*": ("nova",), LIBVIRT: ("pyroute2",)},
    # libvirt's Python binding is Debian's, linked into the virtualenv (step
    # nova-libvirt-python): it must match the libvirt it talks to, and needs no compiler.
    apt={"compute": ("sudo",),
         # genisoimage: config drives.
         LIBVIRT: ("libvirt-daemon-system", "qemu-system-x86", "qemu-utils", "python3-libvirt", "genisoimage")},
    setup=(
        # QEMU runs as libvirt's user and opens the guests' disks and kernels under
        # instances/: it must be able to walk there.
        Step("nova-dirs", ("controller", "compute"),
             "install -d -o nova -g nova -m 0755 /var/lib/nova /var/lib/nova/instances && "
             "install -d -o nova -g nova -m 0750 /var/lib/nova/tmp"),
        # nova-compute talks to libvirtd through its socket, open to the libvirt group.
        Step("nova-libvirt-group", (LIBVIRT,), "usermod -a -G libvirt nova"),
        Step("nova-libvirt-python", (LIBVIRT,),
             "set -e; site=$({venv}/bin/python -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])'); "
             "for f in $(dpkg -L python3-libvirt | grep -E '^/usr/lib/python3/dist-packages/[^/]+$'); do "
             "ln -sfn \"$f\" \"$site/\"; done; {venv}/bin/python -c 'import libvirt'"),
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
