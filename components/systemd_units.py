"""How a registry Unit becomes a systemd unit on a real node, and how the program
tells it is ready. Pure Python (no Pulumi).

Every OpenStack process runs from the node's virtualenv as its service's system
user; WSGI APIs under gunicorn (one worker, threads), from an entry module in the
service's config directory. Readiness is templates/tools/ready.py on the node,
run with the virtualenv's Python and the service's own credentials.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Mapping

from components.registry.model import ServiceDefinition, Unit
from components.templates import render

READY_TOOL = "/usr/local/lib/openstack-multiregion/ready.py"
UNIT_DIR = "/etc/systemd/system"


@dataclass(frozen=True)
class Placeholders:
    """The values of a command's {placeholders} on one node (registry/model.py)."""

    venv: str
    address: str
    host: str
    controller: str
    ovs_datapath: str = "system"
    config: str = ""
    service: Mapping[str, str] = field(default_factory=dict)  # a service's own, e.g. nova's cell URL templates

    def fill(self, command: str, **extra: str) -> str:
        values = {"venv": self.venv, "address": self.address, "host": self.host, "controller": self.controller,
                  "ovs_datapath": self.ovs_datapath, "config": self.config, **self.service, **extra}
        return command.format(**values)


def unit_path(unit: Unit) -> str:
    return f"{UNIT_DIR}/{unit.name}.service"


def wsgi_entry_path(entry: ServiceDefinition, unit: Unit) -> str:
    return f"{unit.wsgi.config_dir}/{wsgi_module(unit)}.py"


def wsgi_module(unit: Unit) -> str:
    return f"{unit.name.replace('-', '_')}_wsgi"


def exec_start(unit: Unit, at: Placeholders) -> str:
    if unit.wsgi is None:
        return at.fill(unit.command)
    # One worker with threads: APIs start their own background work per process.
    return (f"{at.venv}/bin/gunicorn --no-control-socket --name {unit.name} "
            f"--bind {at.address}:{unit.wsgi.port} --workers 1 --worker-class gthread "
            f"--threads {unit.wsgi.threads} --timeout 120 --graceful-timeout 10 "
            f"--chdir {unit.wsgi.config_dir} {wsgi_module(unit)}:application")


def unit_file(entry: ServiceDefinition, unit: Unit, at: Placeholders) -> str:
    return render("systemd/service.j2", description=unit.description or f"OpenStack {unit.name}",
                  user=entry.name, exec_start=exec_start(unit, at), environment=list(unit.environment),
                  after=[*unit.after, "mariadb.service", "rabbitmq-server.service", "memcached.service"])


def ready_command(entry: ServiceDefinition, unit: Unit, at: Placeholders, keystone_url: str = "") -> str:
    """A shell command that exits 0 once `unit` really works (and says why not)."""
    ready = unit.ready
    args = [f"{at.venv}/bin/python", READY_TOOL, unit.name, ready.kind]
    credentials = ready.credentials or (unit.reads[0] if unit.reads else "")
    if ready.kind in ("api", "compute-service", "volume-service", "network-agent"):
        args += ["--config", credentials, "--service-type", ready.service_type]
    if ready.path:
        args += ["--path", ready.path]
    if ready.binary:
        args += ["--binary", ready.binary, "--host", at.host]
    if ready.kind == "token":
        args += ["--url", keystone_url]
    return " ".join(shlex.quote(a) for a in args)


def restart_command(unit: Unit) -> str:
    name = shlex.quote(unit.name)
    return f"systemctl daemon-reload && systemctl enable -q {name} && systemctl restart {name}"
