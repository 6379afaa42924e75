"""One secret per purpose, made by the program (kolla-ansible's passwords.yml is the
model): each service user's Keystone password, each database user's password, the
region's RabbitMQ password, the nova/neutron metadata proxy secret, the key that
encrypts the services' token cache in memcached, Horizon's secret key.

Each is its own GeneratedSecret, kept encrypted in this stack's state, stable
across runs, and rotatable alone (`pulumi up --replace <its urn>`). Files are
rendered per node from these values, so a node only ever holds the secrets of the
services it runs: a compute gets nova's Keystone password and RabbitMQ's, and no
database password.

`passwords` (a secret object) gives the operator's own value for any of them, by
purpose (`keystone-nova`, `database-nova`, `rabbitmq`, `metadata-proxy`, ...), e.g. to
keep an existing cloud's; `servicePassword`, when set, is the Keystone password of
every service user (the seeds' one password). With `serviceUsers: shared` the service
users' passwords are the Keystone stack's, read through the StackReference.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi

from components import registry
from components.databases import database_users, region_databases
from components.generated_secret import GeneratedSecret
from components.settings import NAMESPACE, Settings


@dataclass
class RegionSecretsArgs:
    settings: Settings
    # Keystone passwords of the service users when this stack does not make them:
    # servicePassword (one for all), or the Keystone stack's shared users' passwords.
    service_password_override: Optional[pulumi.Input[str]] = None
    shared_service_passwords: Optional[pulumi.Input[dict]] = None
    # The Keystone stack with serviceUsers: shared makes every service user's password.
    all_service_users: bool = False


def service_names_with_users(settings: Settings, all_services: bool = False) -> list[str]:
    entries = registry.SERVICES if all_services else registry.selected(settings.services)
    return [e.name for e in entries if e.user]


class RegionSecrets(pulumi.ComponentResource):
    service_passwords: pulumi.Output[dict]  # service name -> Keystone password
    database_passwords: pulumi.Output[dict]  # database user -> password
    rabbitmq_password: Optional[pulumi.Output[str]]
    metadata_secret: Optional[pulumi.Output[str]]
    memcache_secret_key: Optional[pulumi.Output[str]]  # keystonemiddleware's token cache (with TLS)
    memcached_password: Optional[pulumi.Output[str]]  # memcached's SASL user (with TLS)
    dashboard_secret_key: Optional[pulumi.Output[str]]  # Horizon's Django SECRET_KEY (sessions, CSRF)

    def __init__(self, name: str, args: RegionSecretsArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("openstack-multiregion:secrets:RegionSecrets", name, None, opts)
        s = args.settings
        self.resource_name = name
        self._overrides = s.password_overrides
        services = service_names_with_users(s, args.all_service_users)
        if args.service_password_override is not None:
            override = pulumi.Output.secret(args.service_password_override)
            self.service_passwords = pulumi.Output.secret({svc: override for svc in services})
        elif args.shared_service_passwords is not None:
            shared = pulumi.Output.secret(args.shared_service_passwords)
            self.service_passwords = shared.apply(lambda p: {svc: p[svc] for svc in services if svc in p})
        else:
            self.service_passwords = self._secrets("keystone", services)
        databases = region_databases(s.services, s.hosts_keystone) if (s.nodes or s.ha) else ()
        self.database_passwords = self._secrets("database", database_users(databases))
        entries = registry.selected(s.services)
        self.rabbitmq_password = self._secret("rabbitmq") if any(e.messaging for e in entries) else None
        runs_metadata = {"compute", "network"} & set(s.services)
        self.metadata_secret = self._secret("metadata-proxy") if runs_metadata else None
        self.memcache_secret_key = self._secret("memcache-secret-key") if s.tls and s.nodes else None
        # memcached's SASL password: only the controllers' services hold it.
        self.memcached_password = self._secret("memcached") if s.tls and s.nodes else None
        self.dashboard_secret_key = self._secret("dashboard-secret-key") if "dashboard" in s.services else None
        self.register_outputs({})

    def _secret(self, purpose: str) -> pulumi.Output[str]:
        if purpose in self._overrides:
            given = pulumi.Config(NAMESPACE).require_secret_object("passwords")
            return pulumi.Output.secret(given.apply(lambda p: p[purpose]))
        return GeneratedSecret(f"{self.resource_name}-{purpose}", opts=pulumi.ResourceOptions(parent=self)).value

    def _secrets(self, kind: str, names) -> pulumi.Output[dict]:
        made = {n: self._secret(f"{kind}-{n}") for n in names}
        return pulumi.Output.secret(pulumi.Output.all(**made) if made else {})
