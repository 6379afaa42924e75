"""The databases of a region and their users, from the service registry.

One database user per service (nova owns nova, nova_api and nova_cell0), each with
its own password, allowed in only from the hosts that run the service (the
controllers; through HAProxy the connection arrives from a controller too), never
from '%'. The SQL goes to MariaDB on stdin, so no password is on a command line.
"""
from __future__ import annotations

from typing import Iterable, Mapping
from urllib.parse import quote

from components import registry
from components.registry.context import url_host
from components.registry.model import Database


def region_databases(services: tuple[str, ...], hosts_keystone: bool) -> tuple[Database, ...]:
    """Every database this stack's region keeps (Keystone's in the Keystone stack)."""
    entries = list(registry.selected(services))
    if hosts_keystone:
        entries.insert(0, registry.KEYSTONE)
    return tuple(db for entry in entries for db in entry.databases)


def database_users(databases: Iterable[Database]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(db.user for db in databases))


def sql_string(value: str) -> str:
    """A MariaDB string literal for any text (NO_BACKSLASH_ESCAPES off, the default)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'").replace("\0", "\\0") + "'"


def database_sql(databases: Iterable[Database], passwords: Mapping[str, str], client_hosts: Iterable[str]) -> str:
    """SQL that creates the databases and their users. Running it again changes only
    passwords that changed (ALTER USER is idempotent), and drops no one."""
    databases = tuple(databases)
    hosts = tuple(dict.fromkeys(client_hosts))
    lines = []
    for user in database_users(databases):
        for host in hosts:
            account = f"{sql_string(user)}@{sql_string(host)}"
            lines.append(f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {sql_string(passwords[user])};")
            lines.append(f"ALTER USER {account} IDENTIFIED BY {sql_string(passwords[user])};")
    for db in databases:
        lines.append(f"CREATE DATABASE IF NOT EXISTS `{db.name}`;")
        for host in hosts:
            lines.append(f"GRANT ALL PRIVILEGES ON `{db.name}`.* TO {sql_string(db.user)}@{sql_string(host)};")
    return "\n".join(lines) + "\n"


def database_url(user: str, name: str, password: str, host: str, ca_file: str = "") -> str:
    """SQLAlchemy URL of a MariaDB database. User and password are percent-encoded
    (an `@`, `/` or `%` in a password would otherwise break the URL); an IPv6 host
    is bracketed. With `ca_file`, over TLS, verifying the server with that CA."""
    query = f"?ssl_ca={quote(ca_file)}" if ca_file else ""
    return f"mysql+pymysql://{quote(user, safe='')}:{quote(password, safe='')}@{url_host(host)}/{name}{query}"
