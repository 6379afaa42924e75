"""The admin region: the ONE shared Keystone, and the records every region shares.

It installs and runs Keystone on its node over SSH, then owns the global service
records, the `service` project, the declared domains and projects, and (with
`serviceUsers: shared`) the single set of service users. Service-region stacks
read its outputs through a StackReference and never own any of these records.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi

from components import identity
from components.ha_cluster import database_host
from components.key_repository import KeyRepository
from components.node import Node, NodeArgs, NodeFile, NodeStep, NodeUnit, on_node
from components.settings import SERVICE_CATALOG, SERVICE_USER, Settings
from components.templates import render

KEYSTONE_PIP = "keystone==30.0.0 gunicorn==27.0.1"
SERVICE_DESCRIPTIONS = {
    "identity": "OpenStack Identity", "image": "OpenStack Image", "network": "OpenStack Networking",
    "compute": "OpenStack Compute", "placement": "Placement API",
    "volumev3": "OpenStack Block Storage", "volumev2": "OpenStack Block Storage (v2, legacy)",
}


@dataclass
class AdminRegionArgs:
    settings: Settings
    admin_password: pulumi.Input[str]
    service_password: Optional[pulumi.Input[str]]  # with ha also Keystone's database password
    ssh_private_key: pulumi.Input[str]
    depends_on: Sequence[pulumi.Resource] = ()  # with ha: the region's HaCluster (Galera, HAProxy)


def shared_service_types(settings: Settings) -> list[str]:
    """Service records the admin region registers: the standard set, plus the legacy
    volumev2 only when this stack asks for it."""
    types = [t for t in SERVICE_CATALOG if t != "volumev2"]
    if "volumev2" in settings.services:
        types.append("volumev2")
    return ["identity", *types]


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
        self.keystone_url = f"http://{front}:{s.keystone.port}/v3/"
        if s.ha:
            self.keystone_nodes = self._ha_keystone_nodes(name, args)
        else:
            self.keystone_nodes = [self._keystone_node(name, args)]
        # What the rest of the stack waits for: Keystone answers on every node.
        self.keystone_ready = [r for node in self.keystone_nodes for r in node.ready]
        self.auth = pulumi.Output.secret({
            "authUrl": self.keystone_url, "username": "admin", "password": args.admin_password,
            "projectName": "admin", "userDomainName": "Default", "projectDomainName": "Default",
        })
        after = pulumi.ResourceOptions(parent=self, depends_on=self.keystone_ready)

        self.services = {
            t: identity.Service(f"{name}-service-{t}", auth=self.auth, type=t,
                                service_name="keystone" if t == "identity" else SERVICE_CATALOG[t][0],
                                description=SERVICE_DESCRIPTIONS[t], opts=after)
            for t in shared_service_types(s)
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
        """Keystone on its one node, with SQLite and keys made on the node."""
        s = args.settings
        spec = s.node(s.keystone.node)
        db = on_node(s.node_root_for(spec.name), "/var/lib/keystone/keystone.db")
        return self._keystone_on(name, args, spec, f"sqlite:///{db}", key_files=None, bootstrap=True,
                                 after=list(args.depends_on))

    def _keystone_on(self, name: str, args: AdminRegionArgs, spec, connection: pulumi.Input[str],
                     key_files: Optional[list[NodeFile]], bootstrap: bool, after: list) -> Node:
        """Keystone on `spec`: installed, configured, started, answering on the node's own
        address. `key_files`: the shared key repositories (None: made on the node);
        `bootstrap`: this node creates the schema and the admin and catalog records."""
        s = args.settings
        root = s.node_root_for(spec.name)
        conf_dir, log_dir = on_node(root, "/etc/keystone"), on_node(root, "/var/log/keystone")
        supervised = s.service_manager == "none"
        manage = f"{s.virtualenv}/bin/keystone-manage" if supervised else "keystone-manage"
        owner = self._owner(s)
        local_url = f"http://{spec.address}:{s.keystone.port}/v3/"
        conf = pulumi.Output.from_input(connection).apply(lambda c: render(
            "keystone/keystone.conf.j2", keystone_region=s.region, keystone_log_dir=log_dir,
            keystone_database_connection=c, keystone_config_dir=conf_dir,
            keystone_cache_enabled=False, keystone_memcached_servers=""))
        files = [NodeFile("/etc/keystone/keystone.conf", conf, group=owner), *(key_files or [])]
        km = f"PYTHONWARNINGS=ignore {manage} --config-file {shlex.quote(conf_dir + '/keystone.conf')}"
        prepare = f"mkdir -p {shlex.quote(log_dir)} {shlex.quote(on_node(root, '/var/lib/keystone'))}"
        make_keys = "" if key_files is not None else (
            f"; {km} fernet_setup --keystone-user {owner} --keystone-group {owner}; "
            f"{km} credential_setup --keystone-user {owner} --keystone-group {owner}")
        steps = [NodeStep("keystone-db", f"set -e; {prepare}; {km} db_sync{make_keys}")] if bootstrap else \
            [NodeStep("keystone-dirs", f"set -e; {prepare}")]
        if bootstrap:
            # The password reaches keystone-manage through stdin and its environment,
            # never its command line.
            steps.append(NodeStep("keystone-bootstrap", (
                f"set -e; IFS= read -r OS_BOOTSTRAP_PASSWORD || [ -n \"$OS_BOOTSTRAP_PASSWORD\" ]; export OS_BOOTSTRAP_PASSWORD; {km} bootstrap "
                f"--bootstrap-username admin --bootstrap-project-name admin --bootstrap-role-name admin "
                f"--bootstrap-service-name keystone --bootstrap-region-id {shlex.quote(s.region)} "
                + " ".join(f"--bootstrap-{i}-url {self.keystone_url}" for i in ("admin", "internal", "public"))),
                stdin=pulumi.Output.secret(args.admin_password)))
        if supervised:
            files.append(NodeFile("/etc/keystone/keystone_wsgi.py", render(
                "keystone/keystone-wsgi.py.j2", keystone_config_dir=conf_dir), mode="0644", group=owner))
            install = (f"[ -x {s.virtualenv}/bin/keystone-manage ] || {{ python3 -m venv {s.virtualenv} && "
                       f"{s.virtualenv}/bin/pip install -q {KEYSTONE_PIP}; }}")
            # One thread per worker: Keystone's policy enforcer loads its rules lazily
            # and a concurrent first request in a fresh worker can be denied (403).
            # gthread still keeps HTTP/1.1 connections alive for pooled clients.
            start = (f"PYTHONWARNINGS=ignore {s.virtualenv}/bin/gunicorn --daemon --chdir {shlex.quote(conf_dir)} "
                     f"--bind {spec.address}:{s.keystone.port} --worker-class gthread --workers 4 --threads 1 "
                     f"--keep-alive 30 --pid {{pidfile}} --access-logfile {shlex.quote(log_dir)}/access.log "
                     f"--error-logfile {shlex.quote(log_dir)}/gunicorn.log keystone_wsgi:application")
            unit = NodeUnit("keystone", files=[f.path for f in files], start=start, ready_url=local_url)
        else:
            # Debian and Ubuntu package Keystone as a site of Apache's mod_wsgi.
            install = ("export DEBIAN_FRONTEND=noninteractive; dpkg -s keystone >/dev/null 2>&1 || "
                       "{ apt-get update -q && apt-get install -y -q keystone apache2 libapache2-mod-wsgi-py3; }")
            unit = NodeUnit("apache2", files=[f.path for f in files], ready_url=local_url)
        return Node(f"{name}-{spec.name}", NodeArgs(
            spec=spec, private_key=args.ssh_private_key, root=root, service_manager=s.service_manager,
            install=install, files=files, steps=steps, units=[unit], depends_on=after),
            pulumi.ResourceOptions(parent=self))

    # --- Keystone on every controller, behind HAProxy (seed 003) ----------------------
    def _ha_keystone_nodes(self, name: str, args: AdminRegionArgs) -> list[Node]:
        """One Keystone per controller on the Galera database, all with the same fernet
        and credential keys, so any node validates any node's token. The Keystone node
        (`keystone.node`) creates the schema and bootstraps; the others start after it."""
        s = args.settings
        fernet = KeyRepository(f"{name}-fernet-keys", opts=pulumi.ResourceOptions(parent=self))
        credential = KeyRepository(f"{name}-credential-keys", opts=pulumi.ResourceOptions(parent=self))
        connection = pulumi.Output.secret(args.service_password).apply(
            lambda pw: f"mysql+pymysql://keystone:{pw}@{database_host(s)}/keystone")
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
        users = {}
        for user_name in sorted(set(SERVICE_USER.values())):
            user = identity.User(f"{name}-user-{user_name}", auth=self.auth, user_name=user_name,
                                 domain_id="default", password=args.service_password, opts=opts)
            identity.RoleAssignment(f"{name}-user-{user_name}-admin", auth=self.auth, user_id=user.id,
                                    project_id=self.service_project.id, role_name="admin",
                                    opts=pulumi.ResourceOptions(parent=self))
            users[user_name] = user
        return users
