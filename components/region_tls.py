"""TLS material of a stack's nodes: the CA every node and client trusts, and each
controller's server certificate, pushed as files before any service starts.

Where the CA comes from:
- the operator gives `tlsCa`, `tlsCertificate` and `tlsPrivateKey` (secrets, PEM):
  that certificate serves on every controller of the stack (it must name their
  addresses and the VIP);
- otherwise the Keystone stack makes a CA (CertificateAuthority) and exports it
  (`tlsCa`, and its key as the secret `tlsCaKey`); every stack signs its
  controllers' certificates with it, so one CA verifies the whole cloud.

Files on each node (the paths every template names):
- `ca.pem` (0644): the CAs to trust: this stack's, and the shared Keystone's when
  another CA signed it;
- `server.pem` (every node; 0640, group `openstack-tls`): certificate then key, read
  by gunicorn, HAProxy, Apache, MariaDB and RabbitMQ as servers, and presented as a
  client certificate to OVN's databases by neutron and each chassis (its extended key
  usage allows both).

A unit that uses them is restarted when they change (`trigger`), so a rotation
(`pulumi up --replace <the CA's urn>`) reaches exactly the services that use TLS.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi

from components.certificates import Certificate, CertificateAuthority
from components.node import Node, NodeArgs, NodeFile, content_hash
from components.settings import NAMESPACE, NodeSpec, Settings

from components.tls_paths import CA_FILE, SERVER_PEM, TLS_GROUP


@dataclass
class RegionTlsArgs:
    settings: Settings
    ssh_private_key: Optional[pulumi.Input[str]]
    # A region stack: the Keystone stack's CA certificate and key (its outputs).
    keystone_ca: Optional[pulumi.Input[str]] = None
    keystone_ca_key: Optional[pulumi.Input[str]] = None
    depends_on: Sequence[pulumi.Resource] = ()


def server_addresses(settings: Settings, spec: NodeSpec) -> list[str]:
    """What a controller's certificate names: the node, and where the region's
    clients reach it (the VIPs, endpointAddress)."""
    extra = [settings.ha.vip, settings.ha.db_vip] if settings.ha else []
    return list(dict.fromkeys(a for a in (spec.address, *extra, settings.endpoint_address, spec.name) if a))


def ca_bundle(*pems: str) -> str:
    """The distinct certificates of `pems`, one after the other."""
    seen: list[str] = []
    for pem in pems:
        for block in (pem or "").split("-----END CERTIFICATE-----"):
            block = block.strip()
            if block and (cert := block + "\n-----END CERTIFICATE-----\n") not in seen:
                seen.append(cert)
    return "".join(seen)


class RegionTls(pulumi.ComponentResource):
    ca_cert: pulumi.Output[str]  # this stack's CA (PEM)
    ca_key: Optional[pulumi.Output[str]]  # the generated CA's key (Keystone stack only)
    bundle: pulumi.Output[str]  # what every node and client of the stack trusts

    def __init__(self, name: str, args: RegionTlsArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("openstack-multiregion:tls:RegionTls", name, None, opts)
        s = args.settings
        self.ca_key = None
        config = pulumi.Config(NAMESPACE)
        if s.tls_given:
            self.ca_cert = config.require_secret("tlsCa")
            given = pulumi.Output.all(config.require_secret("tlsCertificate"), config.require_secret("tlsPrivateKey"))
            server = {n.name: pulumi.Output.secret(given.apply(lambda v: v[0].strip() + "\n" + v[1].strip() + "\n"))
                      for n in s.nodes}
        else:
            if args.keystone_ca is None:
                ca = CertificateAuthority(f"{name}-ca", f"openstack-multiregion CA of {s.region}",
                                          pulumi.ResourceOptions(parent=self))
                self.ca_cert, self.ca_key = ca.cert, ca.key
            else:
                self.ca_cert = pulumi.Output.from_input(args.keystone_ca)
            signing_key = self.ca_key if args.keystone_ca is None else pulumi.Output.secret(args.keystone_ca_key)
            server = {n.name: self._server_pem(name, s, n, self.ca_cert, signing_key) for n in s.nodes}
        self.bundle = pulumi.Output.all(self.ca_cert, args.keystone_ca or "").apply(lambda v: ca_bundle(*v))
        self._server = server
        self.nodes: dict[str, Node] = {}
        for spec in s.nodes:
            files = [NodeFile(CA_FILE, self.bundle, mode="0644")]
            if spec.name in server:
                files.append(NodeFile(SERVER_PEM, server[spec.name], mode="0640", group=TLS_GROUP))
            self.nodes[spec.name] = Node(f"{name}-{spec.name}", NodeArgs(
                spec=spec, private_key=args.ssh_private_key, root="/", service_manager=s.service_manager,
                files=files, depends_on=list(args.depends_on)), pulumi.ResourceOptions(parent=self))
        self.register_outputs({"nodes": list(self.nodes)})

    def _server_pem(self, name: str, s: Settings, spec: NodeSpec, ca_cert, ca_key) -> pulumi.Output[str]:
        cert = Certificate(f"{name}-{spec.name}", ca_cert, ca_key, spec.name, server_addresses(s, spec),
                           pulumi.ResourceOptions(parent=self))
        return pulumi.Output.secret(pulumi.Output.all(cert.cert, cert.key).apply(lambda v: v[0] + v[1]))

    def ready(self, node: str) -> list[pulumi.Resource]:
        return self.nodes[node].ready if node in self.nodes else []

    @property
    def all_ready(self) -> list[pulumi.Resource]:
        return [r for n in self.nodes.values() for r in n.ready]

    def trigger(self, node: str) -> pulumi.Output[str]:
        """Changes when the node's TLS files change: a restart trigger of the units using them."""
        parts = [self.bundle] + ([self._server[node]] if node in self._server else [])
        return content_hash(pulumi.Output.secret(pulumi.Output.all(*parts).apply("".join)))
