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
from components.control_plane import rabbitmq_user_command
from components.databases import database_sql, region_databases
from components.registry.context import MEMCACHED_USER
from components.node import Node, NodeArgs, NodeFile, NodeStep, NodeUnit, content_hash, on_node, supervised_stop
from components.region_tls import RegionTls
from components.settings import NodeSpec, Settings, ha_spec
from components.settings import secret as settings_secret
from components.templates import render

SANDBOX_MARIADB_CNF = "/etc/mysql/sandbox-node.cnf"
# Restarted when their files change; mariadb and rabbitmq-server are not (see above).
RESTARTED_ON_CHANGE = ("keepalived", "haproxy", "systemd-sysctl", "memcached")


@dataclass
class HaClusterArgs:
    settings: Settings
    database_passwords: pulumi.Input[dict]  # database user -> password (secrets)
    ssh_private_key: pulumi.Input[str]
    rabbitmq_password: Optional[pulumi.Input[str]] = None  # the services' RabbitMQ user (real nodes)
    memcached_password: Optional[pulumi.Input[str]] = None  # memcached's SASL user (real nodes, with TLS)
    tls: Optional[RegionTls] = None  # the controllers' certificates (real nodes, unless plainHttp)
    depends_on: Sequence[pulumi.Resource] = ()


def region_database_sql(settings: Settings, passwords: dict) -> str:
    """The region's databases and users (Keystone's in the Keystone stack), allowed in
    from the controllers, where the services and HAProxy run."""
    hosts = [c.address for c in settings.controllers] + ["127.0.0.1", "localhost"]
    return database_sql(region_databases(settings.services, settings.hosts_keystone), passwords, hosts)


def database_host(settings: Settings) -> str:
    """Where services reach the region's database: HAProxy's Galera listener (seed 002)."""
    return settings.ha.db_vip or settings.ha.vip


class HaCluster(pulumi.ComponentResource):
    ready: list[pulumi.Resource]

    def __init__(self, name: str, args: HaClusterArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("openstack-multiregion:ha:HaCluster", name, None, opts)
        s = args.settings
        sql = pulumi.Output.secret(args.database_passwords).apply(lambda pw: region_database_sql(s, pw))
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
            tls_trigger = args.tls.trigger(spec.name) if args.tls else None
            steps = systemd_cluster_steps(s, first, sql, args.rabbitmq_password)
            if args.memcached_password is not None and s.tls:
                password = pulumi.Output.secret(args.memcached_password)
                steps.append(NodeStep("memcached-user", ha.memcached_user_command(MEMCACHED_USER), stdin=password,
                                      triggers=[content_hash(password)]))
            units = restarted_units(files, tls_trigger)
            if tls_trigger is not None:
                steps.append(NodeStep("tls-reload", TLS_RELOAD, triggers=[tls_trigger]))
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
        ha_spec(s.ha, s.region, controllers, s.services, s.hosts_keystone, v[0], v[1], v[2], s.tls,
                s.keystone.port), me))
    shape = ha.ha_node_files(ha_spec(s.ha, s.region, controllers, s.services, s.hosts_keystone,
                                     "x", "x" * 12, "x" * 20, s.tls, s.keystone.port), me)
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


def restarted_units(files: list[NodeFile], tls_trigger: Optional[pulumi.Output] = None) -> list[NodeUnit]:
    """haproxy also restarts when its certificate changes."""
    files_of_unit: dict[str, list[str]] = defaultdict(list)
    for f in files:
        for unit in ha.HA_UNITS.get(f.path, ()):
            if unit in RESTARTED_ON_CHANGE:
                files_of_unit[unit].append(f.path)
    return [NodeUnit(unit, files=tuple(paths), triggers=[tls_trigger] if tls_trigger and unit == "haproxy" else ())
            for unit, paths in sorted(files_of_unit.items())]


# A new certificate reaches the cluster without a restart (which would make Galera
# and RabbitMQ resynchronise): MariaDB reloads its TLS files, RabbitMQ drops its cache.
TLS_RELOAD = ("set -e; mysql -e 'FLUSH SSL'; "
              "rabbitmqctl -q eval 'ssl:clear_pem_cache().' >/dev/null")


# How a controller's MariaDB stands: "<cluster status> <cluster size> <local state>";
# "Primary" only when it is a member of a running cluster (Debian starts it standalone
# at install: "Disconnected 0 ...").
_GALERA_STATE = ("mysql -N -B -e \"SHOW STATUS WHERE Variable_name IN ('wsrep_cluster_status', 'wsrep_cluster_size', "
                 "'wsrep_local_state_comment')\" 2>/dev/null | sort | cut -f2 | tr '\\n' ' '")
_WAIT_SYNCED = ("for i in $(seq 1 180); do mysql -N -B -e \"SHOW STATUS LIKE 'wsrep_local_state_comment'\" "
                "2>/dev/null | grep -q Synced && break; sleep 1; done; "
                "mysql -N -B -e \"SHOW STATUS LIKE 'wsrep_local_state_comment'\" | grep -q Synced || "
                "{ echo \"galera node $(hostname) not Synced within 180s\" >&2; journalctl -u mariadb -n 20 --no-pager >&2; "
                "exit 1; }")


def systemd_cluster_steps(s: Settings, first: bool, sql: pulumi.Output,
                          rabbitmq_password: Optional[pulumi.Output]) -> list[NodeStep]:
    """Each command looks at the live cluster first, so a rerun never bootstraps a
    second cluster nor joins twice. The packages started MariaDB and RabbitMQ standalone:
    the first controller bootstraps Galera from its MariaDB; each next one restarts into
    the cluster (a state transfer from a member) and joins RabbitMQ's after a restart
    that picks up the shared Erlang cookie."""
    head = s.controllers[0].name
    # The controllers by their config names, before RabbitMQ (re)starts as rabbit@<name>.
    names = ha.hosts_command(ha.HaController(c.name, c.address) for c in s.controllers)
    hosts = NodeStep("cluster-hosts", names)
    # Before bootstrapping, the first controller asks the others: a member already running
    # Galera (its replication port answers) means a cluster exists, and a second
    # galera_new_cluster would make a second Primary component. It joins instead.
    peers = " ".join(c.address for c in s.controllers[1:])
    members_running = (f"running=; for peer in {peers}; do timeout 3 bash -c \"</dev/tcp/$peer/4567\" 2>/dev/null "
                       f"&& running=$peer; done")
    if first:
        steps = [hosts, NodeStep("cluster-bootstrap", (
            f"set -e; case \"$({_GALERA_STATE})\" in *Primary*) ;; *) {members_running}; "
            f"if [ -n \"$running\" ]; then echo \"galera: $running runs the cluster: joining it\" >&2; "
            f"systemctl restart mariadb; else systemctl stop mariadb; galera_new_cluster; fi ;; "
            f"esac; "
            f"{_WAIT_SYNCED}; "
            # A cookie pushed after the package started RabbitMQ is read at the next start.
            f"rabbitmqctl -q cluster_status >/dev/null 2>&1 && [ -f /var/lib/rabbitmq/.cookie-applied ] || "
            f"{{ systemctl restart rabbitmq-server && touch /var/lib/rabbitmq/.cookie-applied; }}; "
            f"rabbitmqctl -q await_startup")),
            NodeStep("databases", "set -e; mysql --batch", stdin=sql, triggers=[content_hash(sql)])]
        if rabbitmq_password is not None:
            steps.append(NodeStep("rabbitmq-user", rabbitmq_user_command(), stdin=rabbitmq_password,
                                  triggers=[content_hash(rabbitmq_password)]))
        return steps
    return [hosts, NodeStep("cluster-join", (
        f"set -e; state=\"$({_GALERA_STATE})\"; case \"$state\" in *Primary*) ;; "
        f"*) systemctl restart mariadb ;; esac; {_WAIT_SYNCED}; "
        f"if ! rabbitmqctl -q cluster_status 2>/dev/null | grep -q 'rabbit@{head}'; then "
        f"systemctl restart rabbitmq-server; rabbitmqctl -q await_startup; rabbitmqctl -q stop_app; "
        f"rabbitmqctl -q reset; rabbitmqctl -q join_cluster rabbit@{head}; rabbitmqctl -q start_app; fi"))]


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
