"""The values every service's templates draw on: the region, the shared Keystone,
the region's own memcached, RabbitMQ and databases, and one node.

Pure Python (no Pulumi). The wiring that makes a region a region of ONE shared
Keystone (seed 000) lives in `keystoneauth`: every section that authenticates
points at the shared Keystone and names THIS region, so no service ever picks
another region's endpoint from the shared catalog.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Mapping


MEMCACHED_USER = "openstack"  # the region's services' memcached (SASL) user


@dataclass(frozen=True)
class RegionContext:
    region: str  # e.g. "RegionTwo"
    keystone_url: str  # shared Keystone base, e.g. "http://192.168.80.83:5000" (no /v3)
    controller_address: str  # the region's controller (or VIP), where its APIs answer
    memcached_servers: str  # "192.168.80.85:11211" (comma-separated list for HA)
    transport_url: str  # "rabbit://openstack:PASS@192.168.80.85:5672/" (a secret)
    database_connections: Mapping[str, str]  # database name ("nova_api") -> SQLAlchemy URL (secrets)
    service_users: Mapping[str, str]  # service ("nova") -> its Keystone user ("nova-RegionTwo")
    service_passwords: Mapping[str, str]  # service ("nova") -> that user's password (secrets)
    first_controller: str = ""  # the first controller's own address (OVN's central databases)
    admin_password: str = ""  # only where an admin openrc / clouds.yaml is asked for (a secret)
    metadata_secret: str = ""  # nova <-> neutron metadata proxy secret
    dashboard_url: str = ""  # the admin region's Horizon, for the redirect page
    regions: tuple[str, ...] = ()  # every region name, for Horizon/clouds.yaml
    state_root: str = ""  # prefix of state/lock/data dirs (the node root when not "/")
    virt_type: str = "kvm"  # libvirt virt_type on computes; seed 000 uses "qemu" (no VT-x)
    compute_driver: str = "libvirt"  # or "fake" (test beds: servers without guests)
    ovs_datapath: str = "system"  # Open vSwitch datapath: "system" (kernel) or "netdev" (userspace)
    volume_backend: str = "none"  # cinder-volume's backend: "none" (no volume service) or "lvm"
    venv: str = "/opt/openstack/venv"  # the OpenStack services' Python environment on the nodes
    # TLS (components/region_tls.py): the CA file every client verifies with, and this
    # node's certificate and key in one file; "" with plainHttp.
    ca_file: str = ""
    server_pem: str = ""
    memcache_secret_key: str = ""  # keystonemiddleware's token cache: encrypted and signed with it
    node_pem: str = ""  # every node's own certificate and key (TLS clients: OVN's databases)
    # memcached's SASL password (user MEMCACHED_USER): memcached answers no client without
    # it; "" with plainHttp (the loopback sandbox).
    memcached_password: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    # --- URLs -------------------------------------------------------------------
    @property
    def keystone_base(self) -> str:
        url = self.keystone_url.rstrip("/")
        if url.endswith("/v3"):
            raise ValueError(f"keystone_url {self.keystone_url!r}: give the Keystone base URL, without /v3")
        return url

    @property
    def keystone_v3(self) -> str:
        return self.keystone_base + "/v3"

    def api_url(self, port: int, path: str = "") -> str:
        """An API of this region, on its controller or VIP."""
        return http_url(self.controller_address, port, path, self.scheme)

    def node_url(self, node: "NodeContext", port: int) -> str:
        """An API on the node itself (HTTPS when the node serves TLS, not HAProxy)."""
        return http_url(node.address, port, "", "https" if self.server_pem else "http")

    @property
    def scheme(self) -> str:
        return "https" if self.ca_file else "http"

    def state_dir(self, path: str) -> str:
        return self.state_root.rstrip("/") + path

    # --- the shared Keystone, named region ----------------------------------------
    def keystoneauth(self, service: str) -> dict[str, str]:
        """One keystoneauth section (templates/macros.j2) for `service`'s own user."""
        return present({
            "auth_url": self.keystone_v3,
            "username": self.service_users.get(service),
            "password": self.service_passwords.get(service),
            "region_name": self.region,
            "cafile": self.ca_file,
        })

    def authtoken(self, service: str, shared_cache: bool = True) -> dict[str, str]:
        """[keystone_authtoken]: the shared Keystone, this region's memcached (or, with
        `shared_cache=False`, keystonemiddleware's cache in the process)."""
        auth = {**self.keystoneauth(service), "www_authenticate_uri": self.keystone_base}
        if not shared_cache:
            return auth
        return {**auth, **present({
            "memcached_servers": self.memcached_servers,
            "memcache_secret_key": self.memcache_secret_key,
        }), **self.memcached_sasl}

    @property
    def memcached_sasl(self) -> dict[str, str]:
        """The memcached user and password (SASL), for every memcached client section."""
        if not self.memcached_password:
            return {}
        return {"memcached_user": MEMCACHED_USER, "memcached_password": self.memcached_password}

    @property
    def messaging_tls(self) -> dict[str, str]:
        """[oslo_messaging_rabbit]'s TLS options (empty with plainHttp)."""
        return present({"ssl_ca_file": self.ca_file})


@dataclass(frozen=True)
class NodeContext:
    address: str
    roles: tuple[str, ...]
    host: str = ""  # the node's name: nova-compute's and OVN's host name

    @property
    def controller(self) -> bool:
        return "controller" in self.roles

    @property
    def compute(self) -> bool:
        return "compute" in self.roles


def http_url(host: str, port: int, path: str = "", scheme: str = "http") -> str:
    if not host:
        return ""
    return f"{scheme}://{url_host(host)}:{port}{path}"


def url_host(host: str) -> str:
    """A host as it goes in a URL: IPv6 addresses in brackets."""
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host  # a host name


def present(values: Mapping[str, Any]) -> dict[str, Any]:
    """Drop missing values (None or ""), so StrictUndefined names them."""
    return {k: v for k, v in values.items() if v is not None and v != ""}


def only_on_controller(node: NodeContext, values: Mapping[str, Any]) -> dict[str, Any]:
    """Values only a controller's file uses (a compute holds no database password)."""
    return dict(values) if node.controller else {}
