"""The stack's configuration, parsed once into a validated model.

Every mistake raises ConfigError naming the key, the bad value and what is
expected, before any resource is registered. Secrets are only checked for
presence here; their values stay inside Pulumi secret Outputs.
"""
from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional

import pulumi

from components import registry
from components.registry.roles import registry_roles

NAMESPACE = "openstack-multiregion"

ROLES = registry.ROLES
SECRET_KEYS = ("adminPassword", "servicePassword", "sshPrivateKey")
HA_SECRET_KEYS = ("vrrpPassword", "haproxyStatsPassword", "erlangCookie")
# The operator's own TLS material (PEM), instead of the CA and certificates the program makes.
TLS_SECRET_KEYS = ("tlsCa", "tlsCertificate", "tlsPrivateKey")
KNOWN_KEYS = {"region", "keystone", "services", "nodes", "endpointAddress", "nodeRoot", "serviceManager",
              "serviceUsers", "identity", "virtualenv", "memcachedServers", "ha", "adminOpenrc", "compute",
              "network", "passwords", "adoptUntagged", "ssh", "plainHttp", "endpointUrls", *SECRET_KEYS, *HA_SECRET_KEYS,
              *TLS_SECRET_KEYS}

_REGION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_HOST_KEY = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]+$")
_DOGPILE_COERCED = re.compile(r"[-+]?(\d+|(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)|(?i:true|false)|None")
_STACK = re.compile(r"^([A-Za-z0-9_.-]+/){0,2}[A-Za-z0-9_.-]+$")


# The secret values of the config being parsed: no error message ever shows them.
_secret_values: list[str] = []


MIN_MASKED = 4  # shorter values are too common to find (a 1-character password is no secret)


def _masked(text: str) -> str:
    for value in sorted(_secret_values, key=len, reverse=True):
        if len(value) >= MIN_MASKED:
            text = text.replace(value, "[secret]")
    return text


class ConfigError(pulumi.RunError):
    """A configuration mistake; printed as one clear line, without a traceback, and
    without any secret value (shown as [secret])."""

    def __init__(self, key: str, value: Any, expected: str):
        shown = value if isinstance(value, str) else json.dumps(value)
        super().__init__(_masked(f"config {NAMESPACE}:{key} = {shown!s}: expected {expected}"))
        self.key = key


@dataclass(frozen=True)
class SshOptions:
    """`ssh`: how long one command may run, and when a silent node counts as dead."""

    # A command that runs longer fails the step. Half an hour covers a package install
    # on a slow mirror and a Galera state transfer of a modest database; raise it for
    # bigger ones (a node that stops answering is caught by the keepalives instead).
    command_timeout: int = 1800
    # Every keepaliveInterval seconds the node must answer an SSH keepalive; after
    # keepaliveCountMax missed answers (60 s by default) the step fails, naming the node.
    keepalive_interval: int = 15
    keepalive_count_max: int = 4


@dataclass(frozen=True)
class NodeSpec:
    name: str
    address: str
    roles: tuple[str, ...]
    host_key: str
    ssh_port: int = 22
    ssh_user: str = "root"  # another user runs every command through `sudo -n`
    ssh: SshOptions = SshOptions()


@dataclass(frozen=True)
class KeystoneSpec:
    node: Optional[str] = None  # this stack hosts Keystone on that node
    stack: Optional[str] = None  # use the Keystone of that stack
    port: int = 5000


@dataclass(frozen=True)
class ProjectSpec:
    name: str
    description: str = ""


@dataclass(frozen=True)
class DomainSpec:
    name: str
    description: str = ""
    projects: tuple[ProjectSpec, ...] = ()


@dataclass(frozen=True)
class HaSettings:
    """`ha`: controllers behind a VIP (seeds 001/002). Its secrets stay in the config."""

    vip: str
    virtual_router_id: int
    interface: str = "eth0"
    db_vip: Optional[str] = None
    db_virtual_router_id: Optional[int] = None
    subnet_prefix: int = 24
    stats_address: str = ""
    sst_method: str = "rsync"
    allow_small_galera: bool = False
    galera_provider: Optional[str] = None  # default: the seeds' (RDO) path

    def vrrp_claims(self) -> list[dict[str, Any]]:
        """The VRRP router ids this region takes on its subnet, as recorded on its
        Keystone region so that other regions' stacks can refuse to collide."""
        claims = [("api", self.vip, self.virtual_router_id)]
        if self.db_vip:
            claims.append(("db", self.db_vip, self.db_virtual_router_id))
        return [{"instance": name, "vip": vip, "virtual_router_id": vrid,
                 "subnet": str(ipaddress.ip_network(f"{vip}/{self.subnet_prefix}", strict=False))}
                for name, vip, vrid in claims]


@dataclass(frozen=True)
class ComputeSettings:
    """`compute`: how nova-compute runs guests."""

    driver: str = "libvirt"  # or "fake": servers without guests (test beds)
    virt_type: str = "kvm"  # libvirt's: kvm, or qemu without hardware virtualization
    # qemu.conf's cgroup_controllers: None keeps libvirt's default; () where the node's
    # cgroups are read-only (a container such as systemd-nspawn or LXC).
    qemu_cgroup_controllers: Optional[tuple[str, ...]] = None
    # nova's manager_shutdown_timeout: how long a stopping nova-compute lets in-progress
    # tasks finish (20 s of it are kept for cleanup). nova's default. With libvirt, nova
    # waits out all of it even when idle (its libvirt event thread never ends), so a
    # stop or restart of nova-compute takes this long.
    shutdown_timeout: int = 160

    @property
    def graceful_shutdown_timeout(self) -> int:
        """oslo.service's bound on the whole stop: the manager's share plus stopping its
        RPC servers; it must exceed the manager's (nova's defaults: 160 and 180)."""
        return self.shutdown_timeout + 20

    @property
    def stop_timeout(self) -> int:
        """systemd's TimeoutStopSec for nova-compute: longer than nova's own bound, so a
        stop ends by nova's graceful shutdown and never by SIGKILL mid-task."""
        return self.graceful_shutdown_timeout + 20


@dataclass(frozen=True)
class NetworkSettings:
    """`network`: ML2/OVN on Open vSwitch."""

    datapath: str = "system"  # Open vSwitch's kernel datapath, or netdev (userspace, no kernel module)


COMPUTE_DRIVERS = ("libvirt", "fake")
VIRT_TYPES = ("kvm", "qemu")
CGROUP_CONTROLLERS = ("cpu", "devices", "memory", "blkio", "cpuset", "cpuacct")
MAX_SHUTDOWN_TIMEOUT = 3600
DATAPATHS = ("system", "netdev")
DEFAULT_VIRTUALENV = "/opt/openstack/venv"


@dataclass(frozen=True)
class Settings:
    region: str
    keystone: KeystoneSpec
    services: tuple[str, ...]
    nodes: tuple[NodeSpec, ...]
    endpoint_address: Optional[str]
    node_root: str
    service_manager: str
    service_users: str
    domains: tuple[DomainSpec, ...] = field(default=())
    virtualenv: Optional[str] = None
    memcached_servers: tuple[str, ...] = ()  # host:port; default: every controller on 11211
    ha: Optional["HaSettings"] = None
    secrets_present: frozenset[str] = frozenset()
    admin_openrc: bool = False  # write admin-openrc and clouds.yaml (the admin password) on controllers
    password_overrides: frozenset[str] = frozenset()  # purposes whose password `passwords` gives
    compute: ComputeSettings = field(default_factory=lambda: ComputeSettings())
    network: NetworkSettings = field(default_factory=lambda: NetworkSettings())
    adopt_untagged: bool = False  # take over Keystone records made outside the program
    plain_http: bool = False  # `plainHttp`: no TLS anywhere (only when the config says so)
    tls_given: bool = False  # the operator gave tlsCa, tlsCertificate and tlsPrivateKey
    # `endpointUrls`: catalog URLs the operator sets instead of the derived ones, e.g. a
    # public name in front of the region: (type, interface) -> URL.
    endpoint_urls: tuple[tuple[tuple[str, str], str], ...] = ()

    @property
    def tls(self) -> bool:
        """Every endpoint, database and queue connection of the stack over TLS."""
        return not self.plain_http

    @property
    def catalog_types(self) -> tuple[str, ...]:
        """The services that have endpoints in the catalog (not `dashboard`)."""
        return tuple(t for t in self.services if t in registry.region_service_types())

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def hosts_keystone(self) -> bool:
        return self.keystone.node is not None

    @property
    def controllers(self) -> tuple[NodeSpec, ...]:
        return tuple(n for n in self.nodes if "controller" in n.roles)

    def node(self, name: str) -> NodeSpec:
        return next(n for n in self.nodes if n.name == name)

    @property
    def vrrp_claims(self) -> list[dict[str, Any]]:
        return self.ha.vrrp_claims() if self.ha else []

    @property
    def service_address(self) -> str:
        """Where this region's APIs answer: endpointAddress, the HA VIP, or the first controller."""
        return self.endpoint_address or (self.ha.vip if self.ha else None) or self.controllers[0].address

    @property
    def memcached_list(self) -> str:
        """The region's memcached as its clients list it: `memcachedServers`, or every
        controller (else the service address) on 11211."""
        return ",".join(self.memcached_servers or [f"{c.address}:11211" for c in self.controllers]
                        or [f"{self.service_address}:11211"])

    def runs_keystone(self, spec: NodeSpec) -> bool:
        """Keystone runs on this node: the Keystone node, or with `ha` every controller."""
        return self.hosts_keystone and (spec.name == self.keystone.node or (self.ha is not None
                                                                            and "controller" in spec.roles))

    def endpoint_url(self, service_type: str, interface: str) -> Optional[str]:
        """The URL `endpointUrls` sets for this endpoint, or None (the derived one)."""
        return dict(self.endpoint_urls).get((service_type, interface))

    def registry_roles(self, spec: NodeSpec) -> tuple[str, ...]:
        """The node's roles plus its compute driver's variant (registry/roles.py)."""
        return registry_roles(spec.roles, self.compute.driver)

    def node_root_for(self, node: str) -> str:
        return self.node_root.replace("{node}", node)


# --- small validators ------------------------------------------------------------

def _decode(key: str, raw: Any) -> Any:
    """Structured config arrives as JSON text from the engine."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise ConfigError(key, raw, "a YAML/JSON object or list") from None
    return raw


def _is_address(value: Any) -> bool:
    """An IPv4 address or a DNS host name. IPv6 is refused for now: Galera, RabbitMQ and
    memcached clients each spell it differently, and that path has never run."""
    if not isinstance(value, str) or not value:
        return False
    try:
        return ipaddress.ip_address(value).version == 4
    except ValueError:
        # A name made only of digits and dots is a malformed IPv4 address, not a host name.
        return bool(_HOSTNAME.fullmatch(value)) and not re.fullmatch(r"[0-9.]+", value)


def _is_ipv4(value: Any) -> bool:
    try:
        return isinstance(value, str) and ipaddress.ip_address(value).version == 4
    except ValueError:
        return False


def _is_node_address(value: str) -> bool:
    """An address a node can have and others reach. Loopback stays allowed: the
    loopback sandbox runs its nodes on 127.x addresses of one machine."""
    address = ipaddress.ip_address(value)
    return not (address.is_multicast or address.is_unspecified or address.is_reserved or address.is_link_local)


def _is_safe_path(value: Any) -> bool:
    """An absolute path that needs no quoting anywhere it goes (root shells, Python)."""
    return isinstance(value, str) and bool(re.fullmatch(r"/[A-Za-z0-9._/-]*", value)) \
        and ".." not in value.split("/")


def _only_keys(key: str, obj: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", obj[unknown[0]], f"one of the known keys: {', '.join(sorted(allowed))}")


def _port(key: str, value: Any) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise ConfigError(key, value, "a TCP port from 1 to 65535")
    return value


def _node_ports() -> dict[int, str]:
    """Ports a controller's services and infrastructure listen on -> whose."""
    ports = {listen.port: service.name for service in registry.SERVICES for listen in service.listens
             if service is not registry.KEYSTONE}
    ports.update({3306: "MariaDB", 4444: "Galera", 4567: "Galera", 4568: "Galera", 5671: "RabbitMQ",
                  5672: "RabbitMQ", 4369: "epmd", 25672: "RabbitMQ", 11211: "memcached", 6641: "OVN",
                  6642: "OVN", 80: "Apache (Horizon)", 443: "Apache (Horizon)", 1080: "HAProxy's stats"})
    return ports


NODE_PORTS = _node_ports()


def _parse_region(raw: Mapping[str, Any]) -> str:
    if "region" not in raw:
        raise ConfigError("region", "(unset)", "a Keystone region id such as RegionTwo")
    region = raw["region"]
    longest_user = max(len(e.name) for e in registry.SERVICES if e.user) + 1  # "<service>-<region>"
    if not isinstance(region, str) or not _REGION_ID.fullmatch(region) or len(region) > 255 - longest_user:
        # The region's service users are named <service>-<region>: Keystone takes 255.
        raise ConfigError("region", region, "a Keystone region id: letters, digits, '.', '_' or '-', "
                                            f"starting with a letter or digit, at most {255 - longest_user} "
                                            f"characters (its service users are named <service>-<region>)")
    return region


def _parse_nodes(raw: Mapping[str, Any]) -> tuple[NodeSpec, ...]:
    items = _decode("nodes", raw.get("nodes", "[]"))
    if not isinstance(items, list):
        raise ConfigError("nodes", items, "a list of {name, address, roles, hostKey, sshPort?, sshUser?}")
    nodes, seen_names, seen_targets = [], set(), set()
    for i, item in enumerate(items):
        k = f"nodes[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(k, item, "an object {name, address, roles, hostKey, sshPort?, sshUser?}")
        _only_keys(k, item, {"name", "address", "roles", "hostKey", "sshPort", "sshUser"})
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(f"{k}.name", name, "a node name of lowercase letters, digits and '-'")
        if name in seen_names:
            raise ConfigError(f"{k}.name", name, "a name not used by another node (node names must be unique)")
        seen_names.add(name)
        address = item.get("address")
        if not _is_ipv4(address):
            # Database grants, Galera, RabbitMQ and OVN name nodes by address, and MariaDB
            # runs with skip-name-resolve: a DNS name would pass here and fail every login.
            raise ConfigError(f"{k}.address", address, "the node's IPv4 address (not a DNS name: database grants "
                                                       "and the cluster members name nodes by address)")
        if not _is_node_address(address):
            raise ConfigError(f"{k}.address", address, "a unicast address other nodes reach (not multicast, "
                                                       "broadcast, reserved, link-local or 0.0.0.0)")
        roles = item.get("roles")
        if not isinstance(roles, list) or not roles or any(r not in ROLES for r in roles):
            raise ConfigError(f"{k}.roles", roles, f"a non-empty list of roles from: {', '.join(ROLES)}")
        host_key = item.get("hostKey")
        if not isinstance(host_key, str) or not _HOST_KEY.fullmatch(" ".join(host_key.split()[:2])):
            raise ConfigError(f"{k}.hostKey", host_key, "the node's SSH host public key, e.g. 'ssh-ed25519 AAAA...' "
                                                       "(ssh-keyscan prints it)")
        port = _port(f"{k}.sshPort", item.get("sshPort", 22))
        user = item.get("sshUser", "root")
        if not isinstance(user, str) or not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user):
            raise ConfigError(f"{k}.sshUser", user, "a POSIX user name")
        if (address, port) in seen_targets:
            raise ConfigError(f"{k}.address", address, "an address/port not used by another node")
        seen_targets.add((address, port))
        nodes.append(NodeSpec(name=name, address=address, roles=tuple(roles),
                              host_key=" ".join(host_key.split()[:2]), ssh_port=port, ssh_user=user))
    return tuple(nodes)


def _parse_keystone(raw: Mapping[str, Any], nodes: tuple[NodeSpec, ...], this_stack: str = "") -> KeystoneSpec:
    expected = "exactly one of {node: <node name>} (this stack hosts Keystone) or {stack: <stack name>}"
    if "keystone" not in raw:
        raise ConfigError("keystone", "(unset)", expected)
    ks = _decode("keystone", raw["keystone"])
    if not isinstance(ks, dict):
        raise ConfigError("keystone", ks, expected)
    _only_keys("keystone", ks, {"node", "stack", "port"})
    if ("node" in ks) == ("stack" in ks):
        raise ConfigError("keystone", ks, expected)
    if "node" in ks:
        names = [n.name for n in nodes]
        if ks["node"] not in names:
            raise ConfigError("keystone.node", ks["node"], f"the name of a node in 'nodes' ({', '.join(names) or 'none defined'})")
        port = _port("keystone.port", ks.get("port", 5000))
        taken = NODE_PORTS.get(port) or (port == next(n.ssh_port for n in nodes if n.name == ks["node"]) and "sshd")
        if taken:
            raise ConfigError("keystone.port", port, f"a port no other service of the Keystone node listens on "
                                                     f"({port} is {taken}'s)")
        return KeystoneSpec(node=ks["node"], port=port)
    if not isinstance(ks["stack"], str) or not _STACK.fullmatch(ks["stack"]):
        raise ConfigError("keystone.stack", ks["stack"], "a stack name such as region-one or org/project/region-one")
    if "port" in ks:
        raise ConfigError("keystone.port", ks["port"], "no port with {stack: ...}: the URL comes from that stack")
    if this_stack and ks["stack"].split("/")[-1] == this_stack:
        raise ConfigError("keystone.stack", ks["stack"], "another stack's name: a stack cannot use its own Keystone "
                                                         "through a reference ({node: ...} hosts Keystone here)")
    return KeystoneSpec(stack=ks["stack"])


def _parse_services(raw: Mapping[str, Any]) -> tuple[str, ...]:
    services = _decode("services", raw.get("services", "[]"))
    known = registry.service_selectors()
    if not isinstance(services, list):
        raise ConfigError("services", services, f"a list of service types from: {', '.join(known)}")
    for i, s in enumerate(services):
        if s not in known:
            raise ConfigError(f"services[{i}]", s, f"a service type from: {', '.join(known)}")
    if len(set(services)) != len(services):
        raise ConfigError("services", services, "each service type at most once")
    return tuple(services)


def _parse_domains(raw: Mapping[str, Any]) -> tuple[DomainSpec, ...]:
    identity = _decode("identity", raw.get("identity", "{}"))
    if not isinstance(identity, dict):
        raise ConfigError("identity", identity, "an object {domains: [...]}")
    _only_keys("identity", identity, {"domains"})
    domains = identity.get("domains", [])
    if not isinstance(domains, list):
        raise ConfigError("identity.domains", domains, "a list of {name, description?, projects?}")
    result, seen = [], set()
    for i, d in enumerate(domains):
        k = f"identity.domains[{i}]"
        if not isinstance(d, dict) or not isinstance(d.get("name"), str) or not d["name"]:
            raise ConfigError(k, d, "an object with a non-empty 'name'")
        _only_keys(k, d, {"name", "description", "projects"})
        if d["name"].lower() == "default":
            raise ConfigError(f"{k}.name", d["name"], "a domain this stack creates, not Keystone's Default domain "
                                                      "(it holds admin and the service users)")
        if d["name"].lower() in seen:
            raise ConfigError(f"{k}.name", d["name"], "a domain name not declared twice")
        seen.add(d["name"].lower())
        projects, pseen = [], set()
        for j, p in enumerate(d.get("projects", [])):
            pk = f"{k}.projects[{j}]"
            p = {"name": p} if isinstance(p, str) else p
            if not isinstance(p, dict) or not isinstance(p.get("name"), str) or not p["name"]:
                raise ConfigError(pk, p, "a project name or {name, description?}")
            _only_keys(pk, p, {"name", "description"})
            if p["name"] in pseen:
                raise ConfigError(f"{pk}.name", p["name"], "a project name not repeated inside one domain")
            pseen.add(p["name"])
            projects.append(ProjectSpec(p["name"], str(p.get("description", ""))))
        result.append(DomainSpec(d["name"], str(d.get("description", "")), tuple(projects)))
    return tuple(result)


def _parse_compute(raw: Mapping[str, Any]) -> ComputeSettings:
    compute = _decode("compute", raw.get("compute", "{}"))
    if not isinstance(compute, dict):
        raise ConfigError("compute", compute, "an object {driver?, virtType?, qemuCgroupControllers?, shutdownTimeout?}")
    _only_keys("compute", compute, {"driver", "virtType", "qemuCgroupControllers", "shutdownTimeout"})
    driver = compute.get("driver", "libvirt")
    if driver not in COMPUTE_DRIVERS:
        raise ConfigError("compute.driver", driver, "libvirt (real guests, the default) or fake (servers without "
                                                    "guests, for test beds)")
    virt_type = compute.get("virtType", "kvm")
    if virt_type not in VIRT_TYPES:
        raise ConfigError("compute.virtType", virt_type, "kvm (the default) or qemu (no hardware virtualization)")
    controllers = compute.get("qemuCgroupControllers")
    if controllers is not None:
        if not isinstance(controllers, list) or not all(
                isinstance(c, str) and c in CGROUP_CONTROLLERS for c in controllers):
            raise ConfigError("compute.qemuCgroupControllers", controllers,
                              f"a list of libvirt's cgroup controllers ({', '.join(CGROUP_CONTROLLERS)}), "
                              "[] where the node's cgroups are read-only (containers)")
        controllers = tuple(dict.fromkeys(controllers))
    shutdown = compute.get("shutdownTimeout", ComputeSettings.shutdown_timeout)
    if isinstance(shutdown, bool) or not isinstance(shutdown, int) or not 0 <= shutdown <= MAX_SHUTDOWN_TIMEOUT:
        raise ConfigError("compute.shutdownTimeout", shutdown,
                          f"seconds (0-{MAX_SHUTDOWN_TIMEOUT}) a stopping nova-compute gives in-progress tasks, "
                          f"20 of them for its cleanup (default {ComputeSettings.shutdown_timeout})")
    return ComputeSettings(driver, virt_type, controllers, shutdown)


def _parse_network(raw: Mapping[str, Any]) -> NetworkSettings:
    network = _decode("network", raw.get("network", "{}"))
    if not isinstance(network, dict):
        raise ConfigError("network", network, "an object {datapath?}")
    _only_keys("network", network, {"datapath"})
    datapath = network.get("datapath", "system")
    if datapath not in DATAPATHS:
        raise ConfigError("network.datapath", datapath, "system (Open vSwitch's kernel datapath, the default) or "
                                                        "netdev (userspace, where the kernel has no openvswitch module)")
    return NetworkSettings(datapath)


def password_purposes() -> tuple[str, ...]:
    """What `passwords` may set: the purposes of the secrets the program makes."""
    users = [f"keystone-{e.name}" for e in registry.SERVICES if e.user]
    databases = [f"database-{u}" for u in dict.fromkeys(db.user for e in registry.SERVICES for db in e.databases)]
    return (*users, *databases, "rabbitmq", "metadata-proxy", "memcache-secret-key", "memcached",
            "dashboard-secret-key")


def _parse_passwords(raw: Mapping[str, Any]) -> frozenset[str]:
    """`passwords` (a secret object): the operator's own value for some of the secrets
    the program would make, e.g. to keep the passwords of an existing cloud."""
    passwords = _decode("passwords", raw.get("passwords", "{}"))
    expected = f"a secret object {{purpose: password}} with purposes from: {', '.join(password_purposes())}"
    if not isinstance(passwords, dict):
        raise ConfigError("passwords", "[secret]", expected)
    for purpose, value in passwords.items():
        if purpose not in password_purposes():
            raise ConfigError(f"passwords.{purpose}", "[secret]", expected)
        if not isinstance(value, str) or not value or "\n" in value or "\r" in value:
            raise ConfigError(f"passwords.{purpose}", "[secret]", "a non-empty password on one line")
        if purpose == "memcached" and (value != value.strip() or _DOGPILE_COERCED.fullmatch(value)):
            # nova's cache client gets it through dogpile.cache, which strips a string
            # setting and turns numbers, true/false and None into other types.
            raise ConfigError(f"passwords.{purpose}", "[secret]", "a password without blanks at either end, and "
                                                                  "not a number, true, false or None (dogpile.cache, "
                                                                  "which passes it on, would change it)")
        if purpose == "rabbitmq" and "/" in value:
            # oslo.messaging hands the password to kombu inside a URL with '/' left
            # unencoded, and kombu then reads a broken URL.
            raise ConfigError(f"passwords.{purpose}", "[secret]", "a password without '/' (oslo.messaging's rabbit "
                                                                  "driver cannot pass one on)")
    return frozenset(passwords)


SSH_KEYS = {"commandTimeout": "command_timeout", "keepaliveInterval": "keepalive_interval",
            "keepaliveCountMax": "keepalive_count_max"}


def _parse_ssh(raw: Mapping[str, Any]) -> SshOptions:
    ssh = _decode("ssh", raw.get("ssh", "{}"))
    if not isinstance(ssh, dict):
        raise ConfigError("ssh", ssh, "an object {commandTimeout?, keepaliveInterval?, keepaliveCountMax?}")
    _only_keys("ssh", ssh, set(SSH_KEYS))
    for key, value in ssh.items():
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 86400:
            raise ConfigError(f"ssh.{key}", value, "a whole number of seconds (a count for keepaliveCountMax) "
                                                  "from 1 to 86400")
    return SshOptions(**{SSH_KEYS[k]: v for k, v in ssh.items()})


def _parse_flag(raw: Mapping[str, Any], key: str) -> bool:
    value = raw.get(key, False)
    if value in (True, "true"):
        return True
    if value in (False, "false"):
        return False
    raise ConfigError(key, value, "true or false")


def _parse_memcached(raw: Mapping[str, Any]) -> tuple[str, ...]:
    servers = _decode("memcachedServers", raw.get("memcachedServers", "[]"))
    expected = "a list of host:port, e.g. [192.168.80.85:11211]"
    if not isinstance(servers, list):
        raise ConfigError("memcachedServers", servers, expected)
    for i, server in enumerate(servers):
        host, _, port = str(server).rpartition(":")
        if not _is_address(host.strip("[]")) or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigError(f"memcachedServers[{i}]", server, expected)
    return tuple(servers)


HA_KEYS = {"vip": "vip", "virtualRouterId": "virtual_router_id", "interface": "interface", "dbVip": "db_vip",
           "dbVirtualRouterId": "db_virtual_router_id", "subnetPrefix": "subnet_prefix",
           "statsAddress": "stats_address", "sstMethod": "sst_method", "allowSmallGalera": "allow_small_galera",
           "galeraProvider": "galera_provider"}


def _parse_ha(raw: Mapping[str, Any], region: str, nodes: tuple[NodeSpec, ...],
              services: tuple[str, ...], hosts_keystone: bool) -> Optional[HaSettings]:
    if "ha" not in raw:
        return None
    from components import ha_configs  # the HA rules live beside the HA templates

    ha = _decode("ha", raw["ha"])
    if not isinstance(ha, dict) or "vip" not in ha or "virtualRouterId" not in ha:
        raise ConfigError("ha", ha, "an object {vip, virtualRouterId, interface?, dbVip?, dbVirtualRouterId?, "
                                    "subnetPrefix?, statsAddress?, sstMethod?, allowSmallGalera?, galeraProvider?}")
    _only_keys("ha", ha, set(HA_KEYS))
    for key in HA_SECRET_KEYS:
        if not raw.get(key):
            raise ConfigError(key, "(unset)", f"a secret with ha: pulumi config set --secret {key} <value>")
    prefix = ha.get("subnetPrefix", 24)
    if not isinstance(prefix, int) or isinstance(prefix, bool) or not 8 <= prefix <= 30:
        raise ConfigError("ha.subnetPrefix", prefix, "the controllers' IPv4 prefix length, 8 to 30 (default 24)")
    if not isinstance(ha.get("allowSmallGalera", False), bool):
        raise ConfigError("ha.allowSmallGalera", ha["allowSmallGalera"], "true or false")
    settings = HaSettings(**{HA_KEYS[k]: v for k, v in ha.items()})
    controllers = tuple(ha_configs.HaController(n.name, n.address) for n in nodes if "controller" in n.roles)
    try:
        ha_configs.validate(ha_spec(settings, region, controllers, services, hosts_keystone,
                                    raw["vrrpPassword"], raw["haproxyStatsPassword"], raw["erlangCookie"]),
                            subnet_prefix=settings.subnet_prefix)
    except ha_configs.HaConfigError as err:
        shown = "[secret]" if "= [secret]:" in str(err) else err.value
        raise ConfigError(err.key, shown, err.expected) from None
    return settings


def ha_spec(ha: HaSettings, region: str, controllers, services, hosts_keystone: bool,
            vrrp_password: str, stats_password: str, erlang_cookie: str, tls: bool = False,
            keystone_port: int = 5000):
    """The HA module's spec for this region (secrets given as plain strings)."""
    from components import ha_configs
    from components.tls_paths import CA_FILE, SERVER_PEM

    apis = tuple(services) + (("identity",) if hosts_keystone else ())
    return ha_configs.HaSpec(region=region, vip=ha.vip, controllers=tuple(controllers), interface=ha.interface,
                             virtual_router_id=ha.virtual_router_id, db_vip=ha.db_vip,
                             db_virtual_router_id=ha.db_virtual_router_id, vrrp_password=vrrp_password,
                             stats_password=stats_password, stats_address=ha.stats_address,
                             sst_method=ha.sst_method, apis=apis, allow_small_galera=ha.allow_small_galera,
                             erlang_cookie=erlang_cookie, keystone_port=keystone_port,
                             **({"server_pem": SERVER_PEM, "ca_file": CA_FILE} if tls else {}),
                             **({"galera_provider": ha.galera_provider} if ha.galera_provider else {}))


def _collect_secret_values(raw: Mapping[str, Any], secret_keys: frozenset[str]) -> None:
    """Every value under a key that is a secret (by name, or because the engine says so),
    down to the strings inside a secret object: what ConfigError must never print."""
    def strings(value: Any) -> list[str]:
        if isinstance(value, str):
            try:
                decoded = json.loads(value)
            except json.JSONDecodeError:
                return [value]
            return [value, *strings(decoded)] if not isinstance(decoded, str) else [value, decoded]
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return []
    secret = set(SECRET_KEYS) | set(HA_SECRET_KEYS) | set(TLS_SECRET_KEYS) | {"passwords"} | set(secret_keys)
    _secret_values[:] = [v for k, value in raw.items() if k in secret for v in strings(value) if v]


def parse(raw: Mapping[str, Any], secret_keys: frozenset[str] = frozenset(), stack: str = "") -> Settings:
    """Validate the stack's `openstack-multiregion:*` config (keys without the namespace).
    `secret_keys`: keys the engine holds as secrets (besides those secret by name);
    `stack`: this stack's name (a Keystone reference must name another)."""
    _collect_secret_values(raw, secret_keys)
    unknown = sorted(set(raw) - KNOWN_KEYS)
    if unknown:
        # A misspelt key may hold a secret (adminPasword): its value is never shown.
        raise ConfigError(unknown[0], "[not shown]", f"one of the known keys: {', '.join(sorted(KNOWN_KEYS))}")
    region = _parse_region(raw)
    ssh = _parse_ssh(raw)
    nodes = tuple(replace(n, ssh=ssh) for n in _parse_nodes(raw))
    keystone = _parse_keystone(raw, nodes, stack)
    services = _parse_services(raw)
    if services and not any("controller" in n.roles for n in nodes) and "endpointAddress" not in raw:
        raise ConfigError("nodes", [n.name for n in nodes], "at least one node with role 'controller' "
                                                            "(or endpointAddress) when services are configured")
    endpoint_address = raw.get("endpointAddress")
    if endpoint_address is not None and not _is_address(endpoint_address):
        raise ConfigError("endpointAddress", endpoint_address, "an IPv4 address or a DNS host name (IPv6 is not supported yet)")
    node_root = raw.get("nodeRoot", "/")
    if not _is_safe_path(node_root.replace("{node}", "n") if isinstance(node_root, str) else node_root):
        raise ConfigError("nodeRoot", node_root, "an absolute path of letters, digits and . _ - / without '..' "
                                                 "(may contain {node})")
    manager = raw.get("serviceManager", "systemd")
    if manager not in ("systemd", "none"):
        raise ConfigError("serviceManager", manager, "'systemd' (real nodes) or 'none' (supervised processes)")
    virtualenv = raw.get("virtualenv")
    if virtualenv is not None and not _is_safe_path(virtualenv):
        raise ConfigError("virtualenv", virtualenv, "an absolute path on the nodes, of letters, digits and . _ - / "
                                                    "without '..'")
    if manager == "none" and virtualenv is None and (keystone.node or services):
        raise ConfigError("serviceManager", manager, "'systemd', or also set 'virtualenv' to the Python "
                                                     "environment that runs the services on the nodes")
    virtualenv = virtualenv or DEFAULT_VIRTUALENV
    service_users = raw.get("serviceUsers", "per-region")
    if service_users not in ("per-region", "shared"):
        raise ConfigError("serviceUsers", service_users, "'per-region' (e.g. nova-RegionTwo) or 'shared' (nova)")
    memcached = _parse_memcached(raw)
    ha = _parse_ha(raw, region, nodes, services, keystone.node is not None)
    present = frozenset(k for k in SECRET_KEYS if raw.get(k))
    if ha and keystone.node and "controller" not in next(n for n in nodes if n.name == keystone.node).roles:
        raise ConfigError("keystone.node", keystone.node, "a controller: with ha, Keystone runs on every controller "
                                                          "behind the VIP and this node bootstraps it")
    if manager == "systemd" and keystone.node and "controller" not in next(
            n for n in nodes if n.name == keystone.node).roles:
        raise ConfigError("keystone.node", keystone.node, "a controller: Keystone keeps its data in the MariaDB "
                                                          "of the region's controllers")
    admin_openrc = {"true": True, "false": False}.get(str(raw.get("adminOpenrc", "false")).lower())
    if admin_openrc is None:
        raise ConfigError("adminOpenrc", admin_openrc, "true (write the admin's openrc and clouds.yaml, which hold the "
                                                       "admin password, on the controllers) or false (the default)")
    # Every other password is made by the program (servicePassword only overrides).
    needed = [("adminPassword", keystone.node is not None),
              ("sshPrivateKey", bool(nodes))]
    for key, required in needed:
        if required and key not in present:
            raise ConfigError(key, "(unset)", f"a secret: pulumi config set --secret {key} <value>")
    plain_http, tls_given = _parse_tls(raw, manager)
    return Settings(region=region, keystone=keystone, services=services, nodes=nodes,
                    endpoint_address=endpoint_address, node_root=node_root.rstrip("/") or "/",
                    service_manager=manager, service_users=service_users, domains=_parse_domains(raw),
                    virtualenv=virtualenv, memcached_servers=memcached, ha=ha, secrets_present=present,
                    admin_openrc=admin_openrc, compute=_parse_compute(raw), network=_parse_network(raw),
                    password_overrides=_parse_passwords(raw), adopt_untagged=_parse_flag(raw, "adoptUntagged"),
                    plain_http=plain_http, tls_given=tls_given,
                    endpoint_urls=_parse_endpoint_urls(raw, services))


# host, optional port and path; `%(project_id)s` / `%(tenant_id)s` are the only
# substitutions Keystone makes in a catalog URL.
_ENDPOINT_URL = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/([A-Za-z0-9._~/-]|%\((project_id|tenant_id)\)s)*)?$")


def _parse_endpoint_urls(raw: Mapping[str, Any], services: tuple[str, ...]) -> tuple:
    """`endpointUrls: {image: {public: https://images.example.org:9292}}`: only the
    catalog changes; the services still listen where the program runs them. A refused
    value is not shown: a URL may carry credentials."""
    given = _decode("endpointUrls", raw.get("endpointUrls", "{}"))
    types = [t for t in services if t in registry.region_service_types()]
    if not isinstance(given, dict):
        raise ConfigError("endpointUrls", "[not shown]", "a map of service type to a map of interface to URL, e.g. "
                                                         "{image: {public: https://images.example.org:9292}}")
    urls = []
    for service_type, by_interface in given.items():
        key = f"endpointUrls.{service_type}"
        if service_type not in types:
            raise ConfigError(key, "[not shown]",
                              f"a service type of this region: one of {', '.join(types) or '(none configured)'}")
        if not isinstance(by_interface, dict):
            raise ConfigError(key, "[not shown]", f"a map of interface ({', '.join(registry.INTERFACES)}) to URL")
        for interface, url in by_interface.items():
            if interface not in registry.INTERFACES:
                raise ConfigError(f"{key}.{interface}", "[not shown]",
                                  f"an interface: one of {', '.join(registry.INTERFACES)}")
            if not isinstance(url, str) or not _ENDPOINT_URL.match(url):
                raise ConfigError(f"{key}.{interface}", "[not shown]",
                                  "an http:// or https:// URL: a host name or IPv4 address, optional port and path "
                                  "(letters, digits, . _ ~ / - and %(project_id)s), no credentials, query or spaces")
            urls.append(((service_type, interface), url))
    return tuple(sorted(urls))


def _parse_tls(raw: Mapping[str, Any], manager: str) -> tuple[bool, bool]:
    """(plainHttp, whether the operator gives the TLS material). TLS is the default;
    plain HTTP only when the config says so."""
    plain_http = _parse_flag(raw, "plainHttp")
    if manager == "none" and not plain_http:
        raise ConfigError("plainHttp", raw.get("plainHttp", "(unset)"),
                          "true with serviceManager 'none': the supervised sandbox serves plain HTTP")
    given = [k for k in TLS_SECRET_KEYS if raw.get(k)]
    if plain_http and given:
        raise ConfigError(given[0], "[secret]", "unset with plainHttp: true (no TLS, so no certificate)")
    if given and len(given) < len(TLS_SECRET_KEYS):
        missing = next(k for k in TLS_SECRET_KEYS if k not in given)
        raise ConfigError(missing, "(unset)", f"a PEM secret, given together with {', '.join(given)}: "
                                              f"pulumi config set --secret {missing} -- \"$(cat file.pem)\"")
    for key in given:
        if "-----BEGIN " not in str(raw[key]):
            raise ConfigError(key, "[secret]", "PEM text (-----BEGIN ...-----)")
    return plain_http, bool(given)


def raw_stack_config() -> dict[str, Any]:
    """This project's config keys (namespace stripped), as the engine passed them."""
    from pulumi.runtime import config as runtime_config

    merged = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    prefix = NAMESPACE + ":"
    return {k[len(prefix):]: v for k, v in merged.items() if k.startswith(prefix)}


def engine_secret_keys() -> frozenset[str]:
    """This project's config keys the engine holds as secrets (namespace stripped)."""
    from pulumi.runtime import config as runtime_config

    prefix = NAMESPACE + ":"
    return frozenset(k[len(prefix):] for k in runtime_config.get_config_secret_keys_env() if k.startswith(prefix))


def secret(key: str) -> pulumi.Output[str]:
    return pulumi.Config(NAMESPACE).require_secret(key)
