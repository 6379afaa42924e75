"""The nodes of a service region: every service file rendered from its template,
pushed over SSH, and exactly the units that read a changed file restarted.

With `serviceManager: systemd` (real nodes) units are seed 000's systemd units.
With `serviceManager: none` (the sandbox) the services that run from a Python
environment, Placement and Glance, are started as supervised processes on the
controller; the other services' files are still rendered and pushed.

With `ha` the region's database is the HaCluster's Galera, reached through HAProxy
on the (DB) VIP, in the sandbox too; the cluster is ready before these nodes start.
"""
from __future__ import annotations

import shlex
from collections import defaultdict
from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi

from components import ha_configs as ha
from components import service_configs as sc
from components.ha_cluster import database_host
from components.node import Node, NodeArgs, NodeFile, NodeStep, NodeUnit, on_node
from components.service_region import service_user_name
from components.settings import SERVICE_USER, NodeSpec, Settings
from components.templates import render

# Python programs the sandbox can supervise: unit -> (config file, WSGI module, config dir
# variable, port, db sync command).
SUPERVISED = {
    "placement-api": (sc.PLACEMENT_CONF, "placement.wsgi.api", "OS_PLACEMENT_CONFIG_DIR", 8778,
                      "placement-manage --config-file {conf} db sync"),
    "glance-api": (sc.GLANCE_API_CONF, "glance.wsgi.api", "OS_GLANCE_CONFIG_DIR", 9292,
                   "glance-manage --config-file {conf} db_sync"),
}
SERVICE_OF_UNIT = {"placement-api": "placement", "glance-api": "image"}
FILE_GROUP = {"glance": "glance", "nova": "nova", "neutron": "neutron", "cinder": "cinder",
              "placement": "placement", "openstack-dashboard": "apache"}


@dataclass
class RegionNodesArgs:
    settings: Settings
    keystone_url: pulumi.Input[str]  # shared Keystone ".../v3/"
    admin_password: pulumi.Input[str]
    service_password: pulumi.Input[str]
    ssh_private_key: pulumi.Input[str]
    depends_on: Sequence[pulumi.Resource] = ()


def database_url(settings: Settings, service: str, password: str, root: str) -> str:
    if settings.service_manager == "none" and not settings.ha:
        return f"sqlite:///{on_node(root, f'/var/lib/{service}/{service}.sqlite')}"
    user = service.split("_")[0]  # nova_api and nova_cell0 belong to the nova user
    host = database_host(settings) if settings.ha else settings.service_address
    return f"mysql+pymysql://{user}:{password}@{host}/{service}"


def region_context(settings: Settings, root: str, keystone_url: str, admin_password: str,
                   service_password: str) -> sc.RegionContext:
    ctl = settings.service_address
    return sc.RegionContext(
        region=settings.region,
        keystone_url=keystone_url.rstrip("/").removesuffix("/v3"),
        controller_address=ctl,
        memcached_servers=",".join(settings.memcached_servers or [f"{c.address}:11211" for c in settings.controllers]
                                   or [f"{ctl}:11211"]),
        # Every RabbitMQ node of the region (all controllers), as seeds 001/002 list them.
        transport_url=ha.transport_url("openstack", service_password,
                                       [c.address for c in settings.controllers] or [ctl]),
        database_connections={s: database_url(settings, s, service_password, root)
                              for s in ("glance", "nova", "nova_api", "nova_cell0", "neutron", "cinder", "placement")},
        service_users={u: service_user_name(settings, t) for t, u in SERVICE_USER.items()},
        service_password=service_password,
        admin_password=admin_password,
        regions=(settings.region,),
        state_root="" if root == "/" else root,
    )


def _file_group(path: str) -> str:
    return FILE_GROUP.get(path.split("/")[2], "root") if path.startswith("/etc/") else "root"


class RegionNodes(pulumi.ComponentResource):
    def __init__(self, name: str, args: RegionNodesArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("openstack-multiregion:region:RegionNodes", name, None, opts)
        s = args.settings
        self.nodes: dict[str, Node] = {}
        previous: Optional[Node] = None
        for n in s.nodes:
            # With ha the controllers share one database: each one's schema migrations
            # (db sync) run after the previous controller's, never two at once.
            after = list(previous.steps.values()) if previous and s.ha and "controller" in n.roles else []
            self.nodes[n.name] = self._node(name, args, n, after)
            if "controller" in n.roles:
                previous = self.nodes[n.name]
        self.register_outputs({"nodes": list(self.nodes)})

    def _node(self, name: str, args: RegionNodesArgs, spec: NodeSpec, after: Sequence = ()) -> Node:
        s = args.settings
        root = s.node_root_for(spec.name)
        # Which files a node gets depends only on roles and services, not on secrets.
        shape = region_context(s, root, "http://keystone:5000", "x", "x")
        paths = sorted(sc.node_files(shape, spec.address, spec.roles, s.services))
        rendered = pulumi.Output.secret(pulumi.Output.all(args.keystone_url, args.admin_password,
                                                          args.service_password)).apply(
            lambda v: sc.node_files(region_context(s, root, v[0], v[1], v[2]), spec.address, spec.roles, s.services))
        files = [NodeFile(p, rendered.apply(lambda f, p=p: f[p]), mode="0600" if p.startswith("/root/") else "0640",
                          group=_file_group(p)) for p in paths]
        if s.service_manager == "none":
            extra_files, steps, units = self._supervised(s, spec, root, paths)
        else:
            extra_files, steps, units = [], [], self._systemd_units(spec, paths)
        return Node(f"{name}-{spec.name}", NodeArgs(
            spec=spec, private_key=args.ssh_private_key, root=root, service_manager=s.service_manager,
            files=files + extra_files, steps=steps, units=units, depends_on=list(args.depends_on) + list(after)),
            pulumi.ResourceOptions(parent=self))

    @staticmethod
    def _systemd_units(spec: NodeSpec, paths: list[str]) -> list[NodeUnit]:
        files_of_unit: dict[str, list[str]] = defaultdict(list)
        for path in paths:
            for unit in sc.units_for(path, spec.roles):
                files_of_unit[unit].append(path)
        return [NodeUnit(unit, files=tuple(files)) for unit, files in sorted(files_of_unit.items())]

    @staticmethod
    def _supervised(s: Settings, spec: NodeSpec, root: str, paths: list[str]):
        files, steps, units = [], [], []
        venv = s.virtualenv
        for unit, (conf, module, dir_var, port, sync) in SUPERVISED.items():
            if conf not in paths:
                continue
            conf_dir = conf.rsplit("/", 1)[0]
            wsgi = f"{conf_dir}/{unit.replace('-', '_')}_wsgi.py"
            files.append(NodeFile(wsgi, render("wsgi/wsgi-app.py.j2", wsgi_service=unit, wsgi_module=module,
                                               wsgi_config_dir_variable=dir_var,
                                               wsgi_config_dir=on_node(root, conf_dir)), mode="0644"))
            service = conf.split("/")[2]
            node_conf = shlex.quote(on_node(root, conf))
            prepare = f"mkdir -p {shlex.quote(on_node(root, f'/var/lib/{service}'))}"
            if unit == "glance-api":  # glance reads its stock paste pipeline beside its config
                prepare += (f" {shlex.quote(on_node(root, '/var/lib/glance/images'))}; "
                            f"cp {venv}/etc/glance/glance-api-paste.ini {shlex.quote(on_node(root, conf_dir))}/")
            steps.append(NodeStep(f"{service}-db-sync",
                                  f"set -e; {prepare}; PYTHONWARNINGS=ignore {venv}/bin/{sync.format(conf=node_conf)}"))
            log_dir = shlex.quote(on_node(root, f"/var/log/{service}"))
            start = (f"mkdir -p {log_dir}; PYTHONWARNINGS=ignore {venv}/bin/gunicorn --daemon "
                     f"--chdir {shlex.quote(on_node(root, conf_dir))} --bind {spec.address}:{port} "
                     f"--worker-class gthread --workers 2 --threads 1 --keep-alive 30 --pid {{pidfile}} "
                     f"--access-logfile {log_dir}/access.log --error-logfile {log_dir}/gunicorn.log "
                     f"{wsgi.rsplit('/', 1)[1].removesuffix('.py')}:application")
            units.append(NodeUnit(unit, files=(conf, wsgi), start=start, ready_url=f"http://{spec.address}:{port}/"))
        # memcached is the region's own token cache (memcached_servers on every controller).
        if "controller" in spec.roles:
                units.append(NodeUnit("memcached", files=(), start=(
                f"memcached -d -u root -l {spec.address} -p 11211 -m 64 -P {{pidfile}}")))
        return files, steps, units
