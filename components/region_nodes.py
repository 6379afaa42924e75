"""The nodes of a service region: every service file rendered from its template,
pushed over SSH, and exactly the units that read a changed file restarted.

What runs where comes from the service registry (components/registry): each
service's files and units per node role.

With `serviceManager: systemd` (real nodes) the units are systemd units. With
`serviceManager: none` (the loopback sandbox) the WSGI APIs whose packages the
`virtualenv` holds run as supervised processes on the controller (Placement and
Glance in the sandbox); the other services' files are still rendered and pushed.

With `ha` the region's database is the HaCluster's Galera, reached through HAProxy
on the (DB) VIP, in the sandbox too; the cluster is ready before these nodes start.
"""
from __future__ import annotations

import functools
import shlex
import subprocess
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import pulumi

from components import ha_configs as ha
from components import registry
from components import service_configs as sc
from components.databases import database_url
from components.ha_cluster import database_host
from components.node import Node, NodeArgs, NodeFile, NodeStep, NodeUnit, on_node
from components.node_software import RELEASE
from components.region_secrets import RegionSecrets
from components.region_tls import RegionTls
from components.registry.roles import start_order, start_role
from components.registry.model import ServiceDefinition, Unit
from components.service_region import service_user_name
from components.settings import NodeSpec, Settings
from components.tls_paths import CA_FILE, SERVER_PEM
from components.systemd_units import Placeholders, node_placeholders, ready_command, unit_file, unit_path, wsgi_entry_path


@dataclass
class RegionNodesArgs:
    settings: Settings
    keystone_url: pulumi.Input[str]  # shared Keystone ".../v3/"
    secrets: RegionSecrets
    ssh_private_key: pulumi.Input[str]
    admin_password: Optional[pulumi.Input[str]] = None  # only with adminOpenrc
    tls: Optional[RegionTls] = None  # the nodes' CA and certificates (unless plainHttp)
    depends_on: Sequence[pulumi.Resource] = ()


@dataclass(frozen=True)
class SecretValues:
    """The region's secrets as plain text, inside one Output.apply."""

    service_passwords: Mapping[str, str] = field(default_factory=dict)
    database_passwords: Mapping[str, str] = field(default_factory=dict)
    rabbitmq_password: str = ""
    metadata_secret: str = ""
    admin_password: str = ""
    memcache_secret_key: str = ""
    dashboard_secret_key: str = ""
    memcached_password: str = ""


def placeholder_secrets(settings: Settings) -> SecretValues:
    """Stand-ins with the same keys, to learn which files a node gets (that depends
    on roles and services, never on secret values)."""
    services = {e.name: "x" for e in registry.SERVICES}
    database_users = {db.user: "x" for e in registry.SERVICES for db in e.databases}
    return SecretValues(services, database_users, "x", "x", "x" if settings.admin_openrc else "", "x", "x", "x")


def _database_connections(settings: Settings, passwords: Mapping[str, str], root: str) -> dict[str, str]:
    ca_file = CA_FILE if settings.tls else ""
    databases = [db for entry in registry.selected(settings.services) for db in entry.databases]
    if settings.service_manager == "none" and not settings.ha:
        return {db.name: f"sqlite:///{on_node(root, f'/var/lib/{db.user}/{db.name}.sqlite')}" for db in databases}
    # Without ha: the MariaDB of the first controller (ControlPlane).
    host = database_host(settings) if settings.ha else settings.controllers[0].address
    return {db.name: database_url(db.user, db.name, passwords[db.user], host, ca_file) for db in databases}


def region_context(settings: Settings, root: str, keystone_url: str, secrets: SecretValues) -> sc.RegionContext:
    ctl = settings.service_address
    return sc.RegionContext(
        region=settings.region,
        keystone_url=keystone_url.rstrip("/").removesuffix("/v3"),
        controller_address=ctl,
        memcached_servers=settings.memcached_list,
        # Every RabbitMQ node of the region (all controllers), as seeds 001/002 list them.
        transport_url=ha.transport_url("openstack", secrets.rabbitmq_password,
                                       [c.address for c in settings.controllers] or [ctl], settings.tls)
        if secrets.rabbitmq_password else "",
        database_connections=_database_connections(settings, secrets.database_passwords, root),
        service_users={e.name: service_user_name(settings, e.name) for e in registry.SERVICES if e.user},
        service_passwords=secrets.service_passwords,
        admin_password=secrets.admin_password,
        metadata_secret=secrets.metadata_secret,
        regions=(settings.region,),
        state_root="" if root == "/" else root,
        first_controller=settings.controllers[0].address if settings.controllers else ctl,
        compute_driver=settings.compute.driver,
        virt_type=settings.compute.virt_type,
        ovs_datapath=settings.network.datapath,
        venv=settings.virtualenv,
        ca_file=CA_FILE if settings.tls else "",
        # gunicorn serves HTTPS itself, also behind HAProxy (which verifies it).
        server_pem=SERVER_PEM if settings.tls else "",
        node_pem=SERVER_PEM if settings.tls else "",
        memcache_secret_key=secrets.memcache_secret_key if settings.tls else "",
        memcached_password=secrets.memcached_password if settings.tls else "",
        extra={"dashboard_secret_key": secrets.dashboard_secret_key,
               "qemu_cgroup_controllers": settings.compute.qemu_cgroup_controllers,
               "manager_shutdown_timeout": settings.compute.shutdown_timeout,
               "graceful_shutdown_timeout": settings.compute.graceful_shutdown_timeout},
    )


def secret_values(args: RegionNodesArgs) -> pulumi.Output:
    """Every secret the region's files may use, as one secret Output of SecretValues."""
    sec = args.secrets
    return pulumi.Output.secret(pulumi.Output.all(
        sec.service_passwords, sec.database_passwords, sec.rabbitmq_password or "", sec.metadata_secret or "",
        args.admin_password or "", sec.memcache_secret_key or "", sec.dashboard_secret_key or "",
        sec.memcached_password or "")).apply(
        lambda v: SecretValues(*v))


class RegionNodes(pulumi.ComponentResource):
    def __init__(self, name: str, args: RegionNodesArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("openstack-multiregion:region:RegionNodes", name, None, opts)
        s = args.settings
        values = secret_values(args)
        self.nodes: dict[str, Node] = {}
        # Roles start in their order (registry/roles.py): a compute registers with the
        # controllers' conductor, placement and OVN, so it starts once they are ready.
        ready_of_role: dict[str, list[pulumi.Resource]] = {}
        for role in start_order():
            members = [n for n in s.nodes if start_role(n.roles) is role]
            after = [r for earlier in role.starts_after for r in ready_of_role.get(earlier, [])]
            ready_of_role[role.name] = []
            for n in members:
                first = self.nodes.get(members[0].name)
                # The role's first node runs its steps (the database syncs) first.
                ahead = list(first.steps.values()) if first is not None and role.first_node_first else []
                self.nodes[n.name] = self._node(name, args, values, n, after + ahead)
                ready_of_role[role.name] += self.nodes[n.name].ready
        self.ready = [r for node in self.nodes.values() for r in node.ready]
        if s.service_manager == "systemd":
            self.ready += self._hooks(s)
        self.register_outputs({"nodes": list(self.nodes)})

    def _node(self, name: str, args: RegionNodesArgs, values: pulumi.Output, spec: NodeSpec,
              after: Sequence = ()) -> Node:
        s = args.settings
        root = s.node_root_for(spec.name)
        shape = region_context(s, root, "http://keystone:5000", placeholder_secrets(s))
        roles = s.registry_roles(spec)
        paths = sorted(sc.node_files(shape, spec.address, roles, s.services, spec.name))
        rendered = pulumi.Output.all(args.keystone_url, values).apply(
            lambda v: sc.node_files(region_context(s, root, v[0], v[1]), spec.address, roles, s.services,
                                    spec.name))
        modes = sc.node_file_modes(roles, s.services)
        files = [NodeFile(p, pulumi.Output.secret(rendered.apply(lambda f, p=p: f[p])),
                          mode=modes.get(p, ("0600", "root"))[0], group=modes.get(p, ("0600", "root"))[1])
                 for p in paths]
        entries = registry.selected(s.services)
        if s.service_manager == "none":
            extra_files, steps, units = _supervised(s, spec, root, entries)
        else:
            tls_trigger = args.tls.trigger(spec.name) if args.tls else None
            extra_files, steps, units = _systemd(s, spec, entries, {f.path: f for f in files}, tls_trigger)
        tls_ready = args.tls.ready(spec.name) if args.tls else []
        return Node(f"{name}-{spec.name}", NodeArgs(
            spec=spec, private_key=args.ssh_private_key, root=root, service_manager=s.service_manager,
            files=files + extra_files, steps=steps, units=units,
            depends_on=list(args.depends_on) + list(after) + tls_ready),
            pulumi.ResourceOptions(parent=self))

    def _hooks(self, s: Settings) -> list[pulumi.Resource]:
        """Each selected service's hooks (registry), on the first controller as the
        service's user, once every node of their roles is ready; again when those
        nodes change."""
        made = []
        first = self.nodes[s.controllers[0].name]
        at = node_placeholders(s, s.controllers[0])
        for entry in registry.selected(s.services):
            for hook in entry.hooks:
                members = [n for n in s.nodes if any(r in n.roles for r in hook.after_roles)]
                if not members:
                    continue
                command = f"runuser -u {entry.name} -- {at.fill(hook.command)}"
                made.append(first.command(f"{entry.name}-{hook.name}", command,
                                          triggers=[",".join(sorted(n.name for n in members))],
                                          depends_on=[r for n in members for r in self.nodes[n.name].ready]))
        return made


def _systemd(s: Settings, spec: NodeSpec, entries: Sequence[ServiceDefinition], files_by_path: dict,
             tls_trigger: Optional[pulumi.Output] = None):
    """A real node's part of each service: its unit files and WSGI entries, the
    service's preparation steps, database syncs (first controller only), and its units,
    each restarted when a file it reads changes (or the node's certificates, which
    every unit uses as a client or a server) and then checked really working."""
    first = spec.name == s.controllers[0].name
    files, steps, units = [], [], []
    for entry in entries:
        service_values = entry.placeholders(len(s.controllers), s.tls) if entry.placeholders else {}
        at = node_placeholders(s, spec, **service_values)
        mine = [u for u in entry.units_for(s.registry_roles(spec))]
        for unit in mine:
            if unit.packaged:
                continue
            files.append(NodeFile(unit_path(unit), unit_file(entry, unit, at), mode="0644"))
            if unit.wsgi:
                files.append(NodeFile(wsgi_entry_path(entry, unit), sc.wsgi_entry(unit, unit.wsgi.config_dir),
                                      mode="0640", group=entry.name))
        steps += _service_steps(s, spec, entry, at, first)
        for unit in mine:
            reads = [p for p in unit.reads if p in files_by_path]
            own = [] if unit.packaged else [unit_path(unit)] + ([wsgi_entry_path(entry, unit)] if unit.wsgi else [])
            setup = [step.command for step in steps if step.name.startswith(f"{entry.name}-")]
            triggers = (setup if unit.packaged else []) + ([tls_trigger] if tls_trigger is not None else [])
            units.append(NodeUnit(unit.name, files=tuple(reads + own), triggers=triggers,
                                  ready_command=ready_command(entry, unit, at), needs=unit.needs))
    return files, steps, units


def _service_steps(s: Settings, spec: NodeSpec, entry: ServiceDefinition, at: Placeholders,
                   first: bool) -> list[NodeStep]:
    steps = []
    roles = s.registry_roles(spec)
    for unit in entry.units_for(roles):
        for shipped in unit.wsgi.shipped_files if unit.wsgi else ():
            source = f"{s.virtualenv}/etc/{entry.name}/{shipped}"
            steps.append(NodeStep(f"{entry.name}-{shipped}", f"install -m 0640 -o root -g {entry.name} "
                                                             f"{shlex.quote(source)} {unit.wsgi.config_dir}/{shipped}"))
    for step in entry.setup:
        if step.tls_only and not s.tls:
            continue
        if any(r in roles for r in step.roles) and (first or not step.first_controller_only):
            steps.append(NodeStep(f"{entry.name}-{step.name}" if not step.name.startswith(entry.name) else step.name,
                                  at.fill(step.command)))
    config = entry.files[0].path if entry.files else ""
    if first and entry.db_sync and "controller" in spec.roles:
        sync = "; ".join(f"runuser -u {entry.name} -- env PYTHONWARNINGS=ignore sh -c "
                         f"{shlex.quote(at.fill(cmd, config=config))}"
                         for cmd in entry.db_sync)
        # Again when the release changes: an upgrade migrates the schema.
        steps.append(NodeStep(f"{entry.name}-db-sync", f"set -e; {sync}", triggers=[RELEASE]))
    return steps


@functools.lru_cache(maxsize=None)
def _virtualenv_holds(virtualenv: str, package: str) -> bool:
    """Whether the sandbox's Python environment (on this machine) has the package."""
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({package!r}) is None)"
    return subprocess.run([f"{virtualenv}/bin/python", "-c", probe], capture_output=True).returncode == 0


def _supervised(s: Settings, spec: NodeSpec, root: str, entries: Sequence[ServiceDefinition]):
    """The sandbox's services without systemd: each WSGI API of the node's services
    that the virtualenv holds, under gunicorn; and the region's memcached."""
    files, steps, units = [], [], []
    for entry in entries:
        for unit in entry.units_for(spec.roles):
            if unit.wsgi and _virtualenv_holds(s.virtualenv, entry.name):
                f, step, u = _supervised_wsgi(s, spec, root, entry, unit)
                files.append(f)
                steps.append(step)
                units.append(u)
    # memcached is the region's own token cache (memcached_servers on every controller);
    # where Keystone runs, Keystone's node starts it, before Keystone.
    if "controller" in spec.roles and not s.runs_keystone(spec):
        units.append(supervised_memcached(spec))
    return files, steps, units


def supervised_memcached(spec: NodeSpec) -> NodeUnit:
    """The sandbox's memcached on a controller (no systemd, no SASL: loopback only)."""
    return NodeUnit("memcached", files=(), start=f"memcached -d -u root -l {spec.address} -p 11211 -m 64 -P {{pidfile}}")


def _supervised_wsgi(s: Settings, spec: NodeSpec, root: str, entry: ServiceDefinition, unit: Unit):
    venv, wsgi = s.virtualenv, unit.wsgi
    conf_dir = on_node(root, wsgi.config_dir)
    entry_module = f"{unit.name.replace('-', '_')}_wsgi"
    wsgi_file = NodeFile(f"{wsgi.config_dir}/{entry_module}.py", sc.wsgi_entry(unit, conf_dir), mode="0644")
    prepare = " ".join(shlex.quote(on_node(root, d)) for d in (f"/var/lib/{entry.name}", f"/var/log/{entry.name}"))
    prepare = f"mkdir -p {prepare}" + "".join(
        f"; cp {venv}/etc/{entry.name}/{shipped} {shlex.quote(conf_dir)}/" for shipped in wsgi.shipped_files)
    for directory in entry.data_dirs:
        prepare += f"; mkdir -p {shlex.quote(on_node(root, directory))}"
    config = shlex.quote(on_node(root, entry.files[0].path))
    sync = "; ".join(f"PYTHONWARNINGS=ignore {cmd.format(venv=venv, config=config)}" for cmd in entry.db_sync)
    step = NodeStep(f"{entry.name}-db-sync", f"set -e; {prepare}; {sync}")
    log_dir = shlex.quote(on_node(root, f"/var/log/{entry.name}"))
    start = (f"PYTHONWARNINGS=ignore {venv}/bin/gunicorn --daemon --chdir {shlex.quote(conf_dir)} "
             f"--bind {spec.address}:{wsgi.port} --worker-class gthread --workers 2 --threads 1 --keep-alive 30 "
             f"--pid {{pidfile}} --access-logfile {log_dir}/access.log --error-logfile {log_dir}/gunicorn.log "
             f"{entry_module}:application")
    ready = f"http://{spec.address}:{wsgi.port}/"
    return wsgi_file, step, NodeUnit(unit.name, files=(*unit.reads, wsgi_file.path), start=start, ready_url=ready)
