"""A certificate authority and the server certificates it signs, made by the program
and kept as Pulumi secrets (the stand-in for the `tls` provider, whose plugin cannot
be built here; see README "Toolchain").

Keys are ECDSA P-256. Each resource is made once and then stable; a changed input
(another CA, another address) makes a new one. Rotation is a normal `pulumi up`:
`pulumi up --replace <the CA's urn>` makes a new CA, every certificate it signed
follows, and the nodes get the new files.
"""
from __future__ import annotations

import datetime
import ipaddress
import uuid
from typing import Optional, Sequence

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider

CA_DAYS = 3650
SERVER_DAYS = 825  # the longest validity browsers accept for a server certificate


def _new_key():
    from cryptography.hazmat.primitives.asymmetric import ec
    return ec.generate_private_key(ec.SECP256R1())


def _pem(cert) -> str:
    from cryptography.hazmat.primitives import serialization
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key) -> str:
    from cryptography.hazmat.primitives import serialization
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _name(common_name: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "openstack-multiregion"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject, issuer, public_key, days: int):
    from cryptography import x509
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))  # clocks of nodes differ a little
            .not_valid_after(now + datetime.timedelta(days=days)))


def new_ca(common_name: str) -> tuple[str, str]:
    """(certificate PEM, key PEM) of a new self-signed CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    key = _new_key()
    name = _name(common_name)
    cert = (_builder(name, name, key.public_key(), CA_DAYS)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return _pem(cert), _key_pem(key)


def subject_alternative_names(addresses: Sequence[str]):
    from cryptography import x509
    names = []
    for address in dict.fromkeys(addresses):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            names.append(x509.DNSName(address))
    return x509.SubjectAlternativeName(names)


def new_server_certificate(ca_cert_pem: str, ca_key_pem: str, common_name: str,
                           addresses: Sequence[str]) -> tuple[str, str]:
    """(certificate PEM, key PEM) for a server answering on `addresses` (IPs or names)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), password=None)
    key = _new_key()
    cert = (_builder(_name(common_name), ca_cert.subject, key.public_key(), SERVER_DAYS)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(subject_alternative_names(addresses), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return _pem(cert), _key_pem(key)


def _replace_on(keys: Sequence[str], olds: dict, news: dict) -> DiffResult:
    changed = [k for k in keys if olds.get(k) != news.get(k)]
    return DiffResult(changes=bool(changed), replaces=changed, delete_before_replace=False)


class _CaProvider(ResourceProvider):
    def create(self, props):
        cert, key = new_ca(props["commonName"])
        return CreateResult(f"ca-{uuid.uuid4()}", {"commonName": props["commonName"], "cert": cert, "key": key})

    def diff(self, id_, olds, news):
        return _replace_on(["commonName"], olds, news)


class CertificateAuthority(Resource, module="tls", name="CertificateAuthority"):
    """A self-signed CA: `cert` (PEM, public) and `key` (PEM, secret)."""

    cert: pulumi.Output[str]
    key: pulumi.Output[str]

    def __init__(self, name: str, common_name: str, opts: Optional[pulumi.ResourceOptions] = None):
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["key"]))
        super().__init__(_CaProvider(), name, {"commonName": common_name, "cert": None, "key": None}, opts)


_CERT_INPUTS = ["caCert", "commonName", "addresses"]


class _CertificateProvider(ResourceProvider):
    def create(self, props):
        cert, key = new_server_certificate(props["caCert"], props["caKey"], props["commonName"], props["addresses"])
        return CreateResult(f"cert-{uuid.uuid4()}", {**{k: props[k] for k in _CERT_INPUTS}, "cert": cert,
                                                    "key": key})

    def diff(self, id_, olds, news):
        # The CA's key is not compared: it changes only with the CA's certificate.
        return _replace_on(_CERT_INPUTS, olds, news)


class Certificate(Resource, module="tls", name="Certificate"):
    """A server certificate signed by the CA (`ca_cert`, `ca_key`) for `addresses`."""

    cert: pulumi.Output[str]
    key: pulumi.Output[str]

    def __init__(self, name: str, ca_cert: pulumi.Input[str], ca_key: pulumi.Input[str], common_name: str,
                 addresses: Sequence[str], opts: Optional[pulumi.ResourceOptions] = None):
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["key"]))
        super().__init__(_CertificateProvider(), name, {
            "caCert": ca_cert, "caKey": pulumi.Output.secret(ca_key), "commonName": common_name,
            "addresses": list(addresses), "cert": None, "key": None}, opts)
