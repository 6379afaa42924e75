"""The admin region: the ONE shared Keystone, and the records every region shares.

It installs and runs Keystone on its node over SSH, then owns the global service
records, the `service` project, the declared domains and projects, and (with
`serviceUsers: shared`) the single set of service users. Service-region stacks
read its outputs through a StackReference and never own any of these records.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Optional

import pulumi

from components import identity
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
    service_password: Optional[pulumi.Input[str]]
    ssh_private_key: pulumi.Input[str]


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
        self.local_url = f"http://{host.address}:{s.keystone.port}/v3/"
        self.keystone_node = self._keystone_node(name, args)
        self.auth = pulumi.Output.secret({
            "authUrl": self.keystone_url, "username": "admin", "password": args.admin_password,
            "projectName": "admin", "userDomainName": "Default", "projectDomainName": "Default",
        })
        after = pulumi.ResourceOptions(parent=self, depends_on=self.keystone_node.ready)

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
    def _keystone_node(self, name: str, args: AdminRegionArgs) -> Node:
        s = args.settings
        spec = s.node(s.keystone.node)
        root = s.node_root_for(spec.name)
        conf_dir, log_dir = on_node(root, "/etc/keystone"), on_node(root, "/var/log/keystone")
        db = on_node(root, "/var/lib/keystone/keystone.db")
        supervised = s.service_manager == "none"
        manage = f"{s.virtualenv}/bin/keystone-manage" if supervised else "keystone-manage"
        owner = "root" if supervised else "keystone"
        conf = render("keystone/keystone.conf.j2", keystone_region=s.region, keystone_log_dir=log_dir,
                      keystone_database_connection=f"sqlite:///{db}", keystone_config_dir=conf_dir,
                      keystone_cache_enabled=False, keystone_memcached_servers="")
        files = [NodeFile("/etc/keystone/keystone.conf", conf, group=owner)]
        km = f"PYTHONWARNINGS=ignore {manage} --config-file {shlex.quote(conf_dir + '/keystone.conf')}"
        steps = [
            NodeStep("keystone-db", (
                f"set -e; mkdir -p {shlex.quote(log_dir)} $(dirname {shlex.quote(db)}); {km} db_sync; "
                f"{km} fernet_setup --keystone-user {owner} --keystone-group {owner}; "
                f"{km} credential_setup --keystone-user {owner} --keystone-group {owner}")),
            # The password reaches keystone-manage through stdin and its environment,
            # never its command line.
            NodeStep("keystone-bootstrap", (
                f"set -e; IFS= read -r OS_BOOTSTRAP_PASSWORD || [ -n \"$OS_BOOTSTRAP_PASSWORD\" ]; export OS_BOOTSTRAP_PASSWORD; {km} bootstrap "
                f"--bootstrap-username admin --bootstrap-project-name admin --bootstrap-role-name admin "
                f"--bootstrap-service-name keystone --bootstrap-region-id {shlex.quote(s.region)} "
                + " ".join(f"--bootstrap-{i}-url {self.keystone_url}" for i in ("admin", "internal", "public"))),
                stdin=pulumi.Output.secret(args.admin_password)),
        ]
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
            unit = NodeUnit("keystone", files=[f.path for f in files], start=start, ready_url=self.local_url)
        else:
            # Debian and Ubuntu package Keystone as a site of Apache's mod_wsgi.
            install = ("export DEBIAN_FRONTEND=noninteractive; dpkg -s keystone >/dev/null 2>&1 || "
                       "{ apt-get update -q && apt-get install -y -q keystone apache2 libapache2-mod-wsgi-py3; }")
            unit = NodeUnit("apache2", files=[f.path for f in files], ready_url=self.local_url)
        return Node(f"{name}-{spec.name}", NodeArgs(
            spec=spec, private_key=args.ssh_private_key, root=root, service_manager=s.service_manager,
            install=install, files=files, steps=steps, units=[unit]), pulumi.ResourceOptions(parent=self))

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
