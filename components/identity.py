"""Keystone identity records as Pulumi resources (dynamic providers on Keystone's v3 API).

Each record type is one `_Record` provider plus a thin `pulumi.dynamic.Resource`.
They share one behaviour an operator relies on:

- create ADOPTS an exact match (same region id; same service type+name; same
  endpoint service+interface+region; same name in the same domain) instead of adding
  a duplicate, so a rerun after an interruption converges and bootstrap's records
  (RegionOne, the identity service) come under management;
- read (refresh) reports out-of-band changes and deletions;
- diff compares only this record's own fields: the `auth` credential never causes
  a change;
- delete is idempotent.

Endpoints only ever match on (service, interface, region): a region's stack can
never touch another region's endpoints.
"""
from __future__ import annotations

from typing import Any, Optional

import pulumi
from pulumi.dynamic import (CheckFailure, CheckResult, CreateResult, DiffResult, ReadResult, Resource,
                            ResourceProvider, UpdateResult)
from pulumi.runtime.rpc import UNKNOWN

from components.keystone_api import KeystoneApi


class _Record(ResourceProvider):
    collection = ""  # e.g. "regions"
    member = ""  # e.g. "region"
    fields: dict[str, str] = {}  # our property -> Keystone attribute
    replace_on: tuple[str, ...] = ()  # properties Keystone cannot change in place

    # --- hooks -----------------------------------------------------------------
    def create_body(self, props: dict[str, Any]) -> dict[str, Any]:
        return {attr: props[prop] for prop, attr in self.fields.items() if props.get(prop) is not None}

    def find_existing(self, api: KeystoneApi, props: dict[str, Any]) -> list[dict[str, Any]]:
        return []

    def before_delete(self, api: KeystoneApi, id_: str) -> None:
        pass

    # --- helpers ---------------------------------------------------------------
    def _outs(self, props: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
        outs = dict(props)
        for prop, attr in self.fields.items():
            if attr in obj:
                outs[prop] = obj[attr]
        return outs

    def _own_fields(self, props: dict[str, Any]) -> dict[str, Any]:
        return {k: props.get(k) for k in self.fields}

    # --- provider protocol -----------------------------------------------------
    def create(self, props: dict[str, Any]) -> CreateResult:
        api = KeystoneApi(props["auth"])
        existing = self.find_existing(api, props)
        if existing:
            keep, extras = existing[0], existing[1:]
            for dup in extras:  # duplicates of exactly this record are ours to remove
                api.delete(f"{self.collection}/{dup['id']}")
            obj = self._patch(api, keep["id"], props, keep)
        else:
            obj = api.post(self.collection, {self.member: self.create_body(props)})[self.member]
        return CreateResult(obj["id"], self._outs(props, obj))

    def _patch(self, api: KeystoneApi, id_: str, props: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
        changes = {attr: props[prop] for prop, attr in self.fields.items()
                   if prop not in self.replace_on and props.get(prop) is not None and live.get(attr) != props[prop]}
        if not changes:
            return live
        return api.patch(f"{self.collection}/{id_}", {self.member: changes})[self.member]

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in self.fields if olds.get(k) != news.get(k)]
        replaces = [k for k in changed if k in self.replace_on]
        return DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=True)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        api = KeystoneApi(news["auth"])
        live = api.get(f"{self.collection}/{id_}")[self.member]
        return UpdateResult(self._outs(news, self._patch(api, id_, news, live)))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        api = KeystoneApi(props["auth"])
        try:
            obj = api.get(f"{self.collection}/{id_}")[self.member]
        except Exception as err:  # noqa: BLE001 - only "not found" means deleted
            if getattr(err, "http_status", None) == 404:
                return ReadResult(None, {})
            raise
        outs = self._outs(props, obj)
        return ReadResult(id_, outs, outs)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        api = KeystoneApi(props["auth"])
        self.before_delete(api, id_)
        api.delete(f"{self.collection}/{id_}")


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


def _known(value: Any) -> bool:
    if isinstance(value, dict):
        return all(_known(v) for v in value.values())
    if isinstance(value, list):
        return all(_known(v) for v in value)
    return value != UNKNOWN


class _RegionProvider(_Record):
    collection, member = "regions", "region"
    fields = {"region_id": "id", "description": "description", "parent_region_id": "parent_region_id",
              "vrrp_router_ids": "vrrp_router_ids"}
    replace_on = ("region_id",)

    # VRRP router ids are checked against the other regions' records in the shared
    # Keystone: at preview (check) and again right before writing (create/update),
    # so a stack deployed meanwhile, or `up --skip-preview`, cannot slip through.
    def check(self, olds, news):
        claims = news.get("vrrp_router_ids") or []
        if not claims or not _known(news.get("auth")) or not _known(claims) or not _known(news.get("region_id")):
            return CheckResult(news, [])
        try:
            regions = KeystoneApi(news["auth"]).get("regions")["regions"]
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
        self._refuse_collisions(news)
        return super().update(id_, olds, news)

    def create_body(self, props):
        body = super().create_body(props)
        body.setdefault("description", "")
        return body

    def find_existing(self, api, props):
        try:
            return [api.get(f"regions/{props['region_id']}")["region"]]
        except Exception as err:  # noqa: BLE001
            if getattr(err, "http_status", None) == 404:
                return []
            raise


class Region(Resource, module="keystone", name="Region"):
    """A Keystone region. pulumi-openstack has no such resource, and its endpoint
    resource auto-creates regions that nothing deletes; this one is owned explicitly."""

    region_id: pulumi.Output[str]

    def __init__(self, name: str, auth: pulumi.Input[dict], region_id: pulumi.Input[str],
                 description: pulumi.Input[str] = "", parent_region_id: Optional[pulumi.Input[str]] = None,
                 vrrp_router_ids: pulumi.Input[list] = (), opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(_RegionProvider(), name, {
            "auth": auth, "region_id": region_id, "description": description,
            "parent_region_id": parent_region_id, "vrrp_router_ids": list(vrrp_router_ids),
        }, opts)


# --- Service ------------------------------------------------------------------

class _ServiceProvider(_Record):
    collection, member = "services", "service"
    fields = {"type": "type", "service_name": "name", "description": "description", "enabled": "enabled"}
    replace_on = ("type",)

    def find_existing(self, api, props):
        found = api.get("services", type=props["type"])["services"]
        return [s for s in found if s.get("name") == props["service_name"]]


class Service(Resource, module="keystone", name="Service"):
    """A catalog service record, shared by all regions (owned by the admin region)."""

    type: pulumi.Output[str]
    service_name: pulumi.Output[str]

    def __init__(self, name: str, auth: pulumi.Input[dict], type: pulumi.Input[str], service_name: pulumi.Input[str],
                 description: pulumi.Input[str] = "", opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(_ServiceProvider(), name, {
            "auth": auth, "type": type, "service_name": service_name,
            "description": description, "enabled": True,
        }, opts)


# --- Endpoint -----------------------------------------------------------------

class _EndpointProvider(_Record):
    collection, member = "endpoints", "endpoint"
    fields = {"service_id": "service_id", "interface": "interface", "region_id": "region_id",
              "url": "url", "enabled": "enabled"}
    replace_on = ("service_id", "interface", "region_id")

    def find_existing(self, api, props):
        found = api.get("endpoints", service_id=props["service_id"], interface=props["interface"],
                        region_id=props["region_id"])["endpoints"]
        # Filter again: the exact triple is what makes an endpoint this region's.
        return [e for e in found if e["service_id"] == props["service_id"]
                and e["interface"] == props["interface"] and e["region_id"] == props["region_id"]]


class Endpoint(Resource, module="keystone", name="Endpoint"):
    """One (service, interface, region) endpoint. Always given a region_id, never the
    legacy `region` field that silently creates regions."""

    url: pulumi.Output[str]
    region_id: pulumi.Output[str]
    interface: pulumi.Output[str]

    def __init__(self, name: str, auth: pulumi.Input[dict], service_id: pulumi.Input[str],
                 interface: pulumi.Input[str], region_id: pulumi.Input[str], url: pulumi.Input[str],
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(_EndpointProvider(), name, {
            "auth": auth, "service_id": service_id, "interface": interface,
            "region_id": region_id, "url": url, "enabled": True,
        }, opts)


# --- Domain / Project ---------------------------------------------------------

class _DomainProvider(_Record):
    collection, member = "domains", "domain"
    fields = {"domain_name": "name", "description": "description", "enabled": "enabled"}

    def find_existing(self, api, props):
        return api.get("domains", name=props["domain_name"])["domains"]

    def before_delete(self, api, id_):
        # Keystone refuses to delete an enabled domain.
        try:
            api.patch(f"domains/{id_}", {"domain": {"enabled": False}})
        except Exception as err:  # noqa: BLE001
            if getattr(err, "http_status", None) != 404:
                raise


class Domain(Resource, module="keystone", name="Domain"):
    domain_name: pulumi.Output[str]

    def __init__(self, name: str, auth: pulumi.Input[dict], domain_name: pulumi.Input[str],
                 description: pulumi.Input[str] = "", opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(_DomainProvider(), name, {
            "auth": auth, "domain_name": domain_name, "description": description, "enabled": True,
        }, opts)


class _ProjectProvider(_Record):
    collection, member = "projects", "project"
    fields = {"project_name": "name", "domain_id": "domain_id", "description": "description", "enabled": "enabled"}
    replace_on = ("domain_id",)

    def find_existing(self, api, props):
        return api.get("projects", name=props["project_name"], domain_id=props["domain_id"])["projects"]


class Project(Resource, module="keystone", name="Project"):
    project_name: pulumi.Output[str]
    domain_id: pulumi.Output[str]

    def __init__(self, name: str, auth: pulumi.Input[dict], project_name: pulumi.Input[str],
                 domain_id: pulumi.Input[str], description: pulumi.Input[str] = "",
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(_ProjectProvider(), name, {
            "auth": auth, "project_name": project_name, "domain_id": domain_id,
            "description": description, "enabled": True,
        }, opts)


# --- User ---------------------------------------------------------------------

class _UserProvider(_Record):
    collection, member = "users", "user"
    fields = {"user_name": "name", "domain_id": "domain_id", "password": "password",
              "default_project_id": "default_project_id", "enabled": "enabled"}
    replace_on = ("domain_id",)

    def find_existing(self, api, props):
        return api.get("users", name=props["user_name"], domain_id=props["domain_id"])["users"]

    def _outs(self, props, obj):
        outs = super()._outs(props, obj)
        outs["password"] = props["password"]  # Keystone never returns it
        return outs

    def _patch(self, api, id_, props, live):
        # Keystone cannot tell us the current password: an adopted or updated
        # user always gets the configured one.
        live = dict(live, password=None)
        return super()._patch(api, id_, props, live)

    def update(self, id_, olds, news):
        api = KeystoneApi(news["auth"])
        live = api.get(f"users/{id_}")["user"]
        if olds.get("password") == news.get("password"):
            live["password"] = news.get("password")  # unchanged: do not reset it
        return UpdateResult(self._outs(news, super()._patch(api, id_, news, live)))


class User(Resource, module="keystone", name="User"):
    user_name: pulumi.Output[str]

    def __init__(self, name: str, auth: pulumi.Input[dict], user_name: pulumi.Input[str],
                 domain_id: pulumi.Input[str], password: pulumi.Input[str],
                 default_project_id: Optional[pulumi.Input[str]] = None,
                 opts: Optional[pulumi.ResourceOptions] = None):
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["password"]))
        super().__init__(_UserProvider(), name, {
            "auth": auth, "user_name": user_name, "domain_id": domain_id,
            "password": pulumi.Output.secret(password), "default_project_id": default_project_id,
            "enabled": True,
        }, opts)


# --- Role assignment ----------------------------------------------------------

class _RoleAssignmentProvider(ResourceProvider):
    @staticmethod
    def _path(props: dict[str, Any], role_id: str) -> str:
        return f"projects/{props['project_id']}/users/{props['user_id']}/roles/{role_id}"

    @staticmethod
    def _role_id(api: KeystoneApi, role_name: str) -> str:
        roles = api.get("roles", name=role_name)["roles"]
        if not roles:
            raise ValueError(f"Keystone has no role named {role_name!r}")
        return roles[0]["id"]

    def create(self, props):
        api = KeystoneApi(props["auth"])
        role_id = self._role_id(api, props["role_name"])
        api.put(self._path(props, role_id))  # PUT is idempotent
        return CreateResult(f"{props['project_id']}/{props['user_id']}/{role_id}", dict(props, role_id=role_id))

    def diff(self, id_, olds, news):
        keys = ("project_id", "user_id", "role_name")
        changed = [k for k in keys if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=changed, delete_before_replace=True)

    def read(self, id_, props):
        api = KeystoneApi(props["auth"])
        if not api.head(self._path(props, props["role_id"])):
            return ReadResult(None, {})
        return ReadResult(id_, props, {k: v for k, v in props.items() if k != "role_id"})

    def delete(self, id_, props):
        api = KeystoneApi(props["auth"])
        api.delete(self._path(props, props["role_id"]))


class RoleAssignment(Resource, module="keystone", name="RoleAssignment"):
    """A role for a user on a project."""

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
        return DiffResult(changes=olds.get("region_id") != news.get("region_id"))

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
