"""Node roles as data: what every node of a role installs from Debian, and when its
nodes start relative to the other roles. Pure Python (no Pulumi).

What a role RUNS comes from the service registry (each ServiceDefinition's files,
units and setup name the roles they are for); which hooks run once a role's nodes
are ready comes from the services' `hooks` (nova maps new computes to its cell).

Adding a role is one entry below, then naming it in the `roles` of the files, units
and steps of the services that run there (README, "Adding a node role").
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Role:
    name: str
    description: str
    # Debian packages of the role's infrastructure, on every node of the role (the
    # services that run there add their own through the registry).
    apt: tuple[str, ...] = ()
    # Roles whose nodes must be configured and running before this role's nodes start.
    starts_after: tuple[str, ...] = ()
    # The role's first node runs its steps (database syncs, once per region) before
    # its other nodes start.
    first_node_first: bool = False
    # What the registry matches on such a node besides the role: "<role>+<compute
    # driver>" (compute+libvirt: libvirt itself, its qemu.conf, os-vif's privileges).
    has_driver_variant: bool = False


ROLE_LIST: tuple[Role, ...] = (
    Role("controller", "the APIs, schedulers and conductors; the region's database, message queue and token cache",
         # sasl2-bin (saslpasswd2) and the PLAIN mechanism: memcached's SASL users.
         apt=("mariadb-server", "rabbitmq-server", "memcached", "sasl2-bin", "libsasl2-modules"),
         first_node_first=True),
    Role("compute", "nova-compute and the OVN chassis: where guests run", starts_after=("controller",),
         has_driver_variant=True),
)
ROLES_BY_NAME: dict[str, Role] = {r.name: r for r in ROLE_LIST}
ROLES: tuple[str, ...] = tuple(ROLES_BY_NAME)


def registry_roles(roles: tuple[str, ...], compute_driver: str) -> tuple[str, ...]:
    """A node's roles as the registry's files, units, steps and packages match them:
    its roles, then "<role>+<driver>" for each role with a driver variant."""
    variants = tuple(f"{r}+{compute_driver}" for r in roles
                     if r in ROLES_BY_NAME and ROLES_BY_NAME[r].has_driver_variant)
    return tuple(roles) + variants


def is_variant_of(name: str) -> bool:
    """Whether a registry role name is a known role or a role's driver variant."""
    base, _, driver = name.partition("+")
    return base in ROLES_BY_NAME and (not driver or ROLES_BY_NAME[base].has_driver_variant)


def start_role(roles: tuple[str, ...]) -> Role:
    """The role that decides when a node with these roles starts: the first of them in
    ROLE_LIST's order (a controller that is also a compute starts as a controller)."""
    return next(r for r in ROLE_LIST if r.name in roles)


def start_order() -> tuple[Role, ...]:
    """ROLE_LIST with every role after the roles it starts after."""
    ordered: list[Role] = []

    def visit(role: Role, seen: tuple[str, ...] = ()) -> None:
        if role in ordered:
            return
        if role.name in seen:
            raise ValueError(f"roles {', '.join(seen)} start after each other: no start order exists")
        for name in role.starts_after:
            visit(ROLES_BY_NAME[name], (*seen, role.name))
        ordered.append(role)

    for role in ROLE_LIST:
        visit(role)
    return tuple(ordered)
