"""openstack-multiregion: one stack per region around ONE shared Keystone.

The stack that hosts Keystone (`keystone: {node: ...}`) builds the AdminRegion;
every stack, that one included, registers its own region through ServiceRegion.
Other stacks find the shared Keystone through a StackReference.
"""
import pulumi

from components.admin_region import AdminRegion, AdminRegionArgs
from components.control_plane import ControlPlane, ControlPlaneArgs
from components.ha_cluster import HaCluster, HaClusterArgs
from components.identity import KeystoneInUseGuard, Ownership, set_ownership, stack_owner
from components.node_software import NodeSoftware, NodeSoftwareArgs
from components.region_nodes import RegionNodes, RegionNodesArgs
from components.region_secrets import RegionSecrets, RegionSecretsArgs
from components.region_tls import RegionTls, RegionTlsArgs
from components.service_region import ServiceRegion, ServiceRegionArgs
from components.settings import NAMESPACE, ConfigError, engine_secret_keys, parse, raw_stack_config, secret

settings = parse(raw_stack_config(), engine_secret_keys(), pulumi.get_stack())  # raises a one-line ConfigError before any resource
# Every Keystone record this stack creates is tagged with its name; see components/identity.py.
# The Keystone stack also takes the records its own bootstrap step makes.
set_ownership(Ownership(owner=stack_owner(), adopt_untagged=settings.adopt_untagged,
                        bootstrap_region=settings.region if settings.hosts_keystone else None))
ssh_key = secret("sshPrivateKey") if settings.nodes else None
service_password_override = pulumi.Config(NAMESPACE).get_secret("servicePassword")
shared_users = settings.service_users == "shared"


def infrastructure(secrets: RegionSecrets, after: list) -> HaCluster | ControlPlane | None:
    """The region's databases, message queue and token cache, before any OpenStack
    service (Keystone included) uses them: with ha, a cluster across the controllers
    (Galera, RabbitMQ, HAProxy, keepalived); on real nodes without it, on the first
    controller. (The loopback sandbox keeps its data in SQLite.)"""
    if settings.ha:
        return HaCluster("ha", HaClusterArgs(settings=settings, database_passwords=secrets.database_passwords,
                                             rabbitmq_password=secrets.rabbitmq_password, ssh_private_key=ssh_key,
                                             memcached_password=secrets.memcached_password, tls=tls,
                                             depends_on=after + installed + tls_ready))
    if settings.service_manager == "systemd" and settings.controllers:
        return ControlPlane("control-plane", ControlPlaneArgs(
            settings=settings, database_passwords=secrets.database_passwords,
            rabbitmq_password=secrets.rabbitmq_password, ssh_private_key=ssh_key, tls=tls,
            memcached_password=secrets.memcached_password, depends_on=after + installed + tls_ready))
    return None


def node_tls(keystone_ref: pulumi.StackReference | None = None) -> RegionTls | None:
    """The nodes' CA and certificates, on real nodes unless plainHttp; a region stack
    trusts the Keystone stack's CA and signs with it (unless it brings its own)."""
    if not (settings.tls and software):
        return None
    ca = key = None
    if keystone_ref is not None:
        ca = keystone_ref.get_output("tlsCa").apply(lambda pem: pem or "")
        key = pulumi.Output.secret(keystone_ref.get_output("tlsCaKey")).apply(
            lambda pem: pem or keystone_stack_signs_nothing())
    return RegionTls("tls", RegionTlsArgs(settings=settings, ssh_private_key=ssh_key, keystone_ca=ca,
                                          keystone_ca_key=key, depends_on=installed))


# Real nodes get their software first: packages and the OpenStack virtualenv.
software = NodeSoftware("software", NodeSoftwareArgs(settings=settings, ssh_private_key=ssh_key)) \
    if settings.nodes and settings.service_manager == "systemd" else None
installed = software.all_ready if software else []


def keystone_stack_signs_nothing() -> str:
    if settings.tls_given:
        return ""  # not needed: this stack brings its own certificate
    raise ConfigError("tlsCertificate", "(unset)", f"a certificate of your own (tlsCa, tlsCertificate, tlsPrivateKey): "
                                                   f"the Keystone stack {settings.keystone.stack} makes no CA to sign "
                                                   f"this stack's certificates with")


def stack_reference_name(name: str) -> str:
    return name if "/" in name else f"{pulumi.get_organization()}/{pulumi.get_project()}/{name}"


if settings.hosts_keystone:
    tls = node_tls()
    tls_ready = tls.all_ready if tls else []
    secrets = RegionSecrets("secrets", RegionSecretsArgs(
        settings=settings, service_password_override=service_password_override, all_service_users=shared_users))
    # The Keystone stack's databases come first: its Keystone keeps its data there.
    cluster = infrastructure(secrets, [])
    admin_password = secret("adminPassword")
    admin = AdminRegion("admin", AdminRegionArgs(
        settings=settings, admin_password=admin_password,
        database_password=secrets.database_passwords.apply(lambda p: p.get("keystone", "")),
        service_passwords=secrets.service_passwords, ssh_private_key=ssh_key, tls=tls,
        memcached_password=secrets.memcached_password,
        depends_on=cluster.ready if cluster else installed + tls_ready))
    keystone_url, auth = pulumi.Output.from_input(admin.keystone_url), admin.auth
    service_ids, service_project_id = admin.service_ids, admin.service_project_id
    depends_on = admin.keystone_ready
    pulumi.export("keystone", {"publicUrl": keystone_url, "internalUrl": keystone_url, "adminUrl": keystone_url})
    pulumi.export("adminAuth", auth)
    pulumi.export("serviceIds", service_ids)
    pulumi.export("serviceProjectId", service_project_id)
    pulumi.export("serviceUsers", settings.service_users)
    if tls:
        # Region stacks trust this CA and, unless they bring their own certificates,
        # sign their controllers' with it.
        pulumi.export("tlsCa", tls.ca_cert)
        if tls.ca_key is not None:
            pulumi.export("tlsCaKey", pulumi.Output.secret(tls.ca_key))
    if shared_users:
        pulumi.export("sharedServicePasswords", secrets.service_passwords)
else:
    ref = pulumi.StackReference(stack_reference_name(settings.keystone.stack))
    keystone_url = ref.require_output("keystone").apply(lambda k: k["publicUrl"])
    auth = pulumi.Output.secret(ref.require_output("adminAuth"))
    admin_password = auth.apply(lambda a: a["password"])
    service_ids = ref.require_output("serviceIds")
    service_project_id = ref.require_output("serviceProjectId")
    depends_on = []
    tls = node_tls(ref)
    tls_ready = tls.all_ready if tls else []
    secrets = RegionSecrets("secrets", RegionSecretsArgs(
        settings=settings, service_password_override=service_password_override,
        shared_service_passwords=ref.require_output("sharedServicePasswords") if shared_users else None))

region = ServiceRegion("region", ServiceRegionArgs(
    settings=settings, keystone_url=keystone_url, auth=auth, service_ids=service_ids,
    service_project_id=service_project_id, service_passwords=secrets.service_passwords,
    shared_service_users=shared_users, depends_on=depends_on))
if not settings.hosts_keystone:
    # After the Region: its VRRP router ids are checked against the other regions'
    # before anything is pushed to a node.
    cluster = infrastructure(secrets, [region.region])
cluster_ready = cluster.ready if cluster else []

nodes = None
if settings.nodes and settings.services:
    # Services start only once their region, endpoints and users exist in Keystone:
    # keystonemiddleware looks up this region's identity endpoint.
    nodes = RegionNodes("nodes", RegionNodesArgs(
        settings=settings, keystone_url=keystone_url, secrets=secrets, ssh_private_key=ssh_key,
        admin_password=admin_password if settings.admin_openrc else None, tls=tls,
        depends_on=[region, *installed, *cluster_ready, *tls_ready]))

if settings.hosts_keystone:
    # Depends on everything else in the stack, so `pulumi destroy` deletes it first
    # and stops there while other regions still use this Keystone.
    KeystoneInUseGuard("keystone-in-use-guard", auth=auth, region_id=settings.region,
                       opts=pulumi.ResourceOptions(depends_on=[r for r in (software, tls, cluster, admin, region,
                                                                           nodes) if r]))

pulumi.export("region", settings.region)
pulumi.export("keystoneUrl", keystone_url)
pulumi.export("endpoints", region.endpoints)
if "dashboard" in settings.services and settings.controllers:
    # Horizon answers on its node's own address (not behind HAProxy, also with `ha`).
    pulumi.export("dashboardUrl", f"{settings.scheme}://{settings.controllers[0].address}/dashboard/")
