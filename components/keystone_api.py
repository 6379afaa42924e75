"""Keystone v3 REST access for the identity dynamic providers.

Sessions are cached per credential for the life of the provider process, so one
`pulumi up` authenticates once instead of once per resource operation. The cache
is module state, so it is never pickled into a resource's provider.
"""
from __future__ import annotations

import hashlib
import threading
from typing import Any

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

NotFound = ks_exc.NotFound
HttpError = ks_exc.HttpError
ConnectFailure = ks_exc.ConnectFailure

_sessions: dict[str, ks_session.Session] = {}
_lock = threading.Lock()

# Keys of the `auth` input every identity resource carries.
AUTH_KEYS = ("authUrl", "username", "password", "projectName", "userDomainName", "projectDomainName")


def _cache_key(auth: dict[str, Any]) -> str:
    return hashlib.sha256("\0".join(str(auth.get(k, "")) for k in AUTH_KEYS).encode()).hexdigest()


def session_for(auth: dict[str, Any]) -> ks_session.Session:
    key = _cache_key(auth)
    with _lock:
        sess = _sessions.get(key)
        if sess is None:
            plugin = v3.Password(
                auth_url=auth["authUrl"],
                username=auth["username"],
                password=auth["password"],
                project_name=auth.get("projectName", "admin"),
                user_domain_name=auth.get("userDomainName", "Default"),
                project_domain_name=auth.get("projectDomainName", "Default"),
            )
            sess = ks_session.Session(auth=plugin)
            _sessions[key] = sess
        return sess


# Transient failures (Keystone restarting, SQLite busy under concurrent writes)
# are retried by keystoneauth with backoff; every call here is safe to repeat,
# and a repeated create is caught by the adopt-on-create lookup.
_RETRY = {"connect_retries": 5, "status_code_retries": 3, "retriable_status_codes": [500, 502, 503, 504]}


class KeystoneApi:
    """Thin JSON client for /v3 collections at the configured auth URL."""

    def __init__(self, auth: dict[str, Any]):
        self._session = session_for(auth)
        self._base = auth["authUrl"].rstrip("/")

    def _url(self, path: str) -> str:
        return f"{self._base}/{path.lstrip('/')}"

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return self._session.get(self._url(path), params=params or None, raise_exc=True, **_RETRY).json()

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._session.post(self._url(path), json=body, raise_exc=True, **_RETRY).json()

    def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._session.patch(self._url(path), json=body, raise_exc=True, **_RETRY).json()

    def put(self, path: str) -> None:
        self._session.put(self._url(path), raise_exc=True, **_RETRY)

    def head(self, path: str) -> bool:
        try:
            self._session.head(self._url(path), raise_exc=True, **_RETRY)
            return True
        except NotFound:
            return False

    def delete(self, path: str) -> None:
        try:
            self._session.delete(self._url(path), raise_exc=True, **_RETRY)
        except NotFound:
            pass  # already gone: deleting is idempotent
