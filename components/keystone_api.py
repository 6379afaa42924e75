"""Keystone v3 REST access for the identity dynamic providers.

Sessions are cached per credential for the life of the provider process, so one
`pulumi up` authenticates once instead of once per resource operation. The cache
is module state, so it is never pickled into a resource's provider.

Listings: a lookup by natural key reads one listing per record type and scope (all
regions, this region's endpoints, one domain's users with this region's suffix, ...),
fetched once per provider process and shared by every resource of the run that needs
it (`KeystoneApi.listing`). This process's own creates and deletes are applied to it.
A lookup after a failed or lost POST is always a fresh filtered GET.

Retries: reads, PATCH, PUT and DELETE are repeated by keystoneauth on a lost
connection or a 5xx (repeating them changes nothing). A POST is never repeated
blindly: when its outcome is unknown (connection lost after sending, timeout,
5xx) or Keystone answers 409, `create` first looks the record up by its natural
key (and owner) and only posts again when it is really not there.
"""
from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
import threading
import time
from typing import Any, Callable, Optional

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

NotFound = ks_exc.NotFound
HttpError = ks_exc.HttpError
ConnectFailure = ks_exc.ConnectFailure

_sessions: dict[str, ks_session.Session] = {}
_lock = threading.Lock()

# Keystone cuts a list it does not page: at `list_limit` where set (answering
# `truncated: true`), and users and projects always at `[DEFAULT] max_db_limit` (1000
# rows) without saying so. A listing that may be cut is not used.
LISTING_CAP = 1000


class ListingCache:
    """One provider process's listings, keyed by (credential, URL, collection, filters),
    and its own writes, so that a listing read while this process wrote still shows them.
    Resources asking at once wait for one request (a lock per key)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listings: dict[tuple, tuple[float, Optional[list[dict[str, Any]]]]] = {}  # key -> (read at, records)
        self._key_locks: dict[tuple, threading.Lock] = {}
        self._journal: list[tuple[tuple, dict[str, Any], bool]] = []  # (credential, URL, collection), record, deleted

    def read(self, key: tuple, max_age: Optional[float],
             fetch: Callable[[], Optional[list[dict[str, Any]]]]) -> Optional[list[dict[str, Any]]]:
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                held = self._listings.get(key)
                if held is not None and (max_age is None or time.monotonic() - held[0] <= max_age):
                    return None if held[1] is None else list(held[1])
                written_before = len(self._journal)
            read_at = time.monotonic()
            records = fetch()  # a failure caches nothing
            with self._lock:
                for scope, record, deleted in self._journal[written_before:]:
                    if records is not None and scope == key[:3]:
                        records = _applied(records, record, deleted, dict(key[3]))
                self._listings[key] = (read_at, records)
                return None if records is None else list(records)

    def write(self, scope: tuple, record: dict[str, Any], deleted: bool) -> None:
        with self._lock:
            self._journal.append((scope, record, deleted))
            for key, (read_at, records) in list(self._listings.items()):
                if key[:3] == scope and records is not None:
                    self._listings[key] = (read_at, _applied(records, record, deleted, dict(key[3])))


def _applied(records: list[dict[str, Any]], record: dict[str, Any], deleted: bool,
             params: dict[str, Any]) -> list[dict[str, Any]]:
    kept = [r for r in records if r.get("id") != record.get("id")]
    return kept if deleted or not _listed_by(record, params) else [*kept, record]


_listings = ListingCache()  # this provider process's

# Keys of the `auth` input every identity resource carries; `caCert` (PEM) is the CA
# that verifies an https Keystone.
AUTH_KEYS = ("authUrl", "username", "password", "projectName", "userDomainName", "projectDomainName", "caCert")


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
            # The timeout covers the token request too: a Keystone that accepts
            # connections and never answers fails within it instead of hanging.
            sess = ks_session.Session(auth=plugin, verify=_ca_file(auth.get("caCert") or ""),
                                      timeout=TOKEN_TIMEOUT)
            _sessions[key] = sess
        return sess


_ca_files: dict[str, str] = {}  # CA (sha256) -> this process's own copy


def _ca_file(ca_pem: str) -> Any:
    """requests verifies against a CA file: this process's own copy of `ca_pem`, in a
    directory only it made (0700), never a file that happened to exist (on a shared
    host another user could plant one with an extra CA). True: the system's CAs, for
    a Keystone without `caCert`."""
    if not ca_pem:
        return True
    digest = hashlib.sha256(ca_pem.encode()).hexdigest()
    if digest not in _ca_files:
        directory = tempfile.mkdtemp(prefix="omr-ca-")  # 0700, a new name
        atexit.register(shutil.rmtree, directory, True)  # gone with the process
        path = os.path.join(directory, "ca.pem")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(ca_pem)
        _ca_files[digest] = path
    return _ca_files[digest]


# Transient failures (Keystone restarting, SQLite busy under concurrent writes) are
# retried with backoff: by keystoneauth for requests that are safe to repeat, by
# `create` (look up, then post again) for POSTs.
# Six 5xx retries wait 63 s in all: SQLite-backed Keystones answer "database is locked"
# for a while when several stacks write at once (password writes hold the lock while
# hashing).
_RETRY = {"connect_retries": 5, "status_code_retries": 6, "retriable_status_codes": [500, 502, 503, 504]}
_NO_RETRY = {"connect_retries": 0, "status_code_retries": 0}
# A check at preview only asks: a Keystone that does not answer quickly is skipped
# there (create checks again), so a preview never waits on retries.
_QUICK = {**_NO_RETRY, "timeout": 10}
# POSTs: how often `create` tries, and how long it waits before looking up again.
CREATE_ATTEMPTS = 7
CREATE_BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
REQUEST_TIMEOUT = 60  # seconds for one request: a hung Keystone is an outcome-unknown failure
TOKEN_TIMEOUT = 30  # seconds for a request without its own (the token request)


def outcome_unknown(err: Exception) -> bool:
    """A POST that failed this way may or may not have created the record."""
    return isinstance(err, (ks_exc.ConnectionError, ks_exc.HttpServerError))


def _listed_by(record: dict[str, Any], params: dict[str, Any]) -> bool:
    """Whether Keystone would list `record` with these filters (exact, or `__iendswith`)."""
    for name, value in params.items():
        attr, _, comparator = name.partition("__")
        if comparator == "iendswith":
            if not str(record.get(attr, "")).lower().endswith(str(value).lower()):
                return False
        elif record.get(attr) != value:
            return False
    return True


class KeystoneApi:
    """Thin JSON client for /v3 collections at the configured auth URL.

    `quick=True` (for `check` at preview): no retries and a short timeout."""

    def __init__(self, auth: dict[str, Any], quick: bool = False):
        self._session = session_for(auth)
        self._auth = auth
        self._cache = _listings
        self._base = auth["authUrl"].rstrip("/")
        self._retry = _QUICK if quick else {**_RETRY, "timeout": REQUEST_TIMEOUT}

    def _url(self, path: str) -> str:
        return f"{self._base}/{path.lstrip('/')}"

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return self._session.get(self._url(path), params=params or None, raise_exc=True, **self._retry).json()

    def listing(self, collection: str, max_age: Optional[float] = None,
                **params: Any) -> Optional[list[dict[str, Any]]]:
        """The records of `collection` that Keystone lists with `params`, read once per
        provider process (again when older than `max_age` seconds), with this process's
        own writes applied. None when Keystone may have cut the list: the caller then
        looks each record up alone."""
        def fetch() -> Optional[list[dict[str, Any]]]:
            body = self.get(collection, **params)
            records = body[collection]
            return None if body.get("truncated") or len(records) >= LISTING_CAP else records
        return self._cache.read(self._listing_key(collection, params), max_age, fetch)

    def _listing_key(self, collection: str, params: dict[str, Any]) -> tuple:
        return (_cache_key(self._auth), self._base, collection, tuple(sorted(params.items())))

    def remember(self, collection: str, record: dict[str, Any]) -> None:
        """This process created (or took) `record`: the listings that would list it do."""
        self._cache.write(self._listing_key(collection, {})[:3], record, deleted=False)

    def forget(self, collection: str, id_: str) -> None:
        """This process deleted record `id_`: no listing holds it any more."""
        self._cache.write(self._listing_key(collection, {})[:3], {"id": id_}, deleted=True)

    def post_once(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One POST, never repeated by keystoneauth (see `create`)."""
        return self._session.post(self._url(path), json=body, raise_exc=True, timeout=REQUEST_TIMEOUT,
                                  **_NO_RETRY).json()

    def create(self, collection: str, member: str, body: dict[str, Any],
               find: Callable[..., Optional[dict[str, Any]]],
               sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
        """POST `body` to `collection` and return the created record, idempotently.

        `find(after_conflict)` looks the record up by its natural key and returns it
        when this stack may take it (its owner, or untagged where adoption is
        allowed), None when there is none, and raises when another stack owns it. It
        runs before every repeated POST, so a POST that reached Keystone but whose
        answer was lost, and a record another run created meanwhile (409,
        `after_conflict`), are taken instead of duplicated."""
        last: Optional[Exception] = None
        for attempt in range(CREATE_ATTEMPTS):
            if attempt:
                sleep(CREATE_BACKOFF[min(attempt - 1, len(CREATE_BACKOFF) - 1)])
                found = find()
                if found is not None:
                    return found
            try:
                return self.post_once(collection, {member: body})[member]
            except ks_exc.Conflict:
                # Someone holds the natural key (an earlier attempt of ours, or another
                # run): `find` takes it or names its owner; posting again cannot help.
                found = find(after_conflict=True)
                if found is not None:
                    return found
                raise
            except Exception as err:  # noqa: BLE001 - only outcome-unknown failures are retried
                if not outcome_unknown(err):
                    raise
                last = err
        found = find()
        if found is not None:
            return found
        assert last is not None
        raise last

    def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._session.patch(self._url(path), json=body, raise_exc=True, **self._retry).json()

    def put(self, path: str) -> None:
        self._session.put(self._url(path), raise_exc=True, **self._retry)

    def head(self, path: str) -> bool:
        try:
            self._session.head(self._url(path), raise_exc=True, **self._retry)
            return True
        except NotFound:
            return False

    def delete(self, path: str) -> None:
        try:
            self._session.delete(self._url(path), raise_exc=True, **self._retry)
        except NotFound:
            pass  # already gone: deleting is idempotent
