"""The nodes of a service region: every service file rendered from its template,
pushed over SSH, and exactly the units that read a changed file restarted.

With `serviceManager: systemd` (real nodes) units are seed 000's systemd units.
With `serviceManager: none` (the sandbox) the services that run from a Python
environment, Placement and Glance, are started as supervised processes on the
controller; the other services' files are still rendered and pushed.

With `ha`, the first controller bootstraps MariaDB Galera (and RabbitMQ on real
nodes) and creates the region's databases; each other controller joins after the
one before it. In the sandbox the Galera cluster and HAProxy run for real on the
controllers' loopback addresses and the services keep their data in Galera through
HAProxy on the VIP; keepalived's files are checked (`keepalived -t`) but it does
not run (VRRP needs a real network), and RabbitMQ is configured but not started.
"""
from __future__ import annotations

import shlex
from collections import defaultdict
from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi

from components import ha_configs as ha
from components import service_configs as sc
from components.node import (Node, NodeArgs, NodeFile, NodeStep, NodeUnit, content_hash, on_node,
                             supervised_pidfile, supervised_stop)
from components.service_region import service_user_name
from components.settings import SERVICE_USER, NodeSpec, Settings, ha_spec
from components.settings import secret as settings_secret
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
    # With HA, through HAProxy's Galera listener on the DB VIP (seed 002).
    host = (settings.ha.db_vip or settings.ha.vip) if settings.ha else settings.service_address
    return f"mysql+pymysql://{user}:{password}@{host}/{service}"


# Databases of each service type, and the MariaDB user that owns them.
SERVICE_DATABASES = {"image": ("glance",), "compute": ("nova", "nova_api", "nova_cell0"), "network": ("neutron",),
                     "volumev3": ("cinder",), "volumev2": ("cinder",), "placement": ("placement",)}
SANDBOX_MARIADB_CNF = "/etc/mysql/sandbox-node.cnf"


def _sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def database_sql(settings: Settings, password: str) -> str:
    """SQL (read from stdin, so the password is on no command line) that creates the
    region's databases and their users; running it again only resets the passwords."""
    lines = []
    names = sorted({db for t in settings.services for db in SERVICE_DATABASES.get(t, ())})
    for user in sorted({db.split("_")[0] for db in names}):
        lines.append(f"CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED BY {_sql_string(password)};")
        lines.append(f"ALTER USER '{user}'@'%' IDENTIFIED BY {_sql_string(password)};")
    for db in names:
        lines.append(f"CREATE DATABASE IF NOT EXISTS {db};")
        lines.append(f"GRANT ALL PRIVILEGES ON {db}.* TO '{db.split('_')[0]}'@'%';")
    return "\n".join(lines) + "\n"


def sandbox_galera_steps(s: Settings, spec: NodeSpec, root: str, sql: pulumi.Output,
                         haproxy_hash: pulumi.Output) -> list[NodeStep]:
    """The sandbox's real Galera node and HAProxy (no systemd): mariadbd from the node's
    galera.cnf, started with --wsrep-new-cluster on the first controller and plainly
    (state transfer from the cluster) on the others, then haproxy on the VIP. Every
    controller's haproxy binds the same VIP ports (SO_REUSEPORT), as keepalived would
    move one VIP between them; keepalived itself cannot run on loopback."""
    first = spec.name == s.controllers[0].name
    cnf = shlex.quote(on_node(root, SANDBOX_MARIADB_CNF))
    # mariadbd runs as `mysql` (rsync's state transfer daemon would drop root to `nobody`).
    dirs = " ".join(shlex.quote(on_node(root, d)) for d in (
        "/var/lib/mysql", "/var/lib/mysql-tmp", "/run/mysqld", "/var/log/mysql"))
    client = f"mariadb --defaults-file={cnf}"
    init = (f"[ -d {shlex.quote(on_node(root, '/var/lib/mysql/mysql'))} ] || "
            f"mariadb-install-db --defaults-file={cnf} --user=mysql >/dev/null; ") if first else ""
    pidfile = shlex.quote(on_node(root, "/run/mysqld/mariadb.pid"))
    start = (f"set -e; mkdir -p {dirs}; chown mysql:mysql {dirs}; "
             f"if ! mariadb-admin --defaults-file={cnf} ping >/dev/null 2>&1; then {init}"
             f"setsid mariadbd --defaults-file={cnf}{' --wsrep-new-cluster' if first else ''} </dev/null "
             f">>{shlex.quote(on_node(root, '/var/log/mysql/stdout.log'))} 2>&1 & fi; "
             f"for i in $(seq 1 900); do st=$({client} -N -B -e \"SHOW STATUS LIKE 'wsrep_local_state_comment'\" "
             f"2>/dev/null | cut -f2); [ \"$st\" = Synced ] && break; sleep 0.2; done; "
             f"[ \"$st\" = Synced ] || {{ echo 'galera node {spec.name} not Synced within 180s' >&2; exit 1; }}")
    stop = (f"mariadb-admin --defaults-file={cnf} shutdown 2>/dev/null || true; "
            f"if [ -f {pidfile} ]; then kill -9 $(cat {pidfile}) 2>/dev/null || true; rm -f {pidfile}; fi")
    cfg = shlex.quote(on_node(root, ha.HAPROXY_CFG))
    pidfile = supervised_pidfile(root, "haproxy")
    steps = [NodeStep("cluster-bootstrap" if first else "cluster-join", start, delete=stop)]
    if first:
        steps.append(NodeStep("databases", f"set -e; {client} --batch", stdin=sql, triggers=[content_hash(sql)]))
    steps.append(NodeStep("haproxy", (
        f"set -e; {supervised_stop(root, 'haproxy')}; mkdir -p $(dirname {pidfile}); "
        f"/usr/sbin/haproxy -D -f {cfg} -p {pidfile}"), delete=supervised_stop(root, "haproxy"),
        triggers=[haproxy_hash]))
    return steps


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
        # With HA on real nodes the first controller bootstraps Galera and RabbitMQ;
        # the other controllers join only after it did (a resource dependency, no sleep).
        self.nodes: dict[str, Node] = {}
        first = s.controllers[0].name if s.controllers else None
        if first:
            self.nodes[first] = self._node(name, args, s.node(first))
        previous = first
        for n in s.nodes:
            if n.name == first:
                continue
            # A controller joins only after every step of the one before it: the first's
            # bootstrap, the region's databases and their schema exist before another
            # node uses them, and state transfers run one at a time.
            joins = list(self.nodes[previous].steps.values()) if s.ha and "controller" in n.roles else []
            self.nodes[n.name] = self._node(name, args, n, after=joins)
            if s.ha and "controller" in n.roles:
                previous = n.name
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
        ha_files, ha_steps = self._ha(s, spec, root) if s.ha and "controller" in spec.roles else ([], [])
        if s.service_manager == "none":
            extra_files, steps, units = self._supervised(s, spec, root, paths)
            if s.ha and "controller" in spec.roles:
                extra_files.append(NodeFile(SANDBOX_MARIADB_CNF, render(
                    "galera/sandbox-node.cnf.j2", galera_node_name=spec.name, galera_root=root.rstrip("/")),
                    mode="0644"))
        else:
            extra_files, steps, units = [], [], self._systemd_units(spec, paths + [f.path for f in ha_files])
        haproxy_hash = next((content_hash(f.content) for f in ha_files if f.path == ha.HAPROXY_CFG), None)
        cluster = self._cluster_steps(s, spec, root, args.service_password, haproxy_hash) \
            if s.ha and "controller" in spec.roles else []
        return Node(f"{name}-{spec.name}", NodeArgs(
            spec=spec, private_key=args.ssh_private_key, root=root, service_manager=s.service_manager,
            files=files + extra_files + ha_files, steps=ha_steps + cluster + steps,
            units=units, depends_on=list(args.depends_on) + list(after)), pulumi.ResourceOptions(parent=self))

    @staticmethod
    def _cluster_steps(s: Settings, spec: NodeSpec, root: str, service_password, haproxy_hash) -> list[NodeStep]:
        """Galera and RabbitMQ clustering (seeds 001/002): the first controller
        bootstraps, every other one joins it; the first also creates the region's
        databases and their users. Each command checks the live cluster first, so a
        rerun never bootstraps a second cluster."""
        first = s.controllers[0]
        sql = pulumi.Output.secret(service_password).apply(lambda pw: database_sql(s, pw))
        if s.service_manager == "none":
            return sandbox_galera_steps(s, spec, root, sql, haproxy_hash)
        databases = NodeStep("databases", "set -e; mysql --batch", stdin=sql, triggers=[content_hash(sql)])
        if spec.name == first.name:
            return [NodeStep("cluster-bootstrap", (
                "set -e; if ! mysql -N -e \"SHOW STATUS LIKE 'wsrep_cluster_size'\" 2>/dev/null | grep -q wsrep; "
                "then galera_new_cluster; fi; systemctl start rabbitmq-server")), databases]
        return [NodeStep("cluster-join", (
            "set -e; systemctl start mariadb; systemctl start rabbitmq-server; "
            f"if ! rabbitmqctl cluster_status 2>/dev/null | grep -q 'rabbit@{first.name}'; then "
            f"rabbitmqctl stop_app; rabbitmqctl join_cluster rabbit@{first.name}; rabbitmqctl start_app; fi"))]

    @staticmethod
    def _ha(s: Settings, spec: NodeSpec, root: str) -> tuple[list[NodeFile], list[NodeStep]]:
        """keepalived, haproxy, Galera and RabbitMQ files of one controller, and checks
        that refuse a file haproxy or keepalived would not load, before any restart."""
        controllers = tuple(ha.HaController(c.name, c.address) for c in s.controllers)
        me = next(c for c in controllers if c.name == spec.name)
        secrets = [settings_secret(k) for k in ("vrrpPassword", "haproxyStatsPassword", "erlangCookie")]
        rendered = pulumi.Output.secret(pulumi.Output.all(*secrets)).apply(lambda v: ha.ha_node_files(
            ha_spec(s.ha, s.region, controllers, s.services, s.hosts_keystone, v[0], v[1], v[2]), me))
        shape = ha.ha_node_files(ha_spec(s.ha, s.region, controllers, s.services, s.hosts_keystone,
                                         "x", "x" * 12, "x" * 20), me)
        files = {}
        for path in sorted(shape):
            owner, group, mode = ha.HA_FILE_MODES.get(path, ("root", "root", "0640"))
            files[path] = NodeFile(path, rendered.apply(lambda f, p=path: f[p]), mode=mode, group=group, owner=owner)
        checks = []
        for tool, flag, path in (("haproxy", "-c -f", ha.HAPROXY_CFG), ("keepalived", "-t -f", ha.KEEPALIVED_CONF)):
            target = shlex.quote(on_node(root, path))
            checks.append(NodeStep(f"check-{tool}", f"if command -v {tool} >/dev/null || [ -x /usr/sbin/{tool} ]; then "
                                                    f"PATH=$PATH:/usr/sbin {tool} {flag} {target}; fi",
                                   triggers=[content_hash(files[path].content)]))
        return list(files.values()), checks

    @staticmethod
    def _systemd_units(spec: NodeSpec, paths: list[str]) -> list[NodeUnit]:
        files_of_unit: dict[str, list[str]] = defaultdict(list)
        for path in paths:
            units = ha.HA_UNITS[path] if path in ha.HA_UNITS else sc.units_for(path, spec.roles)
            for unit in units:
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
