"""A service region's share of the shared Keystone: what this stack owns.

Its Region, its identity endpoints (all three interfaces at the shared Keystone
URL), its service endpoints at the region's controller or VIP, and, by default,
its own service users (`nova-RegionTwo`, ...) with `admin` on the service project.
Destroying the stack removes exactly these, endpoints before the Region, and
never a shared service record (deleting one would delete every region's endpoints).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi

from components import identity
from components import registry
from components.registry.context import http_url
from components.settings import Settings


@dataclass
class ServiceRegionArgs:
    settings: Settings
    keystone_url: pulumi.Input[str]
    auth: pulumi.Input[dict]  # admin credential of the shared Keystone (secret)
    service_ids: pulumi.Input[dict]  # service type -> id, owned by the admin region
    service_project_id: pulumi.Input[str]
    service_passwords: pulumi.Input[dict]  # service name -> Keystone password (secret)
    shared_service_users: bool = False
    depends_on: Sequence[pulumi.Resource] = ()


def service_url(settings: Settings, service_type: str) -> str:
    entry = registry.catalog_entry(service_type)
    return http_url(settings.service_address, entry.port, entry.path, settings.scheme)


def service_user_name(settings: Settings, service: str) -> str:
    """The Keystone user of a service ("nova") in this region: nova-RegionTwo, or
    nova itself with serviceUsers: shared."""
    base = registry.by_name(service).user
    return base if settings.service_users == "shared" else f"{base}-{settings.region}"


class ServiceRegion(pulumi.ComponentResource):
    region: identity.Region
    endpoints: pulumi.Output[list]

    def __init__(self, name: str, args: ServiceRegionArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("openstack-multiregion:region:ServiceRegion", name, None, opts)
        s = args.settings
        self.region = identity.Region(f"{name}-region", auth=args.auth, region_id=s.region,
                                      description=f"Managed by openstack-multiregion ({pulumi.get_stack()})",
                                      vrrp_router_ids=s.vrrp_claims,
                                      opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)))
        # Endpoints depend on the Region so that destroy deletes them first:
        # Keystone refuses to delete a region that still has endpoints.
        in_region = pulumi.ResourceOptions(parent=self, depends_on=[self.region])
        service_ids = pulumi.Output.from_input(args.service_ids)
        self._endpoint_list: list[tuple[str, str, identity.Endpoint]] = []
        for service_type, url in [("identity", args.keystone_url),
                                  *((t, service_url(s, t)) for t in s.catalog_types)]:
            service_id = service_ids.apply(lambda ids, t=service_type: _service_id(ids, t))
            for interface in registry.INTERFACES:
                ep = identity.Endpoint(f"{name}-{service_type}-{interface}", auth=args.auth, service_id=service_id,
                                       interface=interface, region_id=self.region.region_id,
                                       url=s.endpoint_url(service_type, interface) or url, opts=in_region)
                self._endpoint_list.append((service_type, interface, ep))
        self.users = {} if args.shared_service_users else self._own_service_users(name, args)
        self.endpoints = pulumi.Output.all(*[
            pulumi.Output.all(t, i, ep.url).apply(lambda v: {"serviceType": v[0], "interface": v[1], "url": v[2]})
            for t, i, ep in self._endpoint_list])
        self.register_outputs({"region": s.region, "endpoints": self.endpoints})

    def _own_service_users(self, name: str, args: ServiceRegionArgs) -> dict:
        s = args.settings
        passwords = pulumi.Output.secret(args.service_passwords)
        users = {}
        for entry in registry.selected(s.services):
            if not entry.user:
                continue
            user_name = service_user_name(s, entry.name)
            user = identity.User(f"{name}-user-{user_name}", auth=args.auth, user_name=user_name,
                                 domain_id="default", password=passwords.apply(lambda p, e=entry.name: p[e]),
                                 name_suffix=_region_suffix(s, user_name), opts=pulumi.ResourceOptions(parent=self, depends_on=[self.region]))
            for role in entry.user_roles:
                identity.RoleAssignment(f"{name}-user-{user_name}-{role}", auth=args.auth, user_id=user.id,
                                        project_id=args.service_project_id, role_name=role,
                                        opts=pulumi.ResourceOptions(parent=self))
            users[user_name] = user
        return users


def _region_suffix(settings: Settings, user_name: str) -> Optional[str]:
    """`-RegionTwo` when the user's name carries the region: the region's users are
    then looked up with one listing."""
    suffix = f"-{settings.region}"
    return suffix if user_name.endswith(suffix) else None


def _service_id(ids: dict, service_type: str) -> str:
    if service_type not in ids:
        raise pulumi.RunError(f"the admin region registers no '{service_type}' service; "
                              f"add {service_type} to its stack's services and run pulumi up there first")
    return ids[service_type]
