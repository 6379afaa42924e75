"""An in-memory Keystone v3 for the identity providers' unit tests.

It keeps what the real one keeps (extra attributes on every record), filters lists
the way the real one does, answers 409 where the real one has a unique key, and can
lose the answer to a POST after storing the record (what a dropped connection or a
proxy timeout does), so the providers' retry logic meets the real failure. The
engine tests run the same providers against the real Keystone 30.
"""
from __future__ import annotations

import itertools
import uuid
from typing import Any

from keystoneauth1 import exceptions as ks_exc

from components.keystone_api import KeystoneApi, ListingCache

# collection -> (filters Keystone applies, unique key or None)
COLLECTIONS = {
    "regions": ((), ("id",)),
    "services": (("type",), None),
    "endpoints": (("service_id", "interface", "region_id"), None),
    "domains": (("name",), ("name",)),
    "projects": (("name", "domain_id"), ("name", "domain_id")),
    "users": (("name", "domain_id"), ("name", "domain_id")),
    "roles": (("name",), ("name",)),
}


def _http(cls, status: int):
    err = cls(f"HTTP {status}")
    err.http_status = status
    return err


class FakeKeystone:
    def __init__(self, case_insensitive_ids: bool = False):
        self.records: dict[str, dict[str, dict[str, Any]]] = {c: {} for c in COLLECTIONS}
        self.records["domains"]["default"] = {"id": "default", "name": "Default", "enabled": True}
        self.records["roles"]["r-admin"] = {"id": "r-admin", "name": "admin"}
        self.calls: list[tuple[str, str]] = []  # (method, path)
        self.lose_post_answers = 0  # the next N POSTs are stored, then their answer is lost
        self.fail_posts_with_500 = 0  # the next N POSTs fail before storing anything
        self.case_insensitive_ids = case_insensitive_ids  # MariaDB's collation
        self.roles: set[str] = set()
        self.listing_cache = ListingCache()  # KeystoneApi's: one provider process
        self.max_db_limit = 1000  # Keystone cuts user and project lists here, silently
        self._ids = itertools.count(1)

    # --- what tests set up by hand ----------------------------------------------
    def add(self, collection: str, **record: Any) -> dict[str, Any]:
        record.setdefault("id", uuid.uuid4().hex)
        self.records[collection][record["id"]] = dict(record)
        return record

    def of(self, collection: str, **match: Any) -> list[dict[str, Any]]:
        return [r for r in self.records[collection].values() if all(r.get(k) == v for k, v in match.items())]

    def new_run(self) -> None:
        """What the next `pulumi` command sees: a new provider process, no listing yet."""
        self.listing_cache = ListingCache()

    def writes(self) -> list[tuple[str, str]]:
        return [c for c in self.calls if c[0] != "GET" and c[0] != "HEAD"]

    # --- the API the providers use -----------------------------------------------
    def _split(self, path: str) -> tuple[str, str | None]:
        parts = path.strip("/").split("/")
        return parts[0], parts[1] if len(parts) > 1 else None

    def _lookup(self, collection: str, id_: str) -> dict[str, Any]:
        for key, record in self.records[collection].items():
            if key == id_ or (self.case_insensitive_ids and key.lower() == id_.lower()):
                return record
        raise _http(ks_exc.NotFound, 404)

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        self.calls.append(("GET", path))
        collection, id_ = self._split(path)
        member = collection[:-1]
        if id_:
            return {member: dict(self._lookup(collection, id_))}
        filters, _ = COLLECTIONS[collection]
        suffix = params.get("name__iendswith") if collection == "users" else None
        found = [dict(r) for r in self.records[collection].values()
                 if all(k not in params or r.get(k) == params[k] for k in filters)
                 and (suffix is None or str(r.get("name", "")).lower().endswith(suffix.lower()))]
        if collection in ("users", "projects"):
            found = found[:self.max_db_limit]
        return {collection: found}

    def post_once(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("POST", path))
        collection, _ = self._split(path)
        member = collection[:-1]
        if self.fail_posts_with_500:
            self.fail_posts_with_500 -= 1
            raise _http(ks_exc.InternalServerError, 500)
        record = dict(body[member])
        record.setdefault("id", uuid.uuid4().hex)
        _, unique = COLLECTIONS[collection]
        if unique:
            def key(r):
                return tuple(str(r.get(k)).lower() if self.case_insensitive_ids else r.get(k) for k in unique)
            if any(key(r) == key(record) for r in self.records[collection].values()):
                raise _http(ks_exc.Conflict, 409)
        record.pop("password", None)  # never returned
        self.records[collection][record["id"]] = record
        if self.lose_post_answers:
            self.lose_post_answers -= 1
            raise ks_exc.ConnectFailure("Unable to establish connection: connection reset by peer")
        return {member: dict(record)}

    def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("PATCH", path))
        collection, id_ = self._split(path)
        member = collection[:-1]
        record = self._lookup(collection, id_)
        changes = dict(body[member])
        changes.pop("password", None)
        record.update(changes)
        return {member: dict(record)}

    def delete(self, path: str) -> None:
        self.calls.append(("DELETE", path))
        collection, id_ = self._split(path)
        if collection == "projects" and "/users/" in path:
            self.roles.discard(path)
            return
        try:
            record = self._lookup(collection, id_)
        except ks_exc.NotFound:
            return
        if collection == "domains" and record.get("enabled"):
            raise _http(ks_exc.Forbidden, 403)
        del self.records[collection][record["id"]]
        if collection == "services":  # Keystone deletes the service's endpoints too
            for ep in self.of("endpoints", service_id=record["id"]):
                del self.records["endpoints"][ep["id"]]

    def put(self, path: str) -> None:
        self.calls.append(("PUT", path))
        self.roles.add(path)

    def head(self, path: str) -> bool:
        self.calls.append(("HEAD", path))
        return path in self.roles


class FakeApi(KeystoneApi):
    """KeystoneApi's own `create` (the retry logic under test) over the fake."""

    def __init__(self, fake: FakeKeystone):  # noqa: D107 - no session
        self._fake = fake
        self._auth, self._base, self._cache = {}, "fake", fake.listing_cache

    def get(self, path, **params):
        return self._fake.get(path, **params)

    def post_once(self, path, body):
        return self._fake.post_once(path, body)

    def create(self, collection, member, body, find, sleep=lambda s: None):
        return super().create(collection, member, body, find, sleep=sleep)

    def patch(self, path, body):
        return self._fake.patch(path, body)

    def delete(self, path):
        self._fake.delete(path)

    def put(self, path):
        self._fake.put(path)

    def head(self, path):
        return self._fake.head(path)
