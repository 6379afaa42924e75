"""The software of a stack's real nodes (`serviceManager: systemd`), installed once
per node before anything configures it: Debian packages for the infrastructure
(MariaDB, RabbitMQ, memcached, Open vSwitch/OVN, ...) and one Python virtualenv
with the OpenStack release's services from PyPI, the way OpenStack-Ansible
installs them, pinned by install/constraints.txt; plus each service's system user.

What a node gets follows from its roles and the stack's services (the registry),
the Keystone node, and `ha`. The install runs again only when that list or the
pinned release changes; a second `pulumi up` runs nothing.
"""
from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import pulumi

from components import registry
from components.registry.roles import ROLES_BY_NAME
from components.node import Node, NodeArgs, NodeFile, NodeStep
from components.settings import NodeSpec, Settings
from components.systemd_units import READY_TOOL
from components.templates import TEMPLATE_DIR
from components.tls_paths import TLS_GROUP

CONSTRAINTS_FILE = Path(__file__).resolve().parent.parent / "install" / "constraints.txt"
# The pinned release, as a version stamp: what a schema migration follows.
RELEASE = hashlib.sha256(CONSTRAINTS_FILE.read_bytes()).hexdigest()[:16]
CONSTRAINTS_ON_NODE = "/etc/openstack-multiregion/constraints.txt"
BASE_APT = ("python3-venv", "ca-certificates")
HA_APT = ("galera-4", "rsync", "haproxy", "keepalived", "psmisc")  # psmisc: keepalived's check (killall)
# With TLS, Galera's rsync state transfer is encrypted through stunnel (it reads the
# server's certificate from [mysqld]) and refuses to run without it.
HA_TLS_APT = ("stunnel4",)
# The WSGI server and the clients every service's configuration names.
# python-binary-memcached: the SASL memcached client of keystonemiddleware and oslo.cache.
RUNTIME_PIP = ("gunicorn", "PyMySQL", "python-memcached", "pymemcache", "python-binary-memcached")


@dataclass
class NodeSoftwareArgs:
    settings: Settings
    ssh_private_key: pulumi.Input[str]
    depends_on: Sequence[pulumi.Resource] = ()


def node_services(settings: Settings, spec: NodeSpec) -> list[registry.ServiceDefinition]:
    """The registry entries that run on this node (Keystone on the Keystone node)."""
    entries = [e for e in registry.selected(settings.services) if e.runs_on(settings.registry_roles(spec))]
    if settings.runs_keystone(spec):
        entries.insert(0, registry.KEYSTONE)
    return entries


def apt_packages(settings: Settings, spec: NodeSpec) -> list[str]:
    packages = list(BASE_APT)
    for role in spec.roles:
        packages += ROLES_BY_NAME[role].apt
    if "controller" in spec.roles and settings.ha:  # the HA cluster runs on the controllers
        packages += HA_APT + (HA_TLS_APT if settings.tls else ())
    for entry in node_services(settings, spec):
        packages += entry.packages("apt", settings.registry_roles(spec))
    return list(dict.fromkeys(packages))


def pip_packages(settings: Settings, spec: NodeSpec) -> list[str]:
    packages = list(RUNTIME_PIP)
    for entry in node_services(settings, spec):
        roles = ("controller",) if entry is registry.KEYSTONE else settings.registry_roles(spec)
        packages += entry.packages("pip", roles)
    return list(dict.fromkeys(packages))


def system_users(settings: Settings, spec: NodeSpec) -> list[str]:
    return [e.name for e in node_services(settings, spec)]


def apt_command(packages: list[str]) -> str:
    """Installs what is missing; a node that has everything makes no network request."""
    listed = " ".join(shlex.quote(p) for p in packages)
    return ("set -e; export DEBIAN_FRONTEND=noninteractive; missing=; "
            f"for p in {listed}; do dpkg-query -W -f='${{Status}}' \"$p\" 2>/dev/null | grep -q 'ok installed' "
            "|| missing=\"$missing $p\"; done; "
            "if [ -n \"$missing\" ]; then apt-get update -q >/dev/null && "
            "apt-get install -y -q --no-install-recommends $missing >/dev/null; fi")


def venv_command(venv: str, packages: list[str], users: list[str]) -> str:
    """System users, then the virtualenv from the pinned release (on stdin). A user's
    home is made once: a service's own setup may open it further (nova's, for QEMU)."""
    q = shlex.quote
    create_users = "".join(
        f"getent group {u} >/dev/null || groupadd --system {u}; "
        f"getent passwd {u} >/dev/null || useradd --system -g {u} -d /var/lib/{u} -s /usr/sbin/nologin {u}; "
        f"[ -d /var/lib/{u} ] || install -d -o {u} -g {u} -m 0750 /var/lib/{u}; "
        for u in users)
    return (f"set -e; {create_users}"
            f"mkdir -p {q(str(Path(CONSTRAINTS_ON_NODE).parent))}; cat > {q(CONSTRAINTS_ON_NODE)}; "
            f"[ -x {q(venv)}/bin/python ] || python3 -m venv {q(venv)}; "
            f"{q(venv)}/bin/pip install -q --disable-pip-version-check -c {q(CONSTRAINTS_ON_NODE)} "
            + " ".join(q(p) for p in packages))


# Daemons of the distribution that read a controller's certificate.
TLS_READERS = ("mysql", "rabbitmq", "haproxy", "www-data")


def tls_group_command(users: list[str]) -> str:
    """The group that may read server.pem, with every service user and daemon of the
    node that serves TLS (those not on this node are skipped)."""
    members = " ".join(shlex.quote(u) for u in dict.fromkeys([*users, *TLS_READERS]))
    return (f"set -e; getent group {TLS_GROUP} >/dev/null || groupadd --system {TLS_GROUP}; "
            f"for u in {members}; do if id -u \"$u\" >/dev/null 2>&1; then usermod -a -G {TLS_GROUP} \"$u\"; fi; done")


class NodeSoftware(pulumi.ComponentResource):
    """One Node per machine of the stack, each with its install steps."""

    nodes: dict[str, Node]

    def __init__(self, name: str, args: NodeSoftwareArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("openstack-multiregion:node:NodeSoftware", name, None, opts)
        s = args.settings
        constraints = CONSTRAINTS_FILE.read_text()
        # The readiness check every unit of the node is started with.
        ready_tool = NodeFile(READY_TOOL, (TEMPLATE_DIR / "tools" / "ready.py").read_text(), mode="0755")
        self.nodes = {}
        for spec in s.nodes:
            steps = [
                NodeStep("packages", apt_command(apt_packages(s, spec))),
                # Runs again when the package list or the pinned release (its stdin) changes.
                NodeStep("virtualenv", venv_command(s.virtualenv, pip_packages(s, spec), system_users(s, spec)),
                         stdin=constraints),
            ]
            if s.tls:
                steps.append(NodeStep("tls-group", tls_group_command(system_users(s, spec))))
            self.nodes[spec.name] = Node(f"{name}-{spec.name}", NodeArgs(
                spec=spec, private_key=args.ssh_private_key, root="/", service_manager=s.service_manager,
                files=[ready_tool], steps=steps, depends_on=list(args.depends_on)),
                pulumi.ResourceOptions(parent=self))
        self.register_outputs({"nodes": list(self.nodes)})

    def ready(self, node: str) -> list[pulumi.Resource]:
        return self.nodes[node].ready if node in self.nodes else []

    @property
    def all_ready(self) -> list[pulumi.Resource]:
        return [r for n in self.nodes.values() for r in n.ready]
