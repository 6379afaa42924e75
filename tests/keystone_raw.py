"""Keystone's own answers, as raw JSON: the `openstack` CLI's `show` and `list` hide
extra attributes such as the owner, so tests that compare records or read owners
ask the API directly."""
from __future__ import annotations

from typing import Any

from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

OWNER_ATTR = "openstack_multiregion_owner"


def session(admin: dict) -> ks_session.Session:
    """A session for the admin credential of a Keystone stack's `adminAuth` output."""
    return ks_session.Session(auth=v3.Password(
        auth_url=admin["authUrl"], username="admin", password=admin["password"], project_name="admin",
        user_domain_name="Default", project_domain_name="Default"))


def raw(admin: dict, path: str) -> bytes:
    """The body of GET <authUrl>/<path>, byte for byte."""
    url = admin["authUrl"].rstrip("/") + "/" + path.lstrip("/")
    return session(admin).get(url, raise_exc=True).content


def records(admin: dict, collection: str, **params: Any) -> list[dict]:
    url = admin["authUrl"].rstrip("/") + "/" + collection
    return session(admin).get(url, params=params or None, raise_exc=True).json()[collection]


def stack_fqn(stack: str) -> str:
    """How the program names a stack in the owner attribute (local backends' organization)."""
    return f"organization/openstack-multiregion/{stack}"
