"""What one registry entry says about an OpenStack service.

A ServiceDefinition is the one place that knows a service: its catalog entries, its
Keystone user and roles, its databases, the files it reads and the templates they
come from, its units per node role, how to install it, how to sync its database and
how to tell it is ready. Every component reads these entries; no other module keeps
a table keyed by service.

Commands are shell text with these placeholders, filled in per node:
`{venv}` (the Python environment of the OpenStack services), `{address}` (the
node's address), `{host}` (the node's name: nova's and OVN's host), `{controller}`
(the region's first controller) and `{config}` (the service's first file).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from components.registry.roles import ROLES  # noqa: F401 (the roles a node may have)


@dataclass(frozen=True)
class CatalogEntry:
    """One service record and its endpoints (the same URL on all three interfaces)."""

    type: str  # "compute"
    name: str  # "nova"
    description: str
    port: int
    path: str = ""  # appended to <scheme>://<address>:<port>, e.g. "/v2.1"
    legacy: bool = False  # registered only when a stack asks for it (volumev2)


@dataclass(frozen=True)
class Listen:
    """One HAProxy `listen` block on the region's VIP (seeds 001/002)."""

    name: str
    port: int
    httpchk: Optional[str] = "GET /"  # None: a TCP connect check
    timeouts: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConfigFile:
    """A file the service reads on nodes of `roles`, rendered from `template`.

    `context(ctx, node)` returns the template's variables for one node (a
    NodeContext); a value it leaves out fails the render (StrictUndefined)."""

    path: str
    template: str
    roles: tuple[str, ...]
    context: Callable[[Any, Any], Mapping[str, Any]]
    oslo: bool = True  # an oslo.config file: `$` is escaped, line breaks refused
    mode: str = "0640"
    group: Optional[str] = None  # default: the service's system user


@dataclass(frozen=True)
class Wsgi:
    """An API served as a WSGI application from the service's Python environment."""

    module: str  # e.g. "placement.wsgi.api"
    port: int
    config_dir: str  # e.g. "/etc/placement"
    # Environment the application reads its configuration from; "{config_dir}" is
    # replaced by the config dir on the node.
    environment: tuple[tuple[str, str], ...] = ()
    factory: Optional[str] = None  # call module.<factory>() for the app; default: module.application
    argv: tuple[str, ...] = ()  # the command line the app parses ("{config_dir}" replaced), instead of the server's
    # Files the server needs beside the config that the Python package ships
    # (in <virtualenv>/etc/<service>/), e.g. glance's paste pipeline.
    shipped_files: tuple[str, ...] = ()
    threads: int = 4  # gunicorn gthread threads of its one worker


@dataclass(frozen=True)
class Ready:
    """How to tell a unit really works (templates/tools/ready.py), checked with the
    service's own credentials through this region's catalog:

    - `api`: an authenticated GET of `path` on the service type's endpoint answers 2xx;
    - `compute-service` / `volume-service`: the API lists `binary` on this host, up;
    - `network-agent`: Neutron lists `binary` on this host, alive;
    - `token`: Keystone answers a token request (a wrong password: 401);
    - `active`: the unit runs and stays up (a worker no API reports).
    """

    kind: str
    service_type: str = ""
    path: str = ""
    binary: str = ""
    credentials: str = ""  # config file whose [keystone_authtoken] is used; default: the unit's first file


@dataclass(frozen=True)
class Unit:
    """A long-running process of the service on nodes of `roles`; restarted when one
    of the files it `reads` changes."""

    name: str  # systemd unit name
    roles: tuple[str, ...]
    reads: tuple[str, ...]  # node paths
    wsgi: Optional[Wsgi] = None
    command: str = ""  # without wsgi: what ExecStart runs, e.g. "{venv}/bin/nova-conductor --config-file ..."
    description: str = ""
    ready: Ready = Ready("active")
    environment: tuple[tuple[str, str], ...] = ()
    after: tuple[str, ...] = ()  # systemd units it starts after (mariadb.service, ...)
    # Units (of any service) that must be READY before this one starts, because it
    # exits at start without them: nova-conductor calls placement at start. On the same
    # node the program restarts it only after their readiness check passed, and systemd
    # orders it after them at boot.
    needs: tuple[str, ...] = ()
    packaged: bool = False  # a unit the distribution's package ships (ovn-controller): not written
    user: str = ""  # the account it runs as; default: the service's system user
    group: str = ""  # its group; default: the user's
    umask: str = ""  # systemd's UMask=; default: systemd's (0022)
    stop_timeout: str = "30"  # systemd's TimeoutStopSec= (placeholders allowed): after it, SIGKILL


@dataclass(frozen=True)
class Step:
    """A one-off command on nodes of `roles`, re-run when its text changes. Run as root,
    after the node's files are written and before its units start."""

    name: str
    roles: tuple[str, ...]
    command: str  # with the placeholders above
    first_controller_only: bool = False  # database work: once per region
    tls_only: bool = False  # only where the stack runs TLS (not with plainHttp)


@dataclass(frozen=True)
class Hook:
    """Work of a service across nodes: run on the region's first controller (as the
    service's user) once every node of `after_roles` is ready, and again when that
    set of nodes changes. E.g. nova maps new computes to its cell."""

    name: str
    command: str  # with the placeholders above
    after_roles: tuple[str, ...]


@dataclass(frozen=True)
class Database:
    name: str  # "nova_api"
    user: str  # MariaDB user, e.g. "nova"


@dataclass(frozen=True)
class ServiceDefinition:
    name: str  # "nova": also its config directory, system user and template folder
    catalog: tuple[CatalogEntry, ...] = ()
    # What a stack's `services` list names to run it; default: its catalog types.
    selectors: tuple[str, ...] = ()
    user: Optional[str] = None  # Keystone service user (per region: "<user>-<Region>")
    user_roles: tuple[str, ...] = ("admin", "service")  # on the `service` project
    databases: tuple[Database, ...] = ()
    messaging: bool = False  # talks to the region's RabbitMQ
    files: tuple[ConfigFile, ...] = ()
    units: tuple[Unit, ...] = ()
    listens: tuple[Listen, ...] = ()  # HAProxy, in the order they appear in haproxy.cfg
    haproxy_order: int = 100  # where its listen blocks go in haproxy.cfg (lower first)
    # Install: Python packages into the node's virtualenv, Debian packages; keyed by
    # registry role, "*" for every role the service runs on; "<role>+<compute driver>"
    # (e.g. "compute+libvirt") is what one compute driver adds.
    pip: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    apt: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    setup: tuple[Step, ...] = ()  # node preparation after files (paste files, OVN wiring)
    db_sync: tuple[str, ...] = ()  # as the service's user on the first controller, in order
    hooks: tuple[Hook, ...] = ()  # work across nodes, once nodes of some roles are ready
    # Directories it writes beyond /var/lib/<name> (its setup makes them on real nodes;
    # the loopback sandbox's runner makes them under the node's root).
    data_dirs: tuple[str, ...] = ()
    # The service's own command placeholders, from the number of the region's
    # controllers and whether it runs TLS (nova's cell URL templates).
    placeholders: Optional[Callable[[int, bool], Mapping[str, str]]] = None

    def __post_init__(self) -> None:
        if not self.selectors:
            object.__setattr__(self, "selectors", tuple(c.type for c in self.catalog))

    def selected_by(self, services: tuple[str, ...]) -> bool:
        return any(s in services for s in self.selectors)

    def files_for(self, roles: tuple[str, ...]) -> tuple[ConfigFile, ...]:
        return tuple(f for f in self.files if any(r in roles for r in f.roles))

    def units_for(self, roles: tuple[str, ...]) -> tuple[Unit, ...]:
        return tuple(u for u in self.units if any(r in roles for r in u.roles))

    def runs_on(self, roles: tuple[str, ...]) -> bool:
        return bool(self.files_for(roles) or self.units_for(roles))

    def packages(self, kind: str, roles: tuple[str, ...]) -> tuple[str, ...]:
        """What `kind` ("pip" or "apt") installs for this service on a node with these
        registry roles (roles.registry_roles: with the compute driver's variant)."""
        table = self.pip if kind == "pip" else self.apt
        keys = (["*"] if self.runs_on(roles) else []) + list(roles)
        return tuple(dict.fromkeys(p for k in keys for p in table.get(k, ())))

    @property
    def database_users(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(db.user for db in self.databases))
