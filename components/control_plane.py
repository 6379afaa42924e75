"""The infrastructure of a region without `ha`, on its first controller: MariaDB
with one database and one user per service, RabbitMQ with the services' user, and
memcached, each bound to the controller's address. (With `ha` the HaCluster runs
them as clusters across the controllers instead.)

Each is restarted only when its own file changes; the databases, users and their
passwords are (re)applied from SQL on stdin, and the RabbitMQ password reaches
rabbitmqctl on stdin, so no password is ever on a command line. With TLS, memcached
answers only clients that authenticate with SASL (its password reaches saslpasswd2 on
stdin); the services' token caches are also encrypted and signed.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi

from components import ha_configs as ha
from components.databases import database_sql, region_databases
from components.registry.context import MEMCACHED_USER
from components.node import Node, NodeArgs, NodeFile, NodeStep, NodeUnit, content_hash
from components.region_tls import RegionTls
from components.settings import Settings
from components.tls_paths import CA_FILE, SERVER_PEM
from components.systemd_units import READY_TOOL
from components.templates import render

MARIADB_CNF = "/etc/mysql/mariadb.conf.d/99-openstack.cnf"
MEMCACHED_CONF = "/etc/memcached.conf"
RABBITMQ_CONF = "/etc/rabbitmq/rabbitmq.conf"
RABBITMQ_USER = "openstack"


@dataclass
class ControlPlaneArgs:
    settings: Settings
    database_passwords: pulumi.Input[dict]  # database user -> password (secrets)
    rabbitmq_password: Optional[pulumi.Input[str]]
    ssh_private_key: pulumi.Input[str]
    tls: Optional[RegionTls] = None  # MariaDB and RabbitMQ accept only TLS clients (unless plainHttp)
    memcached_password: Optional[pulumi.Input[str]] = None  # memcached answers only SASL clients (with TLS)
    depends_on: Sequence[pulumi.Resource] = ()


# Reads the password from stdin exactly as given (rabbitmqctl's own stdin reading trims
# blanks and mangles backslashes) and writes RabbitMQ's salted SHA-256 of it into a
# definitions document, which rabbitmqctl imports from its stdin.
_RABBITMQ_DEFINITIONS = """
import base64, hashlib, json, os, sys
user = sys.argv[1]
salt = os.urandom(4)
digest = base64.b64encode(salt + hashlib.sha256(salt + sys.stdin.buffer.read()).digest()).decode()
print(json.dumps({"users": [{"name": user, "password_hash": digest, "tags": "",
                             "hashing_algorithm": "rabbit_password_hashing_sha256"}],
                  "permissions": [{"user": user, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}]}))
"""


def rabbitmq_user_command(user: str = RABBITMQ_USER) -> str:
    """Creates the services' user, or sets its password, from the password on stdin;
    grants it the default vhost. Neither the password nor its hash is on a command line."""
    return f"set -e; python3 -c {shlex.quote(_RABBITMQ_DEFINITIONS)} {user} | rabbitmqctl -q import_definitions"


class ControlPlane(pulumi.ComponentResource):
    ready: list[pulumi.Resource]

    def __init__(self, name: str, args: ControlPlaneArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("openstack-multiregion:region:ControlPlane", name, None, opts)
        s = args.settings
        spec = s.controllers[0]
        tls = {"server_pem": SERVER_PEM, "ca_file": CA_FILE} if args.tls else {}
        sasl = args.memcached_password is not None
        values = {"region": s.region, "address": spec.address, "tls": tls, "sasl": sasl}
        files = [NodeFile(MARIADB_CNF, render("mariadb/openstack.cnf.j2", **values), mode="0644"),
                 NodeFile(MEMCACHED_CONF, render("memcached/memcached.conf.j2", **values), mode="0644"),
                 NodeFile(RABBITMQ_CONF, render("rabbitmq/rabbitmq-single.conf.j2", **values), mode="0644",
                          group="rabbitmq")]
        if sasl:
            files.append(NodeFile(ha.MEMCACHED_SASL_CONF, ha.MEMCACHED_SASL, mode="0644"))
        databases = region_databases(s.services, s.hosts_keystone)
        hosts = [c.address for c in s.controllers] + ["localhost"]
        sql = pulumi.Output.secret(args.database_passwords).apply(lambda pw: database_sql(databases, pw, hosts))
        # The units first (a changed bind address must be live before the SQL runs).
        # MariaDB and RabbitMQ restart for a new certificate too.
        tls_trigger = [args.tls.trigger(spec.name)] if args.tls else []
        memcached_files = (MEMCACHED_CONF, ha.MEMCACHED_SASL_CONF) if sasl else (MEMCACHED_CONF,)
        units = [NodeUnit(unit, files=paths, ready_command=self._ready(s, unit), triggers=triggers)
                 for unit, paths, triggers in (("mariadb", (MARIADB_CNF,), tls_trigger),
                                               ("memcached", memcached_files, []),
                                               ("rabbitmq-server", (RABBITMQ_CONF,), tls_trigger))]
        self.node = Node(f"{name}-{spec.name}", NodeArgs(
            spec=spec, private_key=args.ssh_private_key, root="/", service_manager=s.service_manager,
            files=files, units=units, depends_on=list(args.depends_on)), pulumi.ResourceOptions(parent=self))
        steps = [self.node.command("databases", "set -e; mysql --batch", stdin=sql, triggers=[content_hash(sql)],
                                   depends_on=self.node.ready)]
        if args.rabbitmq_password is not None:
            password = pulumi.Output.secret(args.rabbitmq_password)
            steps.append(self.node.command("rabbitmq-user", rabbitmq_user_command(), stdin=password,
                                           triggers=[content_hash(password)], depends_on=self.node.ready))
        if sasl:
            password = pulumi.Output.secret(args.memcached_password)
            steps.append(self.node.command("memcached-user", ha.memcached_user_command(MEMCACHED_USER),
                                           stdin=password, triggers=[content_hash(password)],
                                           depends_on=self.node.ready))
        self.ready = self.node.ready + steps
        self.register_outputs({"node": spec.name})

    @staticmethod
    def _ready(s: Settings, unit: str) -> str:
        return f"{s.virtualenv}/bin/python {READY_TOOL} {unit} active"
