#!/usr/bin/env python3
"""The baseline an operator could write in an afternoon: one openstacksdk process.

    sdk_script.py register REGION ADDRESS   # the region, 18 endpoints, 5 users, their two roles
    sdk_script.py change REGION URL         # the public image endpoint's URL
    sdk_script.py remove REGION             # endpoints, users (and their roles), the region

Objects are made one after another, in the order of seed 000, with one session (one
token), and the same records as the program's catalog-only stack: each service user
gets `admin` and `service` on project `service` (seed 000 gives only `admin`; the
program adds `service`, which `service_token_roles_required` checks), 34 writes. Credentials come from the `OS_*` variables, and each service user's password
from `BENCH_SERVICE_PASSWORD`; nothing secret is on the command line. `bench/run.py`
times the whole process (interpreter start and imports included, as for `pulumi up`).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import openstack  # noqa: E402

from components import registry  # noqa: E402
from components.registry.context import http_url  # noqa: E402

SERVICES = ["image", "network", "compute", "placement", "volumev3"]
ROLES = ("admin", "service")


def connect():
    return openstack.connect(auth_url=os.environ["OS_AUTH_URL"], username=os.environ["OS_USERNAME"],
                             password=os.environ["OS_PASSWORD"], project_name="admin", user_domain_name="Default",
                             project_domain_name="Default", identity_api_version="3")


def user_name(service_type: str, region: str) -> str:
    return f"{registry.service_user(service_type)}-{region}"


def register(conn, region: str, address: str) -> None:
    identity = conn.identity
    service_ids = {s.type: s.id for s in identity.services()}
    identity.create_region(id=region)
    urls = [("identity", os.environ["OS_AUTH_URL"])]
    urls += [(t, http_url(address, registry.catalog_entry(t).port, registry.catalog_entry(t).path)) for t in SERVICES]
    for service_type, url in urls:
        for interface in registry.INTERFACES:
            identity.create_endpoint(service_id=service_ids[service_type], interface=interface, url=url,
                                     region_id=region)
    project = identity.find_project("service", domain_id="default", ignore_missing=False)
    roles = [identity.find_role(name, ignore_missing=False) for name in ROLES]
    password = os.environ["BENCH_SERVICE_PASSWORD"]
    for service_type in SERVICES:
        user = identity.create_user(name=user_name(service_type, region), domain_id="default", password=password)
        for role in roles:
            identity.assign_project_role_to_user(project, user, role)


def change(conn, region: str, url: str) -> None:
    image = next(conn.identity.services(type="image"))
    [endpoint] = list(conn.identity.endpoints(region_id=region, service_id=image.id, interface="public"))
    conn.identity.update_endpoint(endpoint, url=url)


def remove(conn, region: str) -> None:
    identity = conn.identity
    for endpoint in list(identity.endpoints(region_id=region)):
        identity.delete_endpoint(endpoint)
    for service_type in SERVICES:
        user = identity.find_user(user_name(service_type, region), domain_id="default")
        if user is not None:
            identity.delete_user(user)  # Keystone removes its role assignments with it
    identity.delete_region(region)


def main(argv: list[str]) -> int:
    action, region, *rest = argv
    conn = connect()
    {"register": lambda: register(conn, region, rest[0]), "change": lambda: change(conn, region, rest[0]),
     "remove": lambda: remove(conn, region)}[action]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
