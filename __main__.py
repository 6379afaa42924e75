"""openstack-multiregion: one stack per region around ONE shared Keystone.

The stack that hosts Keystone (`keystone: {node: ...}`) builds the AdminRegion;
every stack, that one included, registers its own region through ServiceRegion.
Other stacks find the shared Keystone through a StackReference.
"""
import pulumi

from components.admin_region import AdminRegion, AdminRegionArgs
from components.ha_cluster import HaCluster, HaClusterArgs
from components.identity import KeystoneInUseGuard
from components.region_nodes import RegionNodes, RegionNodesArgs
from components.service_region import ServiceRegion, ServiceRegionArgs
from components.settings import parse, raw_stack_config, secret

settings = parse(raw_stack_config())  # raises a one-line ConfigError before any resource
ssh_key = secret("sshPrivateKey") if settings.nodes else None
# With ha, servicePassword is also the password of the region's database users.
service_password = secret("servicePassword") if settings.services or settings.ha else None
shared_users = settings.service_users == "shared"


def ha_cluster(after: list) -> HaCluster | None:
    """With ha, the control plane (Galera, HAProxy, keepalived, RabbitMQ): Keystone and
    the region's services keep their data in its Galera cluster."""
    return HaCluster("ha", HaClusterArgs(settings=settings, database_password=service_password,
                                         ssh_private_key=ssh_key, depends_on=after)) if settings.ha else None


def stack_reference_name(name: str) -> str:
    return name if "/" in name else f"{pulumi.get_organization()}/{pulumi.get_project()}/{name}"


if settings.hosts_keystone:
    # The Keystone stack's cluster comes first: its Keystone runs on it.
    cluster = ha_cluster([])
    admin = AdminRegion("admin", AdminRegionArgs(settings=settings, admin_password=secret("adminPassword"),
                                                 service_password=service_password, ssh_private_key=ssh_key,
                                                 depends_on=cluster.ready if cluster else []))
    keystone_url, auth = pulumi.Output.from_input(admin.keystone_url), admin.auth
    service_ids, service_project_id = admin.service_ids, admin.service_project_id
    depends_on = admin.keystone_ready
    pulumi.export("keystone", {"publicUrl": keystone_url, "internalUrl": keystone_url, "adminUrl": keystone_url})
    pulumi.export("adminAuth", auth)
    pulumi.export("serviceIds", service_ids)
    pulumi.export("serviceProjectId", service_project_id)
    pulumi.export("serviceUsers", settings.service_users)
    if shared_users:
        pulumi.export("sharedServicePassword", pulumi.Output.secret(service_password))
else:
    ref = pulumi.StackReference(stack_reference_name(settings.keystone.stack))
    keystone_url = ref.require_output("keystone").apply(lambda k: k["publicUrl"])
    auth = pulumi.Output.secret(ref.require_output("adminAuth"))
    service_ids = ref.require_output("serviceIds")
    service_project_id = ref.require_output("serviceProjectId")
    depends_on = []

region = ServiceRegion("region", ServiceRegionArgs(
    settings=settings, keystone_url=keystone_url, auth=auth, service_ids=service_ids,
    service_project_id=service_project_id, service_password=service_password,
    shared_service_users=shared_users, depends_on=depends_on))
if not settings.hosts_keystone:
    # After the Region: its VRRP router ids are checked against the other regions'
    # before anything is pushed to a node.
    cluster = ha_cluster([region.region])
cluster_ready = cluster.ready if cluster else []

nodes = None
if settings.nodes and settings.services:
    # Services start only once their region, endpoints and users exist in Keystone:
    # keystonemiddleware looks up this region's identity endpoint.
    nodes = RegionNodes("nodes", RegionNodesArgs(
        settings=settings, keystone_url=keystone_url, admin_password=auth.apply(lambda a: a["password"]),
        service_password=service_password, ssh_private_key=ssh_key, depends_on=[region, *cluster_ready]))

if settings.hosts_keystone:
    # Depends on everything else in the stack, so `pulumi destroy` deletes it first
    # and stops there while other regions still use this Keystone.
    KeystoneInUseGuard("keystone-in-use-guard", auth=auth, region_id=settings.region,
                       opts=pulumi.ResourceOptions(depends_on=[r for r in (cluster, admin, region, nodes) if r]))

pulumi.export("region", settings.region)
pulumi.export("keystoneUrl", keystone_url)
pulumi.export("endpoints", region.endpoints)
