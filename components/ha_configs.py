"""High availability inside one region: keepalived, HAProxy, MariaDB Galera, RabbitMQ.

Pure Python (no Pulumi), rendered from templates/<service>/ and unit-tested against
seeds 001 and 002 (three controllers behind one VIP):

- keepalived holds the API VIP (and an optional separate DB VIP) on the controller
  with the highest priority whose haproxy runs: the first controller is MASTER
  with priority 101 (seed 001), the others BACKUP with 100, 99, ...;
- HAProxy on every controller serves each API of the region on the VIP with
  `balance source`, `option httpchk` and `check inter 2000 rise 2 fall 5`, and
  MariaDB on the DB VIP (or the API VIP) with ONE active server and the others
  `backup` (seed 002);
- Galera lists every controller in `gcomm://`; RabbitMQ nodes find each other by a
  classic peer-discovery list and a shared Erlang cookie. RabbitMQ is NOT behind
  HAProxy: services list every node in `transport_url` (seed 002 defines a
  haproxy block on 5673 but comments its use out and connects to the nodes).

Where the seeds are unsafe this module does better, and says so:
- seed 002's stats page is `admin:admin` on 0.0.0.0: here the credential is a
  required secret and the page binds to the node's own address (or the one given);
- seed 001 gives the backup priority 50 with a track weight of 2, so a MASTER
  whose haproxy died keeps the VIP (100 > 52): here the weight is larger than
  the gap between any two priorities.

A value the template needs but the spec lacks fails validation (HaConfigError,
naming the key under `ha.`), before anything is written to a node.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence, Union
from urllib.parse import quote

from components import registry
from components.templates import render

NAMESPACE = "openstack-multiregion"

KEEPALIVED_CONF = "/etc/keepalived/keepalived.conf"
HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
# Debian's MariaDB reads mariadb.conf.d/ (seed 002 shows RDO's /etc/my.cnf.d/galera.cnf);
# 60- sorts after Debian's 50-server.cnf, so its bind-address wins.
GALERA_CNF = "/etc/mysql/mariadb.conf.d/60-galera.cnf"
MEMCACHED_CONF = "/etc/memcached.conf"
# memcached's SASL: Cyrus SASL's config for the `memcached` application, and its user
# database (written by MEMCACHED_USER_COMMAND from the password on stdin).
MEMCACHED_SASL_CONF = "/etc/sasl2/memcached.conf"
MEMCACHED_SASLDB = "/etc/sasl2/memcached-sasldb2"
MEMCACHED_SASL = ("# Managed by openstack-multiregion (Pulumi); local edits are overwritten.\n"
                  f"mech_list: plain\nsasldb_path: {MEMCACHED_SASLDB}\n")
RABBITMQ_CONF = "/etc/rabbitmq/rabbitmq.conf"
RABBITMQ_ENABLED_PLUGINS = "/etc/rabbitmq/enabled_plugins"  # only with rabbitmq_management
# RabbitMQ's node name is the node's config name (rabbit@<name>), whatever the machine's
# hostname; the controllers find each other by those names through HOSTS_BLOCK.
RABBITMQ_ENV = "/etc/rabbitmq/rabbitmq-env.conf"
ERLANG_COOKIE = "/var/lib/rabbitmq/.erlang.cookie"  # the secret itself, no template
SYSCTL_CONF = "/etc/sysctl.d/60-openstack-ha.conf"  # haproxy binds the VIP on nodes without it

# path -> the systemd units to restart when it changes. Galera: restart one node at a
# time (a node that restarts re-joins the others; all at once loses the cluster).
HA_UNITS: dict[str, tuple[str, ...]] = {
    KEEPALIVED_CONF: ("keepalived",),
    HAPROXY_CFG: ("haproxy",),
    GALERA_CNF: ("mariadb",),
    RABBITMQ_CONF: ("rabbitmq-server",),
    RABBITMQ_ENABLED_PLUGINS: ("rabbitmq-server",),
    RABBITMQ_ENV: ("rabbitmq-server",),
    ERLANG_COOKIE: ("rabbitmq-server",),
    SYSCTL_CONF: ("systemd-sysctl",),
    MEMCACHED_CONF: ("memcached",),
    MEMCACHED_SASL_CONF: ("memcached",),
}

# path -> (owner, group, mode). Erlang refuses a cookie readable by anyone but its owner,
# so the cookie must be OWNED by rabbitmq (a group is not enough).
HA_FILE_MODES: dict[str, tuple[str, str, str]] = {
    KEEPALIVED_CONF: ("root", "root", "0600"),  # holds auth_pass
    HAPROXY_CFG: ("root", "haproxy", "0640"),  # holds the stats password
    GALERA_CNF: ("root", "root", "0644"),
    RABBITMQ_CONF: ("root", "rabbitmq", "0644"),
    RABBITMQ_ENABLED_PLUGINS: ("root", "rabbitmq", "0644"),
    RABBITMQ_ENV: ("root", "rabbitmq", "0644"),
    ERLANG_COOKIE: ("rabbitmq", "rabbitmq", "0400"),
    SYSCTL_CONF: ("root", "root", "0644"),
    MEMCACHED_CONF: ("root", "root", "0644"),
    MEMCACHED_SASL_CONF: ("root", "root", "0644"),
}

RABBITMQ_PORT = 5672
RABBITMQ_TLS_PORT = 5671
MEMCACHED_PORT = 11211
GALERA_PORT = 3306

PRIORITY_FIRST = 101  # seed 001: the MASTER load balancer has priority 101
SST_METHODS = ("rsync", "mariabackup", "mysqldump")
# The seeds' check. Not `pidof`: on Debian it is a link to killall5, and keepalived runs
# the link's target, which then ignores its arguments and always fails.
CHECK_HAPROXY = "/usr/bin/killall -0 haproxy"
DEFAULT_GALERA_PROVIDER = "/usr/lib/galera/libgalera_smm.so"  # Debian's galera-4 (seed 002's CentOS: /usr/lib64/)


@dataclass(frozen=True)
class HaController:
    name: str  # the node's short hostname: RabbitMQ's node name is rabbit@<name>
    address: str  # IPv4 management address; Galera, HAProxy and RabbitMQ use it


@dataclass(frozen=True)
class HaSpec:
    region: str
    vip: str  # API VIP: every endpoint and bootstrap URL of the region
    controllers: tuple[HaController, ...]  # the first is MASTER, active Galera server and bootstrap node
    interface: str = "eth0"  # where the VIPs live (the controllers' management interface)
    virtual_router_id: int = 51  # unique per VIP on the shared subnet (so per region)
    db_vip: Optional[str] = None  # separate VIP for MariaDB; default: the API VIP
    db_virtual_router_id: Optional[int] = None  # required with db_vip
    vrrp_password: str = ""  # secret, 1-8 characters (VRRP PASS authentication)
    stats_password: str = ""  # secret, for the HAProxy stats page
    stats_address: str = ""  # where the stats page binds; default: each node's own address
    sst_method: str = "rsync"
    apis: tuple[str, ...] = ()  # service types run in the region (registry selectors, and identity)
    allow_small_galera: bool = False  # allow fewer than 3 Galera nodes (no quorum after one failure)
    stats_user: str = "haproxy"
    stats_port: int = 1080  # seed 002
    vrrp_unicast: bool = False  # unicast VRRP to the other controllers (clouds without multicast)
    erlang_cookie: str = ""  # secret, shared by every RabbitMQ node; required with 2+ controllers
    galera_provider: str = DEFAULT_GALERA_PROVIDER
    rabbitmq_management: bool = False  # enable the management UI (seed 002), bound to the node address
    keystone_port: int = 5000  # the shared Keystone's port (`keystone.port`), on the VIP and each node
    # TLS (components/region_tls.py): HAProxy terminates HTTPS on the VIP, MariaDB and
    # RabbitMQ accept only TLS clients. "": plain (plainHttp).
    server_pem: str = ""
    ca_file: str = ""


class HaConfigError(ValueError):
    """An HA configuration mistake: names the key, the bad value and what is expected."""

    def __init__(self, key: str, value: Any, expected: str, secret: bool = False):
        shown = "[secret]" if secret else repr(value)
        super().__init__(f"config {NAMESPACE}:{key} = {shown}: expected {expected}")
        self.key = key
        self.value = None if secret else value
        self.expected = expected


# --- validation -------------------------------------------------------------------

_REGION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
_SHORT_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_INTERFACE = re.compile(r"^[A-Za-z0-9_.@:-]{1,15}$")
# Characters keepalived and haproxy read literally: no blanks, no comment/quote/brace/`$`.
_VRRP_PASSWORD = re.compile(r"^[A-Za-z0-9_.,:@%+=*/^~-]{1,8}$")
_STATS_USER = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_STATS_PASSWORD = re.compile(r"^[!-~]{1,256}$")  # printable, no blanks (quoted in the file)
_ERLANG_COOKIE = re.compile(r"^[A-Za-z0-9]{1,255}$")
# Ports the controllers' own services listen on: the stats page must not take one.
_RESERVED_PORTS = frozenset({listen.port for service in registry.SERVICES for listen in service.listens}
                            | {GALERA_PORT, 4444, 4567, 4568, RABBITMQ_PORT, 15672, 25672, 4369, MEMCACHED_PORT})


def validate(spec: HaSpec, subnet_prefix: int = 24) -> None:
    """Raise HaConfigError for the first mistake in `spec`. `subnet_prefix` is the
    prefix length of the controllers' subnet: the VIPs must be inside it."""
    if not isinstance(subnet_prefix, int) or isinstance(subnet_prefix, bool) or not 1 <= subnet_prefix <= 32:
        raise ValueError(f"subnet_prefix {subnet_prefix!r}: expected an IPv4 prefix length, 1 to 32")
    _check(spec, subnet_prefix)


def _check(spec: HaSpec, subnet_prefix: Optional[int]) -> None:
    if not isinstance(spec.region, str) or not _REGION_ID.match(spec.region):
        raise HaConfigError("region", spec.region, "a region id (letters, digits, '_', '.', '-')")
    controllers = _check_controllers(spec)
    addresses = [c.address for c in controllers]

    _check_vip("ha.vip", spec.vip, addresses, subnet_prefix)
    _check_router_id("ha.virtualRouterId", spec.virtual_router_id)
    if spec.db_vip is not None:
        _check_vip("ha.dbVip", spec.db_vip, addresses, subnet_prefix)
        if spec.db_vip == spec.vip:
            raise HaConfigError("ha.dbVip", spec.db_vip, "an address other than ha.vip (leave it unset to use ha.vip)")
        if spec.db_virtual_router_id is None:
            raise HaConfigError("ha.dbVirtualRouterId", None, "a VRRP router id (1-255) for ha.dbVip")
        _check_router_id("ha.dbVirtualRouterId", spec.db_virtual_router_id)
        if spec.db_virtual_router_id == spec.virtual_router_id:
            raise HaConfigError("ha.dbVirtualRouterId", spec.db_virtual_router_id,
                                f"a router id other than ha.virtualRouterId ({spec.virtual_router_id})")
    elif spec.db_virtual_router_id is not None:
        raise HaConfigError("ha.dbVirtualRouterId", spec.db_virtual_router_id, "no value without ha.dbVip")

    if not isinstance(spec.interface, str) or not _INTERFACE.match(spec.interface):
        raise HaConfigError("ha.interface", spec.interface, "a network interface name (at most 15 characters)")
    if not isinstance(spec.vrrp_password, str) or not _VRRP_PASSWORD.match(spec.vrrp_password):
        raise HaConfigError("ha.vrrpPassword", spec.vrrp_password,
                            "a secret of 1 to 8 characters (VRRP PASS authentication reads 8), "
                            "letters, digits or _.,:@%+=*/^~-", secret=True)
    if not isinstance(spec.stats_user, str) or not _STATS_USER.match(spec.stats_user):
        raise HaConfigError("ha.statsUser", spec.stats_user, "a user name of letters, digits, '_', '.', '-'")
    if not isinstance(spec.stats_password, str) or not _STATS_PASSWORD.match(spec.stats_password) \
            or "'" in spec.stats_password:
        raise HaConfigError("ha.statsPassword", spec.stats_password,
                            "a secret of printable characters without blanks or \"'\"", secret=True)
    if spec.stats_password == spec.stats_user or spec.stats_password.lower() in ("admin", "password", "haproxy"):
        raise HaConfigError("ha.statsPassword", spec.stats_password,
                            "a real secret, not the user name or a default like admin", secret=True)
    if spec.stats_address and not _is_ipv4(spec.stats_address):
        raise HaConfigError("ha.statsAddress", spec.stats_address, "an IPv4 address (default: each node's address)")
    if not isinstance(spec.stats_port, int) or isinstance(spec.stats_port, bool) or not 1 <= spec.stats_port <= 65535:
        raise HaConfigError("ha.statsPort", spec.stats_port, "a TCP port, 1-65535")
    if spec.stats_port in _RESERVED_PORTS:
        raise HaConfigError("ha.statsPort", spec.stats_port,
                            "a port no API, MariaDB/Galera, RabbitMQ or memcached listens on")
    if spec.sst_method not in SST_METHODS:
        raise HaConfigError("ha.sstMethod", spec.sst_method, f"one of {', '.join(SST_METHODS)}")
    apis_expected = f"a list of service types among {', '.join(_api_selectors())}"
    if isinstance(spec.apis, (str, bytes)) or not isinstance(spec.apis, Iterable):
        raise HaConfigError("ha.apis", spec.apis, apis_expected)
    for api in spec.apis:
        if api not in _api_selectors():
            raise HaConfigError("ha.apis", api, apis_expected)
    if len(controllers) > 1 and not (isinstance(spec.erlang_cookie, str) and _ERLANG_COOKIE.match(spec.erlang_cookie)):
        raise HaConfigError("ha.erlangCookie", spec.erlang_cookie,
                            "a secret of 1-255 letters and digits, the same on every RabbitMQ node", secret=True)
    if spec.erlang_cookie and not _ERLANG_COOKIE.match(spec.erlang_cookie):
        raise HaConfigError("ha.erlangCookie", spec.erlang_cookie, "1-255 letters and digits", secret=True)
    if not isinstance(spec.galera_provider, str) or not spec.galera_provider.startswith("/") \
            or not re.fullmatch(r"[A-Za-z0-9_./+-]+", spec.galera_provider):
        raise HaConfigError("ha.galeraProvider", spec.galera_provider, "the absolute path of libgalera_smm.so")


def _check_controllers(spec: HaSpec) -> tuple[HaController, ...]:
    controllers = spec.controllers
    if isinstance(controllers, (str, bytes)) or not isinstance(controllers, Sequence) \
            or not all(isinstance(c, HaController) for c in controllers):
        raise HaConfigError("ha.controllers", controllers, "a list of controllers, each with a name and an address")
    minimum = 1 if spec.allow_small_galera else 3
    if len(controllers) < minimum:
        raise HaConfigError("ha.controllers", [c.name for c in controllers],
                            "at least 3 controllers: Galera needs 3 nodes to keep quorum when one fails "
                            "(set ha.allowSmallGalera to run fewer)" if minimum == 3 else "at least one controller")
    for i, c in enumerate(controllers):
        if not isinstance(c.name, str) or not _SHORT_HOSTNAME.match(c.name):
            raise HaConfigError(f"ha.controllers[{i}].name", c.name,
                                "the node's short host name (RabbitMQ's node is rabbit@<name>)")
        if not _is_ipv4(c.address):
            raise HaConfigError(f"ha.controllers[{i}].address", c.address, "an IPv4 address")
    for attr in ("address", "name"):
        seen: set[str] = set()
        for c in controllers:
            value = getattr(c, attr)
            if value in seen:
                raise HaConfigError("ha.controllers", value, f"a distinct {attr} for every controller")
            seen.add(value)
    return tuple(controllers)


def _check_vip(key: str, vip: Any, addresses: list[str], subnet_prefix: Optional[int]) -> None:
    if not _is_ipv4(vip):
        raise HaConfigError(key, vip, "an IPv4 address")
    if vip in addresses:
        raise HaConfigError(key, vip, "an address no controller has: the VIP moves between them")
    if subnet_prefix is None:
        return
    subnets = {ipaddress.ip_interface(f"{a}/{subnet_prefix}").network for a in addresses}
    if len(subnets) > 1:
        raise HaConfigError("ha.controllers", addresses,
                            f"controllers on one /{subnet_prefix} subnet (VRRP moves the VIP inside one L2 segment)")
    subnet = next(iter(subnets))
    if ipaddress.ip_address(vip) not in subnet:
        raise HaConfigError(key, vip, f"an address inside the controllers' subnet {subnet}")
    if ipaddress.ip_address(vip) in (subnet.network_address, subnet.broadcast_address) and subnet.prefixlen < 31:
        raise HaConfigError(key, vip, f"a host address of {subnet}, not its network or broadcast address")


def _check_router_id(key: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 255:
        raise HaConfigError(key, value, "a VRRP router id, 1-255, unique per VIP on the subnet")


def _is_ipv4(value: Any) -> bool:
    try:
        return isinstance(value, str) and ipaddress.ip_address(value).version == 4
    except ValueError:
        return False


# --- public entry points ----------------------------------------------------------

def ha_node_files(spec: HaSpec, controller: HaController) -> dict[str, str]:
    """path on `controller` -> rendered content. Always: keepalived.conf, haproxy.cfg,
    galera.cnf, rabbitmq.conf and the sysctl file HAProxy needs to bind the VIP on a
    BACKUP node; the Erlang cookie when spec.erlang_cookie is set; enabled_plugins with
    spec.rabbitmq_management. Owner/group/mode: HA_FILE_MODES; units: HA_UNITS.

    Checks everything validate() does except the subnet (the caller knows its prefix:
    call validate(spec, prefix) when reading config)."""
    _check(spec, None)
    if controller not in spec.controllers:
        raise HaConfigError("ha.controllers", controller.name,
                            f"one of the region's controllers: {', '.join(c.name for c in spec.controllers)}")
    files = {
        KEEPALIVED_CONF: keepalived_conf(spec, controller),
        HAPROXY_CFG: haproxy_cfg(spec, controller),
        GALERA_CNF: galera_cnf(spec, controller),
        RABBITMQ_CONF: rabbitmq_conf(spec, controller),
        RABBITMQ_ENV: "# Managed by openstack-multiregion (Pulumi); local edits are overwritten.\n"
                      f"NODENAME=rabbit@{controller.name}\n",
        # Every controller's memcached: services list them all in memcached_servers.
        MEMCACHED_CONF: _render("memcached/memcached.conf.j2", {"region": spec.region, "address": controller.address,
                                                                "sasl": bool(spec.server_pem)}),
        SYSCTL_CONF: "# Managed by openstack-multiregion (Pulumi); local edits are overwritten.\n"
                     "# HAProxy binds the VIPs on every controller, also where keepalived has not put them.\n"
                     "net.ipv4.ip_nonlocal_bind = 1\n",
    }
    if spec.server_pem:  # with TLS, memcached answers only SASL clients
        files[MEMCACHED_SASL_CONF] = MEMCACHED_SASL
    if spec.erlang_cookie:
        files[ERLANG_COOKIE] = spec.erlang_cookie  # no newline: the file is the cookie
    if spec.rabbitmq_management:
        files[RABBITMQ_ENABLED_PLUGINS] = "[rabbitmq_management].\n"
    return files


def memcached_user_command(user: str) -> str:
    """Creates memcached's SASL user, or sets its password, from the password on stdin
    (never on a command line); the database is readable by memcached only."""
    return (f"set -e; umask 077; mkdir -p /etc/sasl2; saslpasswd2 -p -a memcached -f {MEMCACHED_SASLDB} -c {user}; "
            f"chown root:memcache {MEMCACHED_SASLDB}; chmod 0640 {MEMCACHED_SASLDB}")


HOSTS_MARK = "# openstack-multiregion"


def hosts_block(controllers: Iterable[HaController]) -> str:
    """/etc/hosts lines naming every controller by its config name (RabbitMQ's
    distribution resolves rabbit@<name>), each marked so a rerun replaces them."""
    return "".join(f"{c.address} {c.name} {HOSTS_MARK}\n" for c in controllers)


def hosts_command(controllers: Iterable[HaController]) -> str:
    """Replace the marked lines of /etc/hosts with hosts_block, keeping every other line
    (the operator's own). Written beside it and renamed: a reader never sees half a file."""
    block = hosts_block(controllers).replace("'", "")
    return (f"set -e; tmp=$(mktemp /etc/.hosts.XXXXXX); grep -v -F '{HOSTS_MARK}' /etc/hosts > \"$tmp\" || true; "
            f"printf '%s' '{block}' >> \"$tmp\"; chmod 0644 \"$tmp\"; cat \"$tmp\" > /etc/hosts; rm -f \"$tmp\"")


def transport_url(user: str, password: str, controllers: Iterable[Union[HaController, str]],
                  tls: bool = False) -> str:
    """rabbit://user:pass@h1:5672,user:pass@h2:5672,user:pass@h3:5672/ with every node's
    address (seed 002 writes host names: addresses spare every compute an /etc/hosts).
    User and password are percent-encoded; oslo.messaging decodes them. With `tls`,
    RabbitMQ's TLS port (the services' [oslo_messaging_rabbit] ssl = true)."""
    if not user or not password:
        raise ValueError("transport_url: a RabbitMQ user and password are required")
    credentials = f"{quote(user, safe='')}:{quote(password, safe='')}"
    hosts = _hosts(controllers, "transport_url")
    port = RABBITMQ_TLS_PORT if tls else RABBITMQ_PORT
    return "rabbit://" + ",".join(f"{credentials}@{host}:{port}" for host in hosts) + "/"


def memcached_servers(controllers: Iterable[Union[HaController, str]]) -> str:
    """h1:11211,h2:11211,h3:11211: every service caches on every controller's memcached."""
    return ",".join(f"{host}:{MEMCACHED_PORT}" for host in _hosts(controllers, "memcached_servers"))


def _hosts(controllers: Iterable[Any], what: str) -> list[str]:
    """Addresses of controllers given as HaController (or anything with .address) or as text."""
    hosts = [c if isinstance(c, str) else getattr(c, "address", None) for c in controllers]
    if not hosts or not all(isinstance(h, str) and h for h in hosts):
        raise ValueError(f"{what}: expected one or more controllers (with an address), got {hosts!r}")
    return [f"[{h}]" if ":" in h else h for h in hosts]


# --- one function per file --------------------------------------------------------

def keepalived_conf(spec: HaSpec, controller: HaController) -> str:
    index = spec.controllers.index(controller)
    instances = [{"name": "openstack_api", "vip": spec.vip, "virtual_router_id": spec.virtual_router_id}]
    if spec.db_vip:
        instances.append({"name": "openstack_db", "vip": spec.db_vip,
                          "virtual_router_id": spec.db_virtual_router_id})
    return _render("keepalived/keepalived.conf.j2", {
        "keepalived_region": spec.region,
        "keepalived_node_name": controller.name,
        "keepalived_node_address": controller.address,
        "keepalived_interface": spec.interface,
        "keepalived_state": "MASTER" if index == 0 else "BACKUP",
        "keepalived_priority": priority(spec, controller),
        "keepalived_check_script": CHECK_HAPROXY,
        "keepalived_check_weight": check_weight(spec),
        "keepalived_auth_pass": spec.vrrp_password,
        "keepalived_unicast_peers": [c.address for c in spec.controllers if c != controller] if spec.vrrp_unicast
        else [],
        "keepalived_instances": instances,
    })


def priority(spec: HaSpec, controller: HaController) -> int:
    """101 on the first controller, then 100, 99, ... (seed 001's MASTER is 101)."""
    return PRIORITY_FIRST - spec.controllers.index(controller)


def check_weight(spec: HaSpec) -> int:
    """What a running haproxy adds to the priority: seed 001's 2 for two nodes, and in
    general more than the gap between the first and last priority, so any node whose
    haproxy runs outranks every node whose haproxy is down."""
    return max(2, len(spec.controllers))


def haproxy_cfg(spec: HaSpec, controller: HaController) -> str:
    return _render("haproxy/haproxy.cfg.j2", {
        "haproxy_region": spec.region,
        "haproxy_node_name": controller.name,
        "haproxy_vip": spec.vip,
        "haproxy_db_vip": spec.db_vip or spec.vip,
        "haproxy_stats_address": spec.stats_address or controller.address,
        "haproxy_stats_port": spec.stats_port,
        # Single quotes: haproxy reads the text literally (no escapes, no $VAR); validate()
        # keeps "'" out of the password.
        "haproxy_stats_auth": f"'{spec.stats_user}:{spec.stats_password}'",
        "haproxy_apis": [{"name": l.name, "port": _listen_port(spec, l), "httpchk": l.httpchk or "",
                          "timeouts": list(l.timeouts)} for l in _listens(spec.apis)],
        "haproxy_servers": [{"name": c.name, "address": c.address} for c in spec.controllers],
        "haproxy_server_pem": spec.server_pem,
        "haproxy_ca_file": spec.ca_file,
    })


def galera_cnf(spec: HaSpec, controller: HaController) -> str:
    return _render("galera/galera.cnf.j2", {
        "galera_region": spec.region,
        "galera_node_name": controller.name,
        "galera_node_address": controller.address,
        "galera_wsrep_provider": spec.galera_provider,
        "galera_cluster_name": spec.region,
        "galera_cluster_addresses": [c.address for c in spec.controllers],
        "galera_sst_method": spec.sst_method,
        "tls": tls_files(spec),
    })


def rabbitmq_conf(spec: HaSpec, controller: HaController) -> str:
    return _render("rabbitmq/rabbitmq.conf.j2", {
        "rabbitmq_region": spec.region,
        "rabbitmq_node_name": controller.name,
        "rabbitmq_node_address": controller.address,
        "rabbitmq_management": spec.rabbitmq_management,
        "rabbitmq_cluster_nodes": [c.name for c in spec.controllers],
        # pause_minority needs a majority to exist: with 2 nodes both would pause.
        "rabbitmq_partition_handling": "pause_minority" if len(spec.controllers) >= 3 else "autoheal",
        "tls": tls_files(spec),
    })


def tls_files(spec: HaSpec) -> dict[str, str]:
    """The server's certificate and the CA, for the mariadb and rabbitmq templates
    ({} with plainHttp)."""
    return {"server_pem": spec.server_pem, "ca_file": spec.ca_file} if spec.server_pem else {}


# --- helpers ----------------------------------------------------------------------

def _api_selectors() -> tuple[str, ...]:
    """Every service a region may run (those without a listen block add none)."""
    return tuple(sel for service in registry.SERVICES for sel in service.selectors)


def _listen_port(spec: HaSpec, listen: registry.Listen) -> int:
    """A listen's port: the registry's, or the configured one for Keystone's."""
    return spec.keystone_port if listen in registry.KEYSTONE.listens else listen.port


def _listens(apis: Iterable[str]) -> list[registry.Listen]:
    """The listen blocks of these service types, once each, in a stable order."""
    services = sorted((s for s in registry.SERVICES if s.selected_by(tuple(apis))), key=lambda s: s.haproxy_order)
    listens: dict[str, registry.Listen] = {}
    for service in services:
        for listen in service.listens:
            listens.setdefault(listen.name, listen)
    return list(listens.values())


def _render(template: str, values: Mapping[str, Any]) -> str:
    """Drop missing values (None or ""), so StrictUndefined names them."""
    return render(template, **{k: v for k, v in values.items() if v is not None and v != ""})
