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

from typing import TYPE_CHECKING

from components.registry.model import ServiceDefinition, Unit
from components.templates import render

if TYPE_CHECKING:
    from components.settings import NodeSpec, Settings

READY_TOOL = "/usr/local/lib/openstack-multiregion/ready.py"
UNIT_DIR = "/etc/systemd/system"
KEEP_ALIVE = 75  # seconds gunicorn keeps an idle client connection open (nginx's default)


@dataclass(frozen=True)
class Placeholders:
    """The values of a command's {placeholders} on one node (registry/model.py)."""

    venv: str
    address: str
    host: str
    controller: str
    ovs_datapath: str = "system"
    config: str = ""
    # TLS: the CA file the readiness checks verify with; the certificate gunicorn serves
    # (none behind HAProxy, which ends TLS), and the proxies whose X-Forwarded-Proto
    # it trusts there.
    ca_file: str = ""
    server_pem: str = ""
    proxies: str = ""
    # The node's own certificate and key (one PEM): what it presents as a TLS client
    # (OVN's databases ask every client for one); "" with plainHttp.
    node_pem: str = ""
    compute_stop_timeout: int = 0  # nova-compute's TimeoutStopSec (from compute.shutdownTimeout)
    service: Mapping[str, str] = field(default_factory=dict)  # a service's own, e.g. nova's cell URL templates

    def fill(self, command: str, **extra: str) -> str:
        values = {"venv": self.venv, "address": self.address, "host": self.host, "controller": self.controller,
                  "scheme": "https" if self.ca_file else "http", "node_pem": self.node_pem,
                  "ovn_proto": "ssl" if self.node_pem else "tcp", "ca_file": self.ca_file,
                  "ovs_datapath": self.ovs_datapath, "config": self.config,
                  "compute_stop_timeout": self.compute_stop_timeout, **self.service, **extra}
        return command.format(**values)


def node_placeholders(s: "Settings", spec: "NodeSpec", **service: str) -> Placeholders:
    """The placeholders of a node of this stack, with its TLS: gunicorn serves HTTPS
    itself, or behind HAProxy (ha) trusts the controllers' X-Forwarded-Proto."""
    from components.tls_paths import CA_FILE, SERVER_PEM
    tls = s.tls and "controller" in spec.roles
    proxies = ",".join([c.address for c in s.controllers] + [s.ha.vip]) if s.ha else ""
    return Placeholders(s.virtualenv, spec.address, spec.name, s.controllers[0].address, s.network.datapath,
                        service=service, ca_file=CA_FILE if s.tls else "",
                        server_pem=SERVER_PEM if tls else "", proxies=proxies if tls else "",
                        node_pem=SERVER_PEM if s.tls else "",
                        compute_stop_timeout=s.compute.stop_timeout)


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
    tls = (f"--certfile {at.server_pem} --keyfile {at.server_pem} " if at.server_pem else "") + (
        f"--forwarded-allow-ips {at.proxies} " if at.proxies else "")
    # Idle keep-alive connections are closed after 75 s, not gunicorn's 2: neutron sends
    # nova its port events in batches 2 s apart on one pooled connection, and a request
    # sent as gunicorn closed that connection failed ("EOF occurred in violation of
    # protocol"); the lost network-vif-plugged failed the guest's boot 300 s later
    # (measured in a CI run).
    return (f"{at.venv}/bin/gunicorn --no-control-socket --name {unit.name} "
            f"--bind {at.address}:{unit.wsgi.port} --workers 1 --worker-class gthread "
            f"--threads {unit.wsgi.threads} --timeout 120 --graceful-timeout 10 --keep-alive {KEEP_ALIVE} {tls}"
            f"--chdir {unit.wsgi.config_dir} {wsgi_module(unit)}:application")


def unit_file(entry: ServiceDefinition, unit: Unit, at: Placeholders) -> str:
    return render("systemd/service.j2", description=unit.description or f"OpenStack {unit.name}",
                  user=unit.user or entry.name, group=unit.group or unit.user or entry.name, umask=unit.umask,
                  exec_start=exec_start(unit, at), stop_timeout=at.fill(unit.stop_timeout),
                  environment=[(name, at.fill(value)) for name, value in unit.environment],
                  after=[*unit.after, *(f"{n}.service" for n in unit.needs), "mariadb.service", "rabbitmq-server.service", "memcached.service"])


def ready_command(entry: ServiceDefinition, unit: Unit, at: Placeholders, keystone_url: str = "") -> str:
    """A shell command that exits 0 once `unit` really works (and says why not)."""
    ready = unit.ready
    args = [f"{at.venv}/bin/python", READY_TOOL, unit.name, ready.kind]
    credentials = ready.credentials or (unit.reads[0] if unit.reads else "")
    if ready.kind in ("api", "compute-service", "volume-service", "network-agent"):
        args += ["--config", credentials, "--service-type", ready.service_type]
    if ready.kind == "api":  # on the node itself, also behind a VIP
        args += ["--address", at.address]
    if ready.path and ready.kind != "url":
        args += ["--path", ready.path]
    if ready.binary:
        args += ["--binary", ready.binary, "--host", at.host]
    if ready.kind in ("token", "url"):
        args += ["--url", keystone_url or at.fill(ready.path)]
    if at.ca_file and ready.kind in ("token", "url"):
        args += ["--cafile", at.ca_file]
    return " ".join(shlex.quote(a) for a in args)


def restart_command(unit: Unit) -> str:
    name = shlex.quote(unit.name)
    return f"systemctl daemon-reload && systemctl enable -q {name} && systemctl restart {name}"
