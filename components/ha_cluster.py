"""The HA control plane of a region's controllers (seeds 001/002), ready before any
OpenStack service (Keystone included) uses it.

Per controller: keepalived, HAProxy, Galera and RabbitMQ files, checked with
`haproxy -c` / `keepalived -t` before anything restarts. The first controller
bootstraps Galera (and RabbitMQ) and creates the region's databases; every other
controller joins only after the one before it is done, through resource
dependencies, so state transfers run one at a time.

MariaDB and RabbitMQ are started by those steps and are not restarted when their
files change: restarting every member of a cluster at once would take it down, so a
changed galera.cnf or rabbitmq.conf waits for the operator's rolling restart.

With `serviceManager: none` (the sandbox) Galera and HAProxy run for real on the
controllers' loopback addresses; keepalived does not run (VRRP needs a real
network) and RabbitMQ is configured but not started (nothing there uses it).
"""
from __future__ import annotations

import shlex
from collections import defaultdict
from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi

from components import ha_configs as ha
from components.node import Node, NodeArgs, NodeFile, NodeStep, NodeUnit, content_hash, on_node, supervised_stop
from components.settings import NodeSpec, Settings, ha_spec
from components.settings import secret as settings_secret
from components.templates import render

# Databases of each service type; the MariaDB user is the part before '_'.
SERVICE_DATABASES = {"image": ("glance",), "compute": ("nova", "nova_api", "nova_cell0"), "network": ("neutron",),
                     "volumev3": ("cinder",), "volumev2": ("cinder",), "placement": ("placement",)}
SANDBOX_MARIADB_CNF = "/etc/mysql/sandbox-node.cnf"
# Restarted when their files change; mariadb and rabbitmq-server are not (see above).
RESTARTED_ON_CHANGE = ("keepalived", "haproxy", "systemd-sysctl")


@dataclass
class HaClusterArgs:
    settings: Settings
    database_password: pulumi.Input[str]  # servicePassword: every database user's password
    ssh_private_key: pulumi.Input[str]
    depends_on: Sequence[pulumi.Resource] = ()


def _sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def database_names(settings: Settings) -> list[str]:
    names = {db for t in settings.services for db in SERVICE_DATABASES.get(t, ())}
    if settings.hosts_keystone:
        names.add("keystone")
    return sorted(names)


def database_sql(settings: Settings, password: str) -> str:
    """SQL (read from stdin, so the password is on no command line) that creates the
    region's databases and their users; running it again only resets the passwords."""
    names = database_names(settings)
    lines = []
    for user in sorted({db.split("_")[0] for db in names}):
        lines.append(f"CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED BY {_sql_string(password)};")
        lines.append(f"ALTER USER '{user}'@'%' IDENTIFIED BY {_sql_string(password)};")
    for db in names:
        lines.append(f"CREATE DATABASE IF NOT EXISTS {db};")
        lines.append(f"GRANT ALL PRIVILEGES ON {db}.* TO '{db.split('_')[0]}'@'%';")
    return "\n".join(lines) + "\n"


def database_host(settings: Settings) -> str:
    """Where services reach the region's database: HAProxy's Galera listener (seed 002)."""
    return settings.ha.db_vip or settings.ha.vip


class HaCluster(pulumi.ComponentResource):
    ready: list[pulumi.Resource]

    def __init__(self, name: str, args: HaClusterArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("openstack-multiregion:ha:HaCluster", name, None, opts)
        s = args.settings
        sql = pulumi.Output.secret(args.database_password).apply(lambda pw: database_sql(s, pw))
        self.nodes: dict[str, Node] = {}
        after: list[pulumi.Resource] = list(args.depends_on)
        for spec in s.controllers:
            node = self._controller(name, args, spec, sql, after)
            self.nodes[spec.name] = node
            after = node.ready  # the next controller joins after this one
        self.ready = after
        self.register_outputs({"controllers": list(self.nodes)})

    def _controller(self, name: str, args: HaClusterArgs, spec: NodeSpec, sql: pulumi.Output,
                    after: list[pulumi.Resource]) -> Node:
        s = args.settings
        root = s.node_root_for(spec.name)
        files, checks = ha_files_and_checks(s, spec, root)
        first = spec.name == s.controllers[0].name
        if s.service_manager == "none":
            files.append(NodeFile(SANDBOX_MARIADB_CNF, render(
                "galera/sandbox-node.cnf.j2", galera_node_name=spec.name, galera_root=root.rstrip("/")), mode="0644"))
            # Every controller's haproxy binds the same VIP ports (SO_REUSEPORT), standing
            # in for the VIP keepalived would move between them.
            haproxy = NodeUnit("haproxy", files=(ha.HAPROXY_CFG,), start=(
                f"/usr/sbin/haproxy -D -f {shlex.quote(on_node(root, ha.HAPROXY_CFG))} -p {{pidfile}}"))
            steps, units = sandbox_cluster_steps(spec, root, first, sql), [haproxy]
        else:
            steps, units = systemd_cluster_steps(s, first, sql), restarted_units(files)
        return Node(f"{name}-{spec.name}", NodeArgs(
            spec=spec, private_key=args.ssh_private_key, root=root, service_manager=s.service_manager,
            files=files, steps=checks + steps, units=units, depends_on=list(after)),
            pulumi.ResourceOptions(parent=self))


def ha_files_and_checks(s: Settings, spec: NodeSpec, root: str) -> tuple[list[NodeFile], list[NodeStep]]:
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


def restarted_units(files: list[NodeFile]) -> list[NodeUnit]:
    files_of_unit: dict[str, list[str]] = defaultdict(list)
    for f in files:
        for unit in ha.HA_UNITS.get(f.path, ()):
            if unit in RESTARTED_ON_CHANGE:
                files_of_unit[unit].append(f.path)
    return [NodeUnit(unit, files=tuple(paths)) for unit, paths in sorted(files_of_unit.items())]


def systemd_cluster_steps(s: Settings, first: bool, sql: pulumi.Output) -> list[NodeStep]:
    """Each command checks the live cluster first, so a rerun never bootstraps a
    second cluster nor joins twice."""
    head = s.controllers[0].name
    if first:
        return [NodeStep("cluster-bootstrap", (
            "set -e; if ! mysql -N -e \"SHOW STATUS LIKE 'wsrep_cluster_size'\" 2>/dev/null | grep -q wsrep; "
            "then galera_new_cluster; fi; systemctl start rabbitmq-server")),
            NodeStep("databases", "set -e; mysql --batch", stdin=sql, triggers=[content_hash(sql)])]
    return [NodeStep("cluster-join", (
        "set -e; systemctl start mariadb; systemctl start rabbitmq-server; "
        f"if ! rabbitmqctl cluster_status 2>/dev/null | grep -q 'rabbit@{head}'; then "
        f"rabbitmqctl stop_app; rabbitmqctl join_cluster rabbit@{head}; rabbitmqctl start_app; fi"))]


def sandbox_cluster_steps(spec: NodeSpec, root: str, first: bool, sql: pulumi.Output) -> list[NodeStep]:
    """The sandbox's real Galera node (no systemd): mariadbd from the node's galera.cnf,
    with --wsrep-new-cluster on the first controller and plainly (state transfer from
    the cluster) on the others."""
    cnf = shlex.quote(on_node(root, SANDBOX_MARIADB_CNF))
    # mariadbd runs as `mysql` (rsync's state transfer daemon would drop root to `nobody`).
    dirs = " ".join(shlex.quote(on_node(root, d)) for d in (
        "/var/lib/mysql", "/var/lib/mysql-tmp", "/run/mysqld", "/var/log/mysql"))
    client = f"mariadb --defaults-file={cnf}"
    init = (f"[ -d {shlex.quote(on_node(root, '/var/lib/mysql/mysql'))} ] || "
            f"mariadb-install-db --defaults-file={cnf} --user=mysql >/dev/null; ") if first else ""
    mariadb_pid = shlex.quote(on_node(root, "/run/mysqld/mariadb.pid"))
    start = (f"set -e; mkdir -p {dirs}; chown mysql:mysql {dirs}; "
             f"if ! mariadb-admin --defaults-file={cnf} ping >/dev/null 2>&1; then {init}"
             f"setsid mariadbd --defaults-file={cnf}{' --wsrep-new-cluster' if first else ''} </dev/null "
             f">>{shlex.quote(on_node(root, '/var/log/mysql/stdout.log'))} 2>&1 & fi; "
             f"for i in $(seq 1 900); do st=$({client} -N -B -e \"SHOW STATUS LIKE 'wsrep_local_state_comment'\" "
             f"2>/dev/null | cut -f2); [ \"$st\" = Synced ] && break; sleep 0.2; done; "
             f"[ \"$st\" = Synced ] || {{ echo 'galera node {spec.name} not Synced within 180s' >&2; exit 1; }}")
    # Destroy also removes the data the step created (as `kolla-ansible destroy` removes
    # its volumes): a later cluster on these nodes must not meet a stale Galera state.
    stop = (f"{supervised_stop(root, 'mariadb', pidfile=mariadb_pid)}; rm -rf "
            + " ".join(shlex.quote(on_node(root, d)) for d in ("/var/lib/mysql", "/var/lib/mysql-tmp")))
    steps = [NodeStep("cluster-bootstrap" if first else "cluster-join", start, delete=stop)]
    if first:
        steps.append(NodeStep("databases", f"set -e; {client} --batch", stdin=sql, triggers=[content_hash(sql)]))
    return steps
