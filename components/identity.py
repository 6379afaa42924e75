"""Keystone identity records as Pulumi resources (dynamic providers on Keystone's v3 API).

Each record type is one `_Record` provider plus a thin `pulumi.dynamic.Resource`.
They share the rules an operator relies on when many stacks share one Keystone:

- **Ownership.** Every record a stack creates carries its owner, the stack's fully
  qualified name (`org/project/stack`), in the extra attribute `OWNER_ATTR`, which
  Keystone keeps on regions, services, endpoints, domains, projects and users.
- **Adoption.** Create looks the record up by its natural key first (region id,
  compared case-insensitively; service type+name; endpoint service+interface+region;
  name in its domain) and takes an existing record only when this stack owns it (a
  rerun after an interruption converges), or when it is untagged and the stack
  allows that (`adoptUntagged`, or the records of the Keystone stack's own
  `keystone-manage bootstrap`). A record another stack owns, or an untagged one
  without the opt-in, stops `preview` (`check`) and `up` before any change, naming
  the owner. An untagged domain is never taken over: with `adoptUntagged` it is used
  as it is and never changed, disabled or deleted.
- **Nothing foreign is deleted.** Delete (and a domain's disable) only touches a
  record whose owner attribute is this stack; create never deletes anything.
- **Credentials are stored, not compared.** A change of only `auth` (admin password
  rotated, Keystone moved) is an update that stores the new credential without a
  Keystone request, so later refreshes and destroys use it.
- read (refresh) reports out-of-band changes and deletions; delete is idempotent;
  creates are idempotent (`KeystoneApi.create`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import pulumi
from pulumi.dynamic import (CheckFailure, CheckResult, CreateResult, DiffResult, ReadResult, Resource,
                            ResourceProvider, UpdateResult)
from pulumi.output import Unknown
from pulumi.runtime.rpc import UNKNOWN

from components.keystone_api import KeystoneApi

# The extra attribute that names a record's owner: `org/project/stack`.
OWNER_ATTR = "openstack_multiregion_owner"
# In a record's state: the owner a refresh found in Keystone when it is another stack.
FOREIGN_OWNER = "foreign_owner"
# Inputs that only say how to reach Keystone: a change is stored, never written.
CREDENTIAL_KEYS = ("auth",)
# A delete decides whose record it is from a listing at most this old (seconds).
DELETE_LISTING_AGE = 10.0


class OwnershipError(Exception):
    """A record this stack may not take; the message names its owner (never a secret)."""


# --- the stack's ownership policy ------------------------------------------------

@dataclass(frozen=True)
class Ownership:
    """Who owns what this stack creates, and which existing records it may take.

    `bootstrap_region`: set on the stack that hosts Keystone. Its own `keystone-manage
    bootstrap` step creates that region, the `identity` service `keystone` and the
    region's identity endpoints, untagged; this stack takes those (and tags them)
    without `adoptUntagged`."""

    owner: str
    adopt_untagged: bool = False
    bootstrap_region: Optional[str] = None


_policy: Optional[Ownership] = None


def stack_owner() -> str:
    """This stack's fully qualified name, as StackReferences spell it."""
    return f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}"


def set_ownership(policy: Ownership) -> None:
    """Set once by the program, before any identity resource is declared."""
    global _policy
    _policy = policy


def ownership() -> Ownership:
    return _policy if _policy is not None else Ownership(owner=stack_owner())


def _ownership_props(policy: Optional[Ownership]) -> dict[str, Any]:
    policy = policy or ownership()
    return {"owner": policy.owner, "adopt_untagged": policy.adopt_untagged,
            "bootstrap_region": policy.bootstrap_region}


def _known(value: Any) -> bool:
    # Inside a provider an unknown value (preview) arrives as an `Unknown` instance.
    if isinstance(value, Unknown) or (isinstance(value, str) and value == UNKNOWN):
        return False
    if isinstance(value, dict):
        return all(_known(v) for v in value.values())
    if isinstance(value, list):
        return all(_known(v) for v in value)
    return True


def _status(err: Exception) -> Optional[int]:
    return getattr(err, "http_status", None)


# --- the shared provider ---------------------------------------------------------

class _Record(ResourceProvider):
    collection = ""  # e.g. "regions"
    member = ""  # e.g. "region"
    kind = ""  # e.g. "region", in messages
    fields: dict[str, str] = {}  # our property -> Keystone attribute
    key_fields: tuple[str, ...] = ()  # the natural key
    replace_on: tuple[str, ...] = ()  # properties Keystone cannot change in place

    # --- hooks -----------------------------------------------------------------
    def create_body(self, props: dict[str, Any]) -> dict[str, Any]:
        return {attr: props[prop] for prop, attr in self.fields.items() if props.get(prop) is not None}

    def listing_filters(self, props: dict[str, Any]) -> dict[str, Any]:
        """Keystone's filters for the listing this record's lookup shares with the
        other records of its kind in this run (this region's endpoints, ...)."""
        return {}

    def lookup_filters(self, props: dict[str, Any]) -> dict[str, Any]:
        """Keystone's filters for a fresh lookup of this record alone."""
        return {}

    def is_same(self, record: dict[str, Any], props: dict[str, Any]) -> bool:
        """Whether `record` has this record's natural key (Keystone's filters are a
        first cut: the exact key is what makes it the same record)."""
        return False

    def find_existing(self, api: KeystoneApi, props: dict[str, Any], fresh: bool = False) -> list[dict[str, Any]]:
        """Records with this record's natural key: from the run's shared listing, or
        `fresh` from Keystone (after a POST whose outcome is unknown, or a 409)."""
        found = None if fresh else api.listing(self.collection, **self.listing_filters(props))
        if found is None:  # fresh, or a listing Keystone may have cut
            found = api.get(self.collection, **self.lookup_filters(props))[self.collection]
        return [r for r in found if self.is_same(r, props)]

    def describe(self, props: dict[str, Any]) -> str:
        return f"Keystone {self.kind} {props.get(self.key_fields[0])}"

    def made_by_bootstrap(self, api: KeystoneApi, props: dict[str, Any], record: dict[str, Any]) -> bool:
        """Whether `record` is one that the Keystone stack's own bootstrap step creates."""
        return False

    def use_untagged(self, props: dict[str, Any]) -> bool:
        """True: an untagged record is used as it is and never changed (domains)."""
        return False

    def before_delete(self, api: KeystoneApi, id_: str) -> None:
        pass

    # --- ownership ---------------------------------------------------------------
    def refuse_foreign(self, props: dict[str, Any], record: dict[str, Any]) -> str:
        return (f"{self.describe(props)} belongs to stack {record[OWNER_ATTR]}: this stack ({props['owner']}) "
                f"never adopts, changes or deletes another stack's records")

    def refuse_untagged(self, props: dict[str, Any], record: dict[str, Any]) -> str:
        return (f"{self.describe(props)} already exists in Keystone (id {record.get('id')}) without an owner "
                f"attribute ({OWNER_ATTR}): it was made outside this program. Set openstack-multiregion:"
                f"adoptUntagged to true to take it over, or remove it")

    def choose(self, api: KeystoneApi, props: dict[str, Any],
               candidates: list[dict[str, Any]]) -> tuple[Optional[dict[str, Any]], Optional[str]]:
        """(record to take, None), (None, None) when there is none, or (None, why not)."""
        candidates = sorted(candidates, key=lambda c: str(c.get("id")))
        mine = [c for c in candidates if c.get(OWNER_ATTR) == props["owner"]]
        if mine:
            return mine[0], None
        foreign = [c for c in candidates if c.get(OWNER_ATTR)]
        if foreign:
            return None, self.refuse_foreign(props, foreign[0])
        for record in candidates:
            if props.get("adopt_untagged") or self.made_by_bootstrap(api, props, record):
                return record, None
        if candidates:
            return None, self.refuse_untagged(props, candidates[0])
        return None, None

    def _find(self, api: KeystoneApi, props: dict[str, Any], fresh: bool = False) -> Optional[dict[str, Any]]:
        record, refusal = self.choose(api, props, self.find_existing(api, props, fresh))
        if refusal:
            raise OwnershipError(refusal)
        return record

    def ownership_failures(self, olds: dict[str, Any], news: dict[str, Any]) -> list[CheckFailure]:
        """At preview: a create (or a new natural key) that would meet a record this
        stack may not take fails here, before any change. Only then is Keystone asked,
        so a preview without creates makes no request."""
        if olds.get(FOREIGN_OWNER):  # found by a refresh: another stack holds it now
            held = {"id": olds.get(self.key_fields[0]), OWNER_ATTR: olds[FOREIGN_OWNER]}
            return [CheckFailure(self.key_fields[0], self.refuse_foreign(news, held))]
        creating = not olds or any(olds.get(k) != news.get(k) for k in self.key_fields)
        needed = {k: news.get(k) for k in ("auth", "owner", "adopt_untagged", *self.key_fields)}
        if not creating or not _known(needed):
            return []
        try:
            api = KeystoneApi(news["auth"], quick=True)
            _, refusal = self.choose(api, news, self.find_existing(api, news))
        except Exception:  # noqa: BLE001 - Keystone unreachable at preview: create checks again
            return []
        return [CheckFailure(self.key_fields[0], refusal)] if refusal else []

    @staticmethod
    def _owned(props: dict[str, Any], live: dict[str, Any]) -> bool:
        return bool(props.get("owner")) and live.get(OWNER_ATTR) == props["owner"]

    # --- helpers ---------------------------------------------------------------
    def _outs(self, props: dict[str, Any], obj: dict[str, Any], managed: bool = True) -> dict[str, Any]:
        outs = dict(props, managed=managed)
        for prop, attr in self.fields.items():
            if attr in obj:
                outs[prop] = obj[attr]
        return outs

    def _field_changes(self, olds: dict[str, Any], news: dict[str, Any]) -> list[str]:
        if not olds.get("managed", True):  # used as it is: only another record matters
            return [k for k in self.key_fields if olds.get(k) != news.get(k)]
        return [k for k in self.fields if olds.get(k) != news.get(k)]

    def _stored(self, olds: dict[str, Any], news: dict[str, Any]) -> dict[str, Any]:
        """The stored outputs with this run's non-Keystone inputs (credentials)."""
        outs = dict(olds)
        outs.update({k: v for k, v in news.items() if k not in self.fields})
        return outs

    def _patch(self, api: KeystoneApi, id_: str, props: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
        changes = {attr: props[prop] for prop, attr in self.fields.items()
                   if prop not in self.replace_on and props.get(prop) is not None and live.get(attr) != props[prop]}
        if not changes:
            return live
        return api.patch(f"{self.collection}/{id_}", {self.member: changes})[self.member]

    def _live_for_update(self, olds: dict[str, Any], news: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
        return live

    # --- provider protocol -----------------------------------------------------
    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        return CheckResult(news, self.ownership_failures(olds, news))

    def create(self, props: dict[str, Any]) -> CreateResult:
        api = KeystoneApi(props["auth"])
        taken: list[tuple[dict[str, Any], bool]] = []  # (record found, after a 409)

        def find(after_conflict: bool = False, fresh: bool = True) -> Optional[dict[str, Any]]:
            record = self._find(api, props, fresh)
            if record is not None:
                taken.append((record, after_conflict))
            return record

        existing = find(fresh=False)
        if existing is None:
            obj = api.create(self.collection, self.member, self.create_body(props), find)
            api.remember(self.collection, obj)
            found = next((conflict for record, conflict in taken if record is obj), None)
            if found is None or (not found and obj.get(OWNER_ATTR) == props["owner"]):
                # Posted, or found after a post whose answer was lost: it is what we
                # sent (no other run of this stack runs now), so nothing to write again.
                # Found after a 409, it is an earlier run's and may differ: patched below.
                return CreateResult(obj["id"], self._outs(props, obj))
        else:
            obj = existing
        # An existing record: ours from an earlier run, or one we may take.
        if self.use_untagged(props) and not obj.get(OWNER_ATTR):
            return CreateResult(obj["id"], self._outs(props, obj, managed=False))
        obj = self._patch(api, obj["id"], props, obj)
        return CreateResult(obj["id"], self._outs(props, obj))

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = self._field_changes(olds, news)
        replaces = [k for k in changed if k in self.replace_on or not olds.get("managed", True)]
        stale = [k for k in CREDENTIAL_KEYS if olds.get(k) != news.get(k)]
        foreign = bool(olds.get(FOREIGN_OWNER))  # update refuses it, naming the owner
        return DiffResult(changes=bool(changed or stale or foreign), replaces=replaces, delete_before_replace=True)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        if not self._field_changes(olds, news) and not olds.get(FOREIGN_OWNER):
            return UpdateResult(self._stored(olds, news))  # only credentials: stored, Keystone not asked
        api = KeystoneApi(news["auth"])
        live = api.get(f"{self.collection}/{id_}")[self.member]
        # Ours under this name, or under the name the state recorded (a renamed stack
        # re-tags its records); any other owner took it meanwhile.
        holder = live.get(OWNER_ATTR) or olds.get(FOREIGN_OWNER)
        if holder and (olds.get(FOREIGN_OWNER) or holder not in (news["owner"], olds.get("owner"))):
            raise OwnershipError(self.refuse_foreign(news, dict(live, **{OWNER_ATTR: holder})))
        live = self._live_for_update(olds, news, live)
        return UpdateResult(self._outs(news, self._patch(api, id_, news, live)))

    def _live(self, api: KeystoneApi, id_: str, props: dict[str, Any],
              max_age: Optional[float] = None) -> Optional[dict[str, Any]]:
        """Record `id_` as Keystone holds it, None when it is gone: from the run's shared
        listing (read at most `max_age` seconds ago), or, when the listing does not hold
        it, from a GET of its own."""
        listing = api.listing(self.collection, max_age=max_age, **self.listing_filters(props))
        listed = [r for r in listing or [] if r.get("id") == id_]
        if listed:
            return listed[0]
        try:
            return api.get(f"{self.collection}/{id_}")[self.member]
        except Exception as err:  # noqa: BLE001 - only "not found" means deleted
            if _status(err) == 404:
                return None
            raise

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        api = KeystoneApi(props["auth"])
        obj = self._live(api, id_, props)
        if obj is None:
            return ReadResult(None, {})
        if not props.get("managed", True):
            return ReadResult(id_, props, props)
        outs = self._outs(props, obj)
        outs.pop(FOREIGN_OWNER, None)
        live_owner = obj.get(OWNER_ATTR)
        if live_owner and props.get("owner") and live_owner != props["owner"]:
            # Another stack registered this record since (say it was deleted by hand and
            # re-registered by stack B): a refresh never makes it this stack's. The state
            # keeps this stack as owner and notes the live one, so `up` stops naming it
            # and `destroy` skips the record.
            outs["owner"] = props["owner"]
            outs[FOREIGN_OWNER] = live_owner
        return ReadResult(id_, outs, outs)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        if not props.get("managed", True):
            return  # used, never owned: left as it is
        api = KeystoneApi(props["auth"])
        # Whose record it is, read right before deleting: a listing from earlier in a
        # long `up` could predate another stack registering the same id since.
        live = self._live(api, id_, props, max_age=DELETE_LISTING_AGE)
        if live is None or not self._owned(props, live):
            return  # gone, or not (or no longer) this stack's: never deleted nor disabled
        self.before_delete(api, id_)
        api.delete(f"{self.collection}/{id_}")
        api.forget(self.collection, id_)


# --- Region -------------------------------------------------------------------

VRRP_CONFIG_KEYS = {"api": ("ha.virtualRouterId", "ha.vip"), "db": ("ha.dbVirtualRouterId", "ha.dbVip")}


def vrrp_collision(regions: list[dict[str, Any]], region_id: str, claims: list[dict[str, Any]]) -> Optional[str]:
    """Why `claims` (this region's VRRP instances) collide with another region's, or None.

    keepalived instances with one virtual_router_id on one subnet fight over the VIP,
    and so do two regions announcing the same VIP, whichever router id they use."""
    for claim in claims:
        vrid_key, vip_key = VRRP_CONFIG_KEYS[claim["instance"]]
        vrid = int(claim["virtual_router_id"])
        for other in regions:
            if other.get("id") == region_id:
                continue
            theirs = [c for c in other.get("vrrp_router_ids") or [] if isinstance(c, dict)]
            if any(c.get("vip") == claim["vip"] for c in theirs):
                return (f"config openstack-multiregion:{vip_key} = {claim['vip']}: expected an address no other "
                        f"region announces; region {other['id']} already uses it as a VIP")
            on_subnet = [c for c in theirs if c.get("subnet") == claim["subnet"]]
            if any(int(c.get("virtual_router_id", 0)) == vrid for c in on_subnet):
                taken = sorted(int(c["virtual_router_id"]) for c in on_subnet)
                return (f"config openstack-multiregion:{vrid_key} = {vrid}: expected a VRRP router id that no "
                        f"other region uses on {claim['subnet']}; region {other['id']} uses "
                        f"{', '.join(map(str, taken))} there")
    return None


def _with_integer_router_ids(props: dict[str, Any]) -> dict[str, Any]:
    # Numbers reach a dynamic provider as floats; Keystone should record 51, not 51.0.
    claims = [dict(c, virtual_router_id=int(c["virtual_router_id"])) for c in props.get("vrrp_router_ids") or []]
    return dict(props, vrrp_router_ids=claims)


class _RegionProvider(_Record):
    collection, member, kind = "regions", "region", "region"
    fields = {"region_id": "id", "description": "description", "parent_region_id": "parent_region_id",
              "vrrp_router_ids": "vrrp_router_ids", "owner": OWNER_ATTR}
    key_fields = ("region_id",)
    replace_on = ("region_id",)

    # Region ids: Keystone on MariaDB compares them case-insensitively, so RegionTwo
    # and regiontwo are one region there; they are one region id here everywhere.
    def is_same(self, record, props):
        return str(record.get("id", "")).lower() == props["region_id"].lower()

    def choose(self, api, props, candidates):
        rid = props["region_id"]
        other_case = [c for c in candidates if c["id"] != rid]
        if other_case:
            held = other_case[0]
            if held.get(OWNER_ATTR) and held[OWNER_ATTR] != props["owner"]:
                return None, self.refuse_foreign(props, held)
            return None, (f"config openstack-multiregion:region = {rid}: expected a region id that Keystone does not "
                          f"already hold in another case; it has {held['id']} (owner: "
                          f"{held.get(OWNER_ATTR) or 'none, made outside this program'}), and Keystone on MariaDB "
                          f"compares region ids case-insensitively")
        return super().choose(api, props, candidates)

    def refuse_foreign(self, props, record):
        return (f"config openstack-multiregion:region = {props['region_id']}: expected a region id no other stack "
                f"registered (compared case-insensitively); stack {record[OWNER_ATTR]} already registered "
                f"{record['id']}")

    def refuse_untagged(self, props, record):
        return (f"config openstack-multiregion:region = {props['region_id']}: expected a region this stack "
                f"creates; Keystone already has {record['id']}, made outside this program (no {OWNER_ATTR} "
                f"attribute). Set openstack-multiregion:adoptUntagged to true to take it over")

    def made_by_bootstrap(self, api, props, record):
        return bool(props.get("bootstrap_region")) and record["id"] == props["bootstrap_region"]

    # VRRP router ids are checked against the other regions' records in the shared
    # Keystone: at preview (check) and again right before writing (create/update),
    # so a stack deployed meanwhile, or `up --skip-preview`, cannot slip through.
    def check(self, olds, news):
        failures = self.ownership_failures(olds, news)
        claims = news.get("vrrp_router_ids") or []
        if failures or not claims or not _known(news.get("auth")) or not _known(claims) \
                or not _known(news.get("region_id")):
            return CheckResult(news, failures)
        try:
            regions = KeystoneApi(news["auth"], quick=True).get("regions")["regions"]
        except Exception:  # noqa: BLE001 - Keystone unreachable at preview: create/update check again
            return CheckResult(news, [])
        clash = vrrp_collision(regions, news["region_id"], claims)
        return CheckResult(news, [CheckFailure("vrrp_router_ids", clash)] if clash else [])

    def _refuse_collisions(self, props: dict[str, Any]) -> None:
        if not props["vrrp_router_ids"]:
            return
        regions = KeystoneApi(props["auth"]).get("regions")["regions"]
        clash = vrrp_collision(regions, props["region_id"], props["vrrp_router_ids"])
        if clash:
            raise ValueError(clash)

    def create(self, props):
        props = _with_integer_router_ids(props)
        self._refuse_collisions(props)
        return super().create(props)

    def update(self, id_, olds, news):
        news = _with_integer_router_ids(news)
        if self._field_changes(olds, news):
            self._refuse_collisions(news)
        return super().update(id_, olds, news)

    def create_body(self, props):
        body = super().create_body(props)
        body.setdefault("description", "")
        return body


class Region(Resource, module="keystone", name="Region"):
    """A Keystone region. pulumi-openstack has no such resource, and its endpoint
    resource auto-creates regions that nothing deletes; this one is owned explicitly."""

    region_id: pulumi.Output[str]

    def __init__(self, name: str, auth: pulumi.Input[dict], region_id: pulumi.Input[str],
                 description: pulumi.Input[str] = "", parent_region_id: Optional[pulumi.Input[str]] = None,
                 vrrp_router_ids: pulumi.Input[list] = (), opts: Optional[pulumi.ResourceOptions] = None,
                 ownership: Optional[Ownership] = None):
        super().__init__(_RegionProvider(), name, {
            "auth": auth, "region_id": region_id, "description": description,
            "parent_region_id": parent_region_id, "vrrp_router_ids": list(vrrp_router_ids),
            **_ownership_props(ownership),
        }, opts)


# --- Service ------------------------------------------------------------------

class _ServiceProvider(_Record):
    collection, member, kind = "services", "service", "service"
    fields = {"type": "type", "service_name": "name", "description": "description", "enabled": "enabled",
              "owner": OWNER_ATTR}
    key_fields = ("type", "service_name")
    replace_on = ("type",)

    def lookup_filters(self, props):
        return {"type": props["type"]}

    def is_same(self, record, props):
        return record.get("type") == props["type"] and record.get("name") == props["service_name"]

    def describe(self, props):
        return f"Keystone service {props['type']} ({props['service_name']})"

    def made_by_bootstrap(self, api, props, record):
        return bool(props.get("bootstrap_region")) and record.get("type") == "identity" \
            and record.get("name") == "keystone"


class Service(Resource, module="keystone", name="Service"):
    """A catalog service record, shared by all regions (owned by the admin region)."""

    type: pulumi.Output[str]
    service_name: pulumi.Output[str]

    def __init__(self, name: str, auth: pulumi.Input[dict], type: pulumi.Input[str], service_name: pulumi.Input[str],
                 description: pulumi.Input[str] = "", opts: Optional[pulumi.ResourceOptions] = None,
                 ownership: Optional[Ownership] = None):
        super().__init__(_ServiceProvider(), name, {
            "auth": auth, "type": type, "service_name": service_name,
            "description": description, "enabled": True, **_ownership_props(ownership),
        }, opts)


# --- Endpoint -----------------------------------------------------------------

class _EndpointProvider(_Record):
    collection, member, kind = "endpoints", "endpoint", "endpoint"
    fields = {"service_id": "service_id", "interface": "interface", "region_id": "region_id",
              "url": "url", "enabled": "enabled", "owner": OWNER_ATTR}
    key_fields = ("service_id", "interface", "region_id")
    replace_on = ("service_id", "interface", "region_id")

    def listing_filters(self, props):
        return {"region_id": props["region_id"]}

    def lookup_filters(self, props):
        return {k: props[k] for k in self.key_fields}

    def is_same(self, record, props):
        return all(record.get(k) == props[k] for k in self.key_fields)

    def describe(self, props):
        return f"Keystone endpoint {props['interface']} of service {props['service_id']} in region {props['region_id']}"

    def made_by_bootstrap(self, api, props, record):
        if not props.get("bootstrap_region") or record.get("region_id") != props["bootstrap_region"]:
            return False
        services = api.listing("services")
        if services is None:
            services = [api.get(f"services/{record['service_id']}")["service"]]
        return any(s.get("id") == record["service_id"] and s.get("type") == "identity" for s in services)


class Endpoint(Resource, module="keystone", name="Endpoint"):
    """One (service, interface, region) endpoint. Always given a region_id, never the
    legacy `region` field that silently creates regions."""

    url: pulumi.Output[str]
    region_id: pulumi.Output[str]
    interface: pulumi.Output[str]

    def __init__(self, name: str, auth: pulumi.Input[dict], service_id: pulumi.Input[str],
                 interface: pulumi.Input[str], region_id: pulumi.Input[str], url: pulumi.Input[str],
                 opts: Optional[pulumi.ResourceOptions] = None, ownership: Optional[Ownership] = None):
        super().__init__(_EndpointProvider(), name, {
            "auth": auth, "service_id": service_id, "interface": interface,
            "region_id": region_id, "url": url, "enabled": True, **_ownership_props(ownership),
        }, opts)


# --- Domain / Project ---------------------------------------------------------

class _DomainProvider(_Record):
    collection, member, kind = "domains", "domain", "domain"
    fields = {"domain_name": "name", "description": "description", "enabled": "enabled", "owner": OWNER_ATTR}
    key_fields = ("domain_name",)

    def lookup_filters(self, props):
        return {"name": props["domain_name"]}

    def is_same(self, record, props):
        return record.get("name") == props["domain_name"]

    def choose(self, api, props, candidates):
        # Never take the Default domain (id `default`): it holds admin and the service users.
        if any(c.get("id") == "default" for c in candidates):
            return None, (f"{self.describe(props)} is Keystone's default domain: it holds admin and the service "
                          f"users and is never managed by this program")
        return super().choose(api, props, candidates)

    def refuse_untagged(self, props, record):
        return (f"{self.describe(props)} already exists in Keystone (id {record.get('id')}) without an owner "
                f"attribute ({OWNER_ATTR}): it was made outside this program. Set openstack-multiregion:"
                f"adoptUntagged to true to use it as it is (it is then never changed, disabled or deleted), "
                f"or choose another name")

    def use_untagged(self, props):
        return True  # a domain made by hand is used, never taken over

    def before_delete(self, api, id_):
        # Keystone refuses to delete an enabled domain; only ever reached for our own.
        try:
            api.patch(f"domains/{id_}", {"domain": {"enabled": False}})
        except Exception as err:  # noqa: BLE001
            if _status(err) != 404:
                raise


class Domain(Resource, module="keystone", name="Domain"):
    domain_name: pulumi.Output[str]

    def __init__(self, name: str, auth: pulumi.Input[dict], domain_name: pulumi.Input[str],
                 description: pulumi.Input[str] = "", opts: Optional[pulumi.ResourceOptions] = None,
                 ownership: Optional[Ownership] = None):
        super().__init__(_DomainProvider(), name, {
            "auth": auth, "domain_name": domain_name, "description": description, "enabled": True,
            **_ownership_props(ownership),
        }, opts)


class _ProjectProvider(_Record):
    collection, member, kind = "projects", "project", "project"
    fields = {"project_name": "name", "domain_id": "domain_id", "description": "description", "enabled": "enabled",
              "owner": OWNER_ATTR}
    key_fields = ("project_name", "domain_id")
    replace_on = ("domain_id",)

    def listing_filters(self, props):
        return {"domain_id": props["domain_id"]}

    def lookup_filters(self, props):
        return {"name": props["project_name"], "domain_id": props["domain_id"]}

    def is_same(self, record, props):
        return record.get("name") == props["project_name"] and record.get("domain_id") == props["domain_id"]

    def describe(self, props):
        return f"Keystone project {props['project_name']} (domain {props['domain_id']})"


class Project(Resource, module="keystone", name="Project"):
    project_name: pulumi.Output[str]
    domain_id: pulumi.Output[str]

    def __init__(self, name: str, auth: pulumi.Input[dict], project_name: pulumi.Input[str],
                 domain_id: pulumi.Input[str], description: pulumi.Input[str] = "",
                 opts: Optional[pulumi.ResourceOptions] = None, ownership: Optional[Ownership] = None):
        super().__init__(_ProjectProvider(), name, {
            "auth": auth, "project_name": project_name, "domain_id": domain_id,
            "description": description, "enabled": True, **_ownership_props(ownership),
        }, opts)


# --- User ---------------------------------------------------------------------

class _UserProvider(_Record):
    collection, member, kind = "users", "user", "user"
    fields = {"user_name": "name", "domain_id": "domain_id", "password": "password",
              "default_project_id": "default_project_id", "enabled": "enabled", "owner": OWNER_ATTR}
    key_fields = ("user_name", "domain_id")
    replace_on = ("domain_id",)

    # A region's users share one listing: its domain's users whose names end in the
    # region's suffix (`-RegionTwo`). Case-insensitive (`__iendswith`), Keystone filters
    # them in its database, before it cuts the list; `is_same` compares exactly.
    def listing_filters(self, props):
        suffix = props.get("name_suffix")
        return {"domain_id": props["domain_id"], **({"name__iendswith": suffix} if suffix else {})}

    def lookup_filters(self, props):
        return {"name": props["user_name"], "domain_id": props["domain_id"]}

    def is_same(self, record, props):
        return record.get("name") == props["user_name"] and record.get("domain_id") == props["domain_id"]

    def describe(self, props):
        return f"Keystone user {props['user_name']} (domain {props['domain_id']})"

    def _outs(self, props, obj, managed=True):
        outs = super()._outs(props, obj, managed)
        outs["password"] = props["password"]  # Keystone never returns it
        return outs

    def _live_for_update(self, olds, news, live):
        # Keystone never shows a password, so `_patch` sets the configured one: on an
        # adopted user, and on update only when the configured one changed.
        if olds.get("password") == news.get("password"):
            return dict(live, password=news.get("password"))  # unchanged: do not reset it
        return live


class User(Resource, module="keystone", name="User"):
    user_name: pulumi.Output[str]

    def __init__(self, name: str, auth: pulumi.Input[dict], user_name: pulumi.Input[str],
                 domain_id: pulumi.Input[str], password: pulumi.Input[str],
                 default_project_id: Optional[pulumi.Input[str]] = None, name_suffix: Optional[str] = None,
                 opts: Optional[pulumi.ResourceOptions] = None, ownership: Optional[Ownership] = None):
        """`name_suffix`: what the names of this stack's users in the domain end with
        (`-RegionTwo`); their lookups then share one filtered listing."""
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["password"]))
        super().__init__(_UserProvider(), name, {
            "auth": auth, "user_name": user_name, "domain_id": domain_id,
            "password": pulumi.Output.secret(password), "default_project_id": default_project_id,
            "enabled": True, "name_suffix": name_suffix, **_ownership_props(ownership),
        }, opts)


# --- Role assignment ----------------------------------------------------------

class _RoleAssignmentProvider(ResourceProvider):
    keys = ("project_id", "user_id", "role_name")

    @staticmethod
    def _path(props: dict[str, Any], role_id: str) -> str:
        return f"projects/{props['project_id']}/users/{props['user_id']}/roles/{role_id}"

    @staticmethod
    def _role_id(api: KeystoneApi, role_name: str) -> str:
        listed = api.listing("roles", name=role_name)
        if listed is None:
            listed = api.get("roles", name=role_name)["roles"]
        roles = [r for r in listed if r.get("name") == role_name]
        if not roles:
            raise ValueError(f"Keystone has no role named {role_name!r}")
        return roles[0]["id"]

    def create(self, props):
        api = KeystoneApi(props["auth"])
        role_id = self._role_id(api, props["role_name"])
        api.put(self._path(props, role_id))  # PUT is idempotent
        return CreateResult(f"{props['project_id']}/{props['user_id']}/{role_id}", dict(props, role_id=role_id))

    def diff(self, id_, olds, news):
        changed = [k for k in self.keys if olds.get(k) != news.get(k)]
        stale = [k for k in CREDENTIAL_KEYS if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed or stale), replaces=changed, delete_before_replace=True)

    def update(self, id_, olds, news):
        # Only credentials reach an update (any other change replaces): store them.
        return UpdateResult(dict(olds, **{k: v for k, v in news.items() if k != "role_id"}))

    def read(self, id_, props):
        api = KeystoneApi(props["auth"])
        if not api.head(self._path(props, props["role_id"])):
            return ReadResult(None, {})
        return ReadResult(id_, props, {k: v for k, v in props.items() if k != "role_id"})

    def delete(self, id_, props):
        api = KeystoneApi(props["auth"])
        api.delete(self._path(props, props["role_id"]))


class RoleAssignment(Resource, module="keystone", name="RoleAssignment"):
    """A role for a user on a project (the user is this stack's own)."""

    def __init__(self, name: str, auth: pulumi.Input[dict], user_id: pulumi.Input[str],
                 project_id: pulumi.Input[str], role_name: pulumi.Input[str],
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(_RoleAssignmentProvider(), name, {
            "auth": auth, "user_id": user_id, "project_id": project_id, "role_name": role_name,
            "role_id": None,
        }, opts)


# --- Destroy guard --------------------------------------------------------------

class _InUseGuardProvider(ResourceProvider):
    def create(self, props):
        return CreateResult(f"guard-{props['region_id']}", dict(props))

    def diff(self, id_, olds, news):
        # A new credential is stored too: destroy uses it.
        return DiffResult(changes=any(olds.get(k) != news.get(k) for k in ("region_id", *CREDENTIAL_KEYS)))

    def update(self, id_, olds, news):
        return UpdateResult(dict(news))

    def delete(self, id_, props):
        api = KeystoneApi(props["auth"])
        others = sorted({e["region_id"] for e in api.get("endpoints")["endpoints"]} - {props["region_id"]})
        if others:
            raise ValueError(
                f"refusing to destroy the shared Keystone: region(s) {', '.join(others)} still use it. "
                f"Run `pulumi destroy` on the stacks of those regions first, then destroy this stack again.")


class KeystoneInUseGuard(Resource, module="keystone", name="InUseGuard"):
    """Deleted first when the Keystone stack is destroyed (it depends on everything
    else), and refuses while other regions still have endpoints in this Keystone."""

    def __init__(self, name: str, auth: pulumi.Input[dict], region_id: pulumi.Input[str],
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(_InUseGuardProvider(), name, {"auth": auth, "region_id": region_id}, opts)
