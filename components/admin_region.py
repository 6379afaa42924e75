"""The admin region: the ONE shared Keystone, and the records every region shares.

It installs and runs Keystone on its node over SSH, then owns the global service
records, the `service` project, the declared domains and projects, and (with
`serviceUsers: shared`) the single set of service users. Service-region stacks
read its outputs through a StackReference and never own any of these records.
"""
from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi

from components import identity
from components.databases import database_url
from components.ha_cluster import database_host
from components.key_repository import KeyRepository
from components.node import Node, NodeArgs, NodeFile, NodeStep, NodeUnit, on_node
from components import registry
from components.registry import keystone as keystone_service
from components.service_configs import oslo_escaped, wsgi_entry
from components.systemd_units import (node_placeholders, ready_command, unit_file, unit_path, wsgi_entry_path,
                                      wsgi_module)
from components.region_nodes import supervised_memcached
from components.region_tls import RegionTls
from components.registry.context import MEMCACHED_USER
from components.settings import Settings
from components.tls_paths import CA_FILE
from components.templates import render

KEYSTONE_PIP = "keystone==30.0.0 gunicorn==27.0.1"


@dataclass
class AdminRegionArgs:
    settings: Settings
    admin_password: pulumi.Input[str]
    database_password: Optional[pulumi.Input[str]]  # Keystone's database user (with ha)
    service_passwords: pulumi.Input[dict]  # with serviceUsers: shared, the users this stack owns
    ssh_private_key: pulumi.Input[str]
    tls: Optional[RegionTls] = None  # Keystone over HTTPS (unless plainHttp)
    memcached_password: Optional[pulumi.Input[str]] = None  # memcached's SASL user (real nodes, with TLS)
    depends_on: Sequence[pulumi.Resource] = ()  # with ha: the region's HaCluster (Galera, HAProxy)


def shared_catalog(settings: Settings) -> list[registry.CatalogEntry]:
    """Service records the admin region registers: every catalog entry of the
    registry, legacy ones (volumev2) only when this stack asks for them."""
    return [c for _, c in registry.catalog_entries() if not c.legacy or c.type in settings.services]


def keystone_unit(port: int):
    """Keystone's registry unit, bound to the configured port (`keystone.port`)."""
    unit = registry.KEYSTONE.units[0]
    return dataclasses.replace(unit, wsgi=dataclasses.replace(unit.wsgi, port=port))


class AdminRegion(pulumi.ComponentResource):
    keystone_url: str
    auth: pulumi.Output[dict]
    service_ids: pulumi.Output[dict]
    service_project_id: pulumi.Output[str]

    def __init__(self, name: str, args: AdminRegionArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("openstack-multiregion:keystone:AdminRegion", name, None, opts)
        s = args.settings
        host = s.node(s.keystone.node)
        # Behind HAProxy (seed 003) the catalog and bootstrap URLs are the VIP's;
        # the node's own address is only used to see the server answer.
        front = s.ha.vip if s.ha else host.address
        self.keystone_url = f"{s.scheme}://{front}:{s.keystone.port}/v3/"
        if s.ha:
            self.keystone_nodes = self._ha_keystone_nodes(name, args)
        else:
            self.keystone_nodes = [self._keystone_node(name, args)]
        # What the rest of the stack waits for: Keystone answers on every node.
        self.keystone_ready = [r for node in self.keystone_nodes for r in node.ready]
        self.auth = pulumi.Output.secret({
            "authUrl": self.keystone_url, "username": "admin", "password": args.admin_password,
            "projectName": "admin", "userDomainName": "Default", "projectDomainName": "Default",
            **({"caCert": args.tls.bundle} if args.tls else {}),
        })
        after = pulumi.ResourceOptions(parent=self, depends_on=self.keystone_ready)

        self.services = {
            c.type: identity.Service(f"{name}-service-{c.type}", auth=self.auth, type=c.type, service_name=c.name,
                                     description=c.description, opts=after)
            for c in shared_catalog(s)
        }
        self.service_project = identity.Project(f"{name}-project-service", auth=self.auth, project_name="service",
                                                domain_id="default", description="Service users of every region",
                                                opts=after)
        self.domains = self._declared_domains(name, s, after)
        self.shared_users = self._shared_service_users(name, args, after) if s.service_users == "shared" else {}

        self.service_ids = pulumi.Output.all(**{t: svc.id for t, svc in self.services.items()})
        self.service_project_id = self.service_project.id
        self.register_outputs({"keystoneUrl": self.keystone_url, "serviceIds": self.service_ids,
                               "serviceProjectId": self.service_project_id})

    # --- Keystone on its node -------------------------------------------------------
    @staticmethod
    def _owner(s: Settings) -> str:
        return "root" if s.service_manager == "none" else "keystone"

    def _keystone_node(self, name: str, args: AdminRegionArgs) -> Node:
        """Keystone on its one node, with keys made on the node: on the region's MariaDB
        on real nodes, on SQLite in the loopback sandbox."""
        s = args.settings
        spec = s.node(s.keystone.node)
        if s.service_manager == "none":
            db = on_node(s.node_root_for(spec.name), "/var/lib/keystone/keystone.db")
            connection = f"sqlite:///{db}"
        else:
            connection = pulumi.Output.secret(args.database_password).apply(
                lambda pw: database_url("keystone", "keystone", pw, s.controllers[0].address,
                                        CA_FILE if s.tls else ""))
        return self._keystone_on(name, args, spec, connection, key_files=None, bootstrap=True,
                                 after=list(args.depends_on))

    def _keystone_on(self, name: str, args: AdminRegionArgs, spec, connection: pulumi.Input[str],
                     key_files: Optional[list[NodeFile]], bootstrap: bool, after: list) -> Node:
        """Keystone on `spec`: configured, started, answering on the node's own address.
        `key_files`: the shared key repositories (None: made on the node); `bootstrap`:
        this node creates the schema and the admin and catalog records."""
        s = args.settings
        root = s.node_root_for(spec.name)
        supervised = s.service_manager == "none"
        conf_dir = on_node(root, "/etc/keystone")
        # On real nodes Keystone logs to its journal; supervised, to files.
        log_dir = on_node(root, "/var/log/keystone") if supervised else ""
        owner = self._owner(s)
        unit_def = keystone_unit(s.keystone.port)
        conf = pulumi.Output.all(connection, args.memcached_password or "").apply(lambda v: render(
            "keystone/keystone.conf.j2", **oslo_escaped(keystone_service.keystone_conf(
                s.region, v[0], conf_dir, log_dir, s.memcached_list, MEMCACHED_USER if v[1] else "", v[1]))))
        files = [NodeFile(keystone_service.KEYSTONE_CONF, conf, group=owner), *(key_files or []),
                 NodeFile(wsgi_entry_path(registry.KEYSTONE, unit_def), wsgi_entry(unit_def, conf_dir), mode="0644",
                          group=owner)]
        km = (f"env PYTHONWARNINGS=ignore {s.virtualenv}/bin/keystone-manage "
              f"--config-file {shlex.quote(conf_dir + '/keystone.conf')}")
        as_owner = "" if supervised else "runuser -u keystone -- "
        prepare = "mkdir -p " + " ".join(shlex.quote(d) for d in (
            on_node(root, "/var/lib/keystone"), *([log_dir] if log_dir else [])))
        make_keys = "" if key_files is not None else (
            f"; {km} fernet_setup --keystone-user {owner} --keystone-group {owner}; "
            f"{km} credential_setup --keystone-user {owner} --keystone-group {owner}")
        steps = [NodeStep("keystone-db", f"set -e; {prepare}; {as_owner}{km} db_sync{make_keys}")] if bootstrap \
            else [NodeStep("keystone-dirs", f"set -e; {prepare}")]
        if bootstrap:
            # The password reaches keystone-manage through stdin and its environment,
            # never its command line.
            steps.append(NodeStep("keystone-bootstrap", (
                f"set -e; IFS= read -r OS_BOOTSTRAP_PASSWORD || [ -n \"$OS_BOOTSTRAP_PASSWORD\" ]; "
                f"export OS_BOOTSTRAP_PASSWORD; {km} bootstrap "
                f"--bootstrap-username admin --bootstrap-project-name admin --bootstrap-role-name admin "
                f"--bootstrap-service-name keystone --bootstrap-region-id {shlex.quote(s.region)} "
                + " ".join(f"--bootstrap-{i}-url {self.keystone_url}" for i in ("admin", "internal", "public"))),
                stdin=pulumi.Output.secret(args.admin_password)))
        # HTTPS on the node too behind HAProxy, which verifies it with the CA.
        local_url = f"{s.scheme}://{spec.address}:{s.keystone.port}/v3/"
        if supervised:
            install = (f"[ -x {s.virtualenv}/bin/keystone-manage ] || {{ python3 -m venv {s.virtualenv} && "
                       f"{s.virtualenv}/bin/pip install -q {KEYSTONE_PIP}; }}")
            # One thread per worker: Keystone's policy enforcer loads its rules lazily
            # and a concurrent first request in a fresh worker can be denied (403).
            # gthread still keeps HTTP/1.1 connections alive for pooled clients.
            start = (f"PYTHONWARNINGS=ignore {s.virtualenv}/bin/gunicorn --daemon --chdir {shlex.quote(conf_dir)} "
                     f"--bind {spec.address}:{s.keystone.port} --worker-class gthread --workers 4 --threads 1 "
                     f"--keep-alive 30 --pid {{pidfile}} --access-logfile {shlex.quote(log_dir)}/access.log "
                     f"--error-logfile {shlex.quote(log_dir)}/gunicorn.log "
                     f"{wsgi_module(unit_def)}:application")
            # Its cache first, on a controller (where the region's memcached runs):
            # started later (with the region's services), it would be marked dead by
            # Keystone's first requests and not tried again for minutes.
            cache = [supervised_memcached(spec)] if "controller" in spec.roles else []
            unit = NodeUnit("keystone", files=[f.path for f in files], start=start, ready_url=local_url,
                            needs=[u.name for u in cache])
            units = [*cache, unit]
        else:
            install = None  # NodeSoftware installed it
            at = node_placeholders(s, spec)
            files.append(NodeFile(unit_path(unit_def), unit_file(registry.KEYSTONE, unit_def, at), mode="0644"))
            unit = NodeUnit("keystone", files=[f.path for f in files],
                            ready_command=ready_command(registry.KEYSTONE, unit_def, at, local_url),
                            triggers=[args.tls.trigger(spec.name)] if args.tls else [])
            after = after + (args.tls.ready(spec.name) if args.tls else [])
            units = [unit]
        return Node(f"{name}-{spec.name}", NodeArgs(
            spec=spec, private_key=args.ssh_private_key, root=root, service_manager=s.service_manager,
            install=install, files=files, steps=steps, units=units, depends_on=after),
            pulumi.ResourceOptions(parent=self))

    # --- Keystone on every controller, behind HAProxy (seed 003) ----------------------
    def _ha_keystone_nodes(self, name: str, args: AdminRegionArgs) -> list[Node]:
        """One Keystone per controller on the Galera database, all with the same fernet
        and credential keys, so any node validates any node's token. The Keystone node
        (`keystone.node`) creates the schema and bootstraps; the others start after it."""
        s = args.settings
        fernet = KeyRepository(f"{name}-fernet-keys", opts=pulumi.ResourceOptions(parent=self))
        credential = KeyRepository(f"{name}-credential-keys", opts=pulumi.ResourceOptions(parent=self))
        connection = pulumi.Output.secret(args.database_password).apply(
            lambda pw: database_url("keystone", "keystone", pw, database_host(s), CA_FILE if s.tls else ""))
        head = s.node(s.keystone.node)
        ordered = [head] + [c for c in s.controllers if c.name != head.name]
        owner = self._owner(s)
        key_files = [NodeFile(f"/etc/keystone/{repo}/{i}", keys.keys.apply(lambda k, i=i: k[i]), mode="0600",
                              owner=owner, group=owner)
                     for repo, keys in (("fernet-keys", fernet), ("credential-keys", credential)) for i in (0, 1)]
        nodes: list[Node] = []
        for spec in ordered:
            after = list(args.depends_on) + (nodes[0].ready if nodes else [])
            nodes.append(self._keystone_on(name, args, spec, connection, key_files, bootstrap=not nodes, after=after))
        return nodes

    # --- shared identity records -----------------------------------------------------
    def _declared_domains(self, name: str, s: Settings, opts: pulumi.ResourceOptions) -> dict:
        created = {}
        for d in s.domains:
            domain = identity.Domain(f"{name}-domain-{d.name}", auth=self.auth, domain_name=d.name,
                                     description=d.description, opts=opts)
            projects = {
                p.name: identity.Project(f"{name}-domain-{d.name}-project-{p.name}", auth=self.auth,
                                         project_name=p.name, domain_id=domain.id, description=p.description,
                                         opts=opts)
                for p in d.projects
            }
            created[d.name] = (domain, projects)
        return created

    def _shared_service_users(self, name: str, args: AdminRegionArgs, opts: pulumi.ResourceOptions) -> dict:
        passwords = pulumi.Output.secret(args.service_passwords)
        users = {}
        for entry in registry.SERVICES:
            if not entry.user:
                continue
            user = identity.User(f"{name}-user-{entry.user}", auth=self.auth, user_name=entry.user,
                                 domain_id="default", password=passwords.apply(lambda p, e=entry.name: p[e]),
                                 opts=opts)
            for role in entry.user_roles:
                identity.RoleAssignment(f"{name}-user-{entry.user}-{role}", auth=self.auth, user_id=user.id,
                                        project_id=self.service_project.id, role_name=role,
                                        opts=pulumi.ResourceOptions(parent=self))
            users[entry.user] = user
        return users
