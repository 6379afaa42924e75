"""Neutron, the network service of a region, with ML2/OVN: the API and its workers
and OVN's central databases on the controller; Open vSwitch and ovn-controller on
every compute node, registered in OVN under the node's name (nova's host)."""
from components.registry.context import NodeContext, RegionContext
from components.registry.model import (CatalogEntry, ConfigFile, Database, Listen, Ready, ServiceDefinition, Step,
                                       Unit, Wsgi)

NEUTRON_CONF = "/etc/neutron/neutron.conf"
ML2_CONF = "/etc/neutron/plugins/ml2/ml2_conf.ini"
METADATA_AGENT_CONF = "/etc/neutron/neutron_ovn_metadata_agent.ini"
NOVA_METADATA_PORT = 8775  # registry/nova.py's metadata API
# neutron's privileged contexts (neutron/privileged): the agent starts each helper itself.
PRIVSEP_SECTIONS = ("privsep", "privsep_dhcp_release", "privsep_ovs_vsctl", "privsep_namespace",
                    "privsep_conntrack", "privsep_link")
PORT = 9696
OVN_NB_PORT, OVN_SB_PORT = 6641, 6642
CONFIG_FILES = f"--config-file {NEUTRON_CONF} --config-file {ML2_CONF}"


def neutron_conf(ctx: RegionContext, node: NodeContext) -> dict:
    return {
        "region": ctx.region,
        "transport_url": ctx.transport_url,
        "host": node.host,
        "bind_host": node.address,
        "database_connection": ctx.database_connections.get("neutron"),
        "keystone_authtoken": ctx.authtoken("neutron"),
        # Port events to this region's nova, inventories to its placement: as neutron.
        "auth": ctx.keystoneauth("neutron"),
        "messaging": ctx.messaging_tls,
        "lock_path": ctx.state_dir("/var/lib/neutron/tmp"),
    }


def ml2_conf(ctx: RegionContext, node: NodeContext) -> dict:
    """OVN's databases over SSL (with TLS): neutron presents its node's certificate,
    as every OVN client must, and verifies theirs with the cloud's CA."""
    proto = "ssl" if ctx.node_pem else "tcp"
    return {
        "region": ctx.region,
        "ovn_nb": f"{proto}:{ctx.first_controller}:{OVN_NB_PORT}",
        "ovn_sb": f"{proto}:{ctx.first_controller}:{OVN_SB_PORT}",
        "ovn_ssl": {"key": ctx.node_pem, "cert": ctx.node_pem, "ca": ctx.ca_file} if ctx.node_pem else {},
        # On Open vSwitch's userspace datapath, ovs-vswitchd turns PROMISC on with the
        # flags it cached when the tap appeared: a tap that os-vif creates and sets UP
        # within a millisecond can be written back DOWN, and the guest's packets are
        # dropped for good (measured: 1 boot in about 20). When libvirt makes the tap,
        # UP comes well after ovs-vswitchd opened it (measured: 11 boots of 11).
        "os_vif_creates_taps": ctx.ovs_datapath != "netdev",
    }


def ovn_sb(ctx: RegionContext) -> dict:
    proto = "ssl" if ctx.node_pem else "tcp"
    return {"connection": f"{proto}:{ctx.first_controller}:{OVN_SB_PORT}",
            "ssl": {"key": ctx.node_pem, "cert": ctx.node_pem, "ca": ctx.ca_file} if ctx.node_pem else {}}


def metadata_agent_conf(ctx: RegionContext, node: NodeContext) -> dict:
    """OVN's metadata agent on a compute: a proxy per network in a namespace, which
    forwards the guests' requests to this region's nova metadata API (controller or
    VIP), signed with the shared secret."""
    return {
        "region": ctx.region,
        "state_path": ctx.state_dir("/var/lib/neutron"),
        "metadata_host": ctx.controller_address,
        "metadata_port": NOVA_METADATA_PORT,
        "scheme": ctx.scheme,
        "ca_file": ctx.ca_file,
        "metadata_secret": ctx.metadata_secret,
        "privsep_sections": PRIVSEP_SECTIONS,
        "helper": f"{ctx.venv}/bin/privsep-helper --config-file {METADATA_AGENT_CONF}",
        "ovn_sb": ovn_sb(ctx),
    }


def neutron_worker(name: str, description: str) -> Unit:
    return Unit(name, ("controller",), (NEUTRON_CONF, ML2_CONF), command=f"{{venv}}/bin/{name} {CONFIG_FILES}",
                description=description, after=("ovn-northd.service",))


SERVICE = ServiceDefinition(
    name="neutron",
    catalog=(CatalogEntry("network", "neutron", "OpenStack Networking", PORT),),
    user="neutron",
    databases=(Database("neutron", "neutron"),),
    messaging=True,
    files=(
        ConfigFile(NEUTRON_CONF, "neutron/neutron.conf.j2", ("controller",), neutron_conf),
        ConfigFile(ML2_CONF, "neutron/ml2_conf.ini.j2", ("controller",), ml2_conf),
        ConfigFile(METADATA_AGENT_CONF, "neutron/neutron_ovn_metadata_agent.ini.j2", ("compute",),
                   metadata_agent_conf),
    ),
    units=(
        Unit("neutron-api", ("controller",), (NEUTRON_CONF, ML2_CONF), description="OpenStack Networking API",
             wsgi=Wsgi("neutron.wsgi.api", PORT, "/etc/neutron",
                       (("OS_NEUTRON_CONFIG_DIR", "{config_dir}"),),
                       shipped_files=("api-paste.ini",)),
             # The API's own workers count; without it: "The Neutron API workers count is zero".
             environment=(("ASGI_WORKERS", "1"),), after=("ovn-northd.service",),
             ready=Ready("api", "network", "/v2.0/networks")),
        neutron_worker("neutron-periodic-workers", "OpenStack Networking periodic workers"),
        neutron_worker("neutron-ovn-maintenance-worker", "OpenStack Networking OVN maintenance worker"),
        # Debian's unit; it reads Open vSwitch's external_ids (setup below), no file of ours.
        Unit("ovn-controller", ("compute",), (), packaged=True,
             ready=Ready("network-agent", "network", binary="ovn-controller",
                         credentials="/etc/nova/nova.conf")),
        # As root: it makes namespaces and veth pairs, plugs them into br-int (Open
        # vSwitch answers root only) and starts haproxy in them, as the neutron user.
        # Group neutron and umask 0007: its socket, which haproxy forwards to, is
        # root:neutron 0770 (neutron's agent sets no mode on it).
        Unit("neutron-ovn-metadata-agent", ("compute",), (METADATA_AGENT_CONF,),
             command=f"{{venv}}/bin/neutron-ovn-metadata-agent --config-file {METADATA_AGENT_CONF}",
             description="OpenStack Networking OVN metadata agent", user="root", group="neutron", umask="0007",
             after=("ovn-controller.service",), needs=("ovn-controller",),
             ready=Ready("network-agent", "network", binary="neutron-ovn-metadata-agent",
                         credentials="/etc/nova/nova.conf")),
    ),
    listens=(Listen("neutron_api_cluster", PORT),),
    haproxy_order=60,
    # neutron-db-manage imports pyroute2, which the neutron wheel does not declare.
    pip={"controller": ("neutron", "pyroute2"), "compute": ("neutron", "pyroute2")},
    apt={"controller": ("ovn-central",), "compute": ("openvswitch-switch", "ovn-host", "haproxy")},
    setup=(
        Step("neutron-dirs", ("controller", "compute"),
             "install -d -o neutron -g neutron -m 0750 /var/lib/neutron /var/lib/neutron/tmp"),
        # With TLS, OVN's databases listen with SSL only and accept only clients whose
        # certificate the cloud's CA signed (neutron, each chassis); northd uses the
        # local sockets.
        Step("ovn-central-ssl", ("controller",),
             "ovn-nbctl set-ssl {node_pem} {node_pem} {ca_file} && ovn-sbctl set-ssl {node_pem} {node_pem} {ca_file}",
             tls_only=True),
        Step("ovn-central", ("controller",),
             f"ovn-nbctl set-connection p{{ovn_proto}}:{OVN_NB_PORT}:{{address}} -- set connection . "
             f"inactivity_probe=60000 && ovn-sbctl set-connection p{{ovn_proto}}:{OVN_SB_PORT}:{{address}} -- "
             f"set connection . inactivity_probe=60000"),
        # ovn-controller reaches the southbound database with the local Open vSwitch's SSL.
        Step("ovn-chassis-ssl", ("compute",), "ovs-vsctl --no-wait set-ssl {node_pem} {node_pem} {ca_file}",
             tls_only=True),
        # Debian's Open vSwitch scripts replace system-id with a random one at every start
        # unless this file names it: OVN would then see a new chassis after a reboot.
        # Its ovs-record-hostname.service writes the machine's hostname over ours at every
        # boot (measured: after a power loss the chassis was `node4`, and neutron bound no
        # new port to r2-cmp): disabled, the node's config name stays.
        Step("ovn-chassis", ("compute",),
             "systemctl disable -q --now ovs-record-hostname.service && "
             "echo {host} > /etc/openvswitch/system-id.conf && "
             "ovs-vsctl --no-wait set open_vswitch . external_ids:system-id={host} external_ids:hostname={host} "
             f"external_ids:ovn-remote={{ovn_proto}}:{{controller}}:{OVN_SB_PORT} external_ids:ovn-encap-type=geneve "
             "external_ids:ovn-encap-ip={address} external_ids:ovn-bridge=br-int "
             "external_ids:ovn-bridge-datapath-type={ovs_datapath}"),
    ),
    db_sync=(f"{{venv}}/bin/neutron-db-manage {CONFIG_FILES} upgrade heads",),
)
