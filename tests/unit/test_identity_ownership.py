"""The identity providers' ownership, credential and retry rules, on an in-memory
Keystone (tests/unit/fake_keystone.py). The engine tests show the same rules with
the real engine and the real Keystone (tests/engine/test_ownership.py)."""
from __future__ import annotations

import pytest
from pulumi.output import Unknown

from components import identity
from components.identity import (OWNER_ATTR, OwnershipError, _DomainProvider, _EndpointProvider,
                                 _InUseGuardProvider, _ProjectProvider, _RegionProvider, _RoleAssignmentProvider,
                                 _ServiceProvider, _UserProvider)
from tests.unit.fake_keystone import FakeApi, FakeKeystone

ME = "organization/openstack-multiregion/region-two"
OTHER = "organization/openstack-multiregion/region-one"
AUTH = {"authUrl": "http://keystone:5000/v3/", "username": "admin", "password": "ADMIN-CANARY-1",
        "projectName": "admin", "userDomainName": "Default", "projectDomainName": "Default"}
NEW_AUTH = dict(AUTH, password="ADMIN-CANARY-2")


@pytest.fixture
def fake(monkeypatch) -> FakeKeystone:
    ks = FakeKeystone()
    monkeypatch.setattr(identity, "KeystoneApi", lambda auth, quick=False: FakeApi(ks))
    return ks


def props(**kw):
    return {"auth": AUTH, "owner": ME, "adopt_untagged": False, "bootstrap_region": None, **kw}


def region(rid="RegionTwo", **kw):
    return props(**{"region_id": rid, "description": "", "parent_region_id": None, "vrrp_router_ids": [], **kw})


def service(type_="image", name="glance", **kw):
    return props(**{"type": type_, "service_name": name, "description": "", "enabled": True, **kw})


def endpoint(service_id, interface="public", rid="RegionTwo", **kw):
    return props(**{"service_id": service_id, "interface": interface, "region_id": rid, "url": "http://ctl:9292",
                    "enabled": True, **kw})


def domain(name="nhanhoa", **kw):
    return props(**{"domain_name": name, "description": "", "enabled": True, **kw})


def project(name="service", **kw):
    return props(**{"project_name": name, "domain_id": "default", "description": "", "enabled": True, **kw})


def user(name="nova-RegionTwo", **kw):
    return props(**{"user_name": name, "domain_id": "default", "password": "SERVICE-CANARY",
                    "default_project_id": None, "enabled": True, **kw})


RECORDS = [  # (provider, collection, props factory, natural key of the created record)
    (_RegionProvider, "regions", lambda f: region(), {"id": "RegionTwo"}),
    (_ServiceProvider, "services", lambda f: service(), {"type": "image", "name": "glance"}),
    (_EndpointProvider, "endpoints", lambda f: endpoint("svc-1"), {"service_id": "svc-1", "interface": "public",
                                                                         "region_id": "RegionTwo"}),
    (_DomainProvider, "domains", lambda f: domain(), {"name": "nhanhoa"}),
    (_ProjectProvider, "projects", lambda f: project(), {"name": "service", "domain_id": "default"}),
    (_UserProvider, "users", lambda f: user(), {"name": "nova-RegionTwo", "domain_id": "default"}),
]
IDS = [r[1] for r in RECORDS]


@pytest.mark.parametrize("provider,collection,make,key", RECORDS, ids=IDS)
def test_every_created_record_names_its_owner(fake, provider, collection, make, key):
    result = provider().create(make(fake))
    [record] = fake.of(collection, **key)
    assert record["id"] == result.id and record[OWNER_ATTR] == ME
    assert result.outs["owner"] == ME and result.outs["managed"] is True


@pytest.mark.parametrize("provider,collection,make,key", RECORDS, ids=IDS)
def test_a_lost_post_answer_is_found_not_posted_again(fake, provider, collection, make, key):
    # The POST reached Keystone, its answer did not: a blind retry would add a second
    # endpoint or service, or fail on 409 for the others.
    fake.lose_post_answers = 1
    result = provider().create(make(fake))
    assert [r["id"] for r in fake.of(collection, **key)] == [result.id]
    assert [c for c in fake.calls if c[0] == "POST"] == [("POST", collection)]


def test_a_500_before_anything_was_stored_is_posted_again(fake):
    fake.fail_posts_with_500 = 2
    result = _ServiceProvider().create(service())
    assert [s["id"] for s in fake.of("services", type="image")] == [result.id]


UNIQUE = [r for r in RECORDS if r[1] in ("regions", "domains", "projects", "users")]


@pytest.mark.parametrize("provider,collection,make,key", UNIQUE, ids=[r[1] for r in UNIQUE])
def test_a_record_another_stack_made_after_the_listing_is_refused_not_taken(fake, provider, collection, make, key):
    # The run's shared listing (taken at check) does not hold it; another stack creates
    # it before our POST. Keystone answers 409, and a fresh lookup names the winner.
    p = make(fake)
    assert provider().check({}, p).failures == []
    fake.add(collection, **key, **{OWNER_ATTR: OTHER})
    with pytest.raises(OwnershipError, match=OTHER):
        provider().create(p)
    assert len(fake.of(collection, **key)) == 1 and fake.of(collection, **key)[0][OWNER_ATTR] == OTHER
    assert [c[0] for c in fake.writes()] == ["POST"]  # the refused POST only: nothing changed


def test_a_hand_made_duplicate_service_is_neither_taken_nor_deleted(fake):
    mine = fake.add("services", type="image", name="glance", **{OWNER_ATTR: ME})
    by_hand = fake.add("services", type="image", name="glance")
    endpoints = [fake.add("endpoints", service_id=s["id"], interface="public", region_id=r, url="u")
                 for s in (mine, by_hand) for r in ("RegionOne", "RegionTwo")]
    for adopt in (False, True):
        result = _ServiceProvider().create(service(adopt_untagged=adopt))
        assert result.id == mine["id"]  # its own record first
    assert {s["id"] for s in fake.of("services")} == {mine["id"], by_hand["id"]}
    assert {e["id"] for e in fake.of("endpoints")} == {e["id"] for e in endpoints}
    assert not [c for c in fake.calls if c[0] == "DELETE"]


@pytest.mark.parametrize("provider,collection,make,key", RECORDS, ids=IDS)
def test_a_record_of_another_stack_stops_check_and_create(fake, provider, collection, make, key):
    fake.add(collection, **key, **{OWNER_ATTR: OTHER})
    p = make(fake)
    for adopt in (False, True):
        [failure] = provider().check({}, dict(p, adopt_untagged=adopt)).failures
        assert OTHER in failure.reason and "ADMIN-CANARY" not in failure.reason
        with pytest.raises(OwnershipError, match=OTHER):
            provider().create(dict(p, adopt_untagged=adopt))
    assert fake.writes() == []


@pytest.mark.parametrize("rid", ["RegionTwo", "regiontwo", "REGIONTWO"])
def test_a_region_id_another_stack_registered_fails_in_any_case(fake, rid):
    fake.add("regions", id="RegionTwo", **{OWNER_ATTR: OTHER})
    [failure] = _RegionProvider().check({}, region(rid)).failures
    assert failure.reason == (f"config openstack-multiregion:region = {rid}: expected a region id no other stack "
                              f"registered (compared case-insensitively); stack {OTHER} already registered RegionTwo")
    with pytest.raises(OwnershipError, match=f"stack {OTHER} already registered RegionTwo"):
        _RegionProvider().create(region(rid))
    assert fake.writes() == []


def test_a_hand_made_region_in_another_case_is_refused_even_with_the_opt_in(fake):
    fake.add("regions", id="RegionTwo")
    [failure] = _RegionProvider().check({}, region("regiontwo", adopt_untagged=True)).failures
    assert "it has RegionTwo (owner: none, made outside this program)" in failure.reason


@pytest.mark.parametrize("provider,collection,make,key", RECORDS, ids=IDS)
def test_untagged_records_are_taken_only_with_the_opt_in(fake, provider, collection, make, key):
    existing = fake.add(collection, **key, enabled=True)
    p = make(fake)
    [failure] = provider().check({}, p).failures
    assert "adoptUntagged" in failure.reason and "made outside this program" in failure.reason
    with pytest.raises(OwnershipError):
        provider().create(p)
    assert fake.writes() == []
    result = provider().create(dict(p, adopt_untagged=True))
    assert result.id == existing["id"] and len(fake.of(collection, **key)) == 1
    if collection == "domains":  # used as it is, never taken over
        assert OWNER_ATTR not in fake.records[collection][result.id] and result.outs["managed"] is False
    else:
        assert fake.records[collection][result.id][OWNER_ATTR] == ME


def test_the_keystone_stack_takes_its_own_bootstrap_records_only(fake):
    fake.add("regions", id="RegionOne")
    keystone = fake.add("services", type="identity", name="keystone")
    for interface in ("public", "internal", "admin"):
        fake.add("endpoints", service_id=keystone["id"], interface=interface, region_id="RegionOne", url="u")
    fake.add("services", type="image", name="glance")
    boot = {"owner": OTHER, "bootstrap_region": "RegionOne"}
    _RegionProvider().create(region("RegionOne", **boot))
    _ServiceProvider().create(service("identity", "keystone", **boot))
    for interface in ("public", "internal", "admin"):
        _EndpointProvider().create(endpoint(keystone["id"], interface, "RegionOne", **boot))
    tagged = [r for c in ("regions", "services", "endpoints") for r in fake.of(c) if r.get(OWNER_ATTR) == OTHER]
    assert len(tagged) == 5
    # ...but not a hand-made service, nor (from a region stack) bootstrap's region.
    assert _ServiceProvider().check({}, service(**boot)).failures
    fake.records["regions"]["RegionOne"].pop(OWNER_ATTR)
    assert _RegionProvider().check({}, region("RegionOne")).failures


def test_delete_and_disable_only_touch_this_stacks_records(fake):
    by_hand = fake.add("domains", name="nhanhoa", enabled=True)
    theirs = fake.add("regions", id="RegionTwo", **{OWNER_ATTR: OTHER})
    mine = fake.add("projects", name="p", domain_id="default", **{OWNER_ATTR: ME})
    own_domain = fake.add("domains", name="mine", enabled=True, **{OWNER_ATTR: ME})
    _DomainProvider().delete(by_hand["id"], domain(managed=True))
    _RegionProvider().delete(theirs["id"], region(managed=True))
    _ProjectProvider().delete(mine["id"], project("p", managed=True))
    _DomainProvider().delete(own_domain["id"], domain("mine", managed=True))
    assert fake.records["domains"][by_hand["id"]]["enabled"] is True
    assert theirs["id"] in fake.records["regions"]
    assert mine["id"] not in fake.records["projects"] and own_domain["id"] not in fake.records["domains"]
    assert ("PATCH", f"domains/{by_hand['id']}") not in fake.calls


def test_a_used_domain_is_never_changed_disabled_or_deleted(fake):
    by_hand = fake.add("domains", name="nhanhoa", description="made by hand", enabled=True)
    created = _DomainProvider().create(domain(adopt_untagged=True, description="from config"))
    assert fake.writes() == []
    news = domain(adopt_untagged=True, description="changed", enabled=False)
    diff = _DomainProvider().diff(created.id, created.outs, news)
    assert not diff.changes
    assert _DomainProvider().update(created.id, created.outs, dict(news, auth=NEW_AUTH)).outs["auth"] == NEW_AUTH
    _DomainProvider().delete(created.id, created.outs)
    assert fake.records["domains"][by_hand["id"]] == by_hand and fake.writes() == []


def test_the_default_domain_is_never_taken(fake):
    [failure] = _DomainProvider().check({}, domain("Default", adopt_untagged=True)).failures
    assert "default domain" in failure.reason


@pytest.mark.parametrize("provider,collection,make,key", RECORDS, ids=IDS)
def test_a_new_credential_is_stored_without_a_keystone_request(fake, provider, collection, make, key):
    p = make(fake)
    created = provider().create(p)
    diff = provider().diff(created.id, created.outs, dict(p, auth=NEW_AUTH))
    assert diff.changes and not diff.replaces
    fake.calls.clear()
    updated = provider().update(created.id, created.outs, dict(p, auth=NEW_AUTH))
    assert fake.calls == []
    assert updated.outs == dict(created.outs, auth=NEW_AUTH)


def test_role_assignments_and_the_guard_store_a_new_credential_too(fake):
    ra = {"auth": AUTH, "user_id": "u", "project_id": "p", "role_name": "admin", "role_id": None}
    created = _RoleAssignmentProvider().create(ra)
    news = dict(ra, auth=NEW_AUTH)
    diff = _RoleAssignmentProvider().diff(created.id, created.outs, news)
    assert diff.changes and diff.replaces == []
    fake.calls.clear()
    assert _RoleAssignmentProvider().update(created.id, created.outs, news).outs == dict(created.outs, auth=NEW_AUTH)
    assert fake.calls == []
    guard = {"auth": AUTH, "region_id": "RegionOne"}
    assert _InUseGuardProvider().diff("g", guard, dict(guard, auth=NEW_AUTH)).changes


def test_an_owner_change_in_keystone_is_refused_at_update(fake):
    created = _ProjectProvider().create(project())
    fake.records["projects"][created.id][OWNER_ATTR] = OTHER  # another stack took it meanwhile
    with pytest.raises(OwnershipError, match=OTHER):
        _ProjectProvider().update(created.id, created.outs, project(description="new"))


def test_check_asks_keystone_only_for_creates_whose_key_is_known(fake):
    unknown = endpoint("svc-1", rid=Unknown())
    assert _EndpointProvider().check({}, unknown).failures == []
    p = endpoint("svc-1")
    assert _EndpointProvider().check(p, p).failures == []  # an existing resource: no lookup
    assert fake.calls == []
    _EndpointProvider().check({}, p)
    assert fake.calls == [("GET", "endpoints")]


def test_check_skips_an_unreachable_keystone(monkeypatch):
    def unreachable(auth, quick=False):
        raise ConnectionError("no Keystone yet")
    monkeypatch.setattr(identity, "KeystoneApi", unreachable)
    assert _ServiceProvider().check({}, service()).failures == []


def test_a_renamed_stack_re_tags_its_own_records(fake):
    created = _ProjectProvider().create(project())
    renamed = project(owner="organization/openstack-multiregion/region-2")
    assert _ProjectProvider().diff(created.id, created.outs, renamed).changes
    _ProjectProvider().update(created.id, created.outs, renamed)
    assert fake.records["projects"][created.id][OWNER_ATTR] == "organization/openstack-multiregion/region-2"


@pytest.mark.parametrize("provider, collection, make, key", RECORDS)
def test_a_refresh_never_makes_another_stacks_record_this_stacks(fake, provider, collection, make, key):
    """Stack A's record deleted by hand and registered again by stack B (same id): A's
    refresh notes B as the live owner but keeps A as the owner in A's state; A's
    preview then stops naming B, A's update refuses, and A's destroy leaves it."""
    created = provider().create(make(fake))
    fake.records[collection][created.id][OWNER_ATTR] = OTHER
    fake.new_run()
    refreshed = provider().read(created.id, created.outs)
    assert refreshed.outs["owner"] == ME and refreshed.outs[identity.FOREIGN_OWNER] == OTHER
    failures = provider().check(refreshed.inputs, make(fake)).failures
    assert failures and OTHER in failures[0].reason, failures
    assert provider().diff(created.id, refreshed.outs, make(fake)).changes
    with pytest.raises(OwnershipError, match=OTHER):
        provider().update(created.id, refreshed.outs, make(fake))
    before = dict(fake.records[collection][created.id])
    provider().delete(created.id, refreshed.outs)
    assert fake.records[collection][created.id] == before


def test_a_regions_records_share_one_listing_per_type(fake):
    """A region's 29 records (issue 19): every check and create looks up through one
    listing per record type and scope, so 4 reads (regions, this region's endpoints,
    its users, the role) and the 29 writes; destroy reads the same listings once."""
    services = [fake.add("services", type=t, name=t) for t in ("identity", "image", "network", "compute",
                                                                "placement", "volumev3")]
    records = [(_RegionProvider(), region())]
    records += [(_EndpointProvider(), endpoint(s["id"], i)) for s in services for i in ("public", "internal", "admin")]
    records += [(_UserProvider(), user(f"{n}-RegionTwo", name_suffix="-RegionTwo"))
                for n in ("glance", "neutron", "nova", "placement", "cinder")]
    for provider, p in records:
        assert provider.check({}, p).failures == []
    created = [(provider, provider.create(p)) for provider, p in records]
    for _, result in created[-5:]:
        _RoleAssignmentProvider().create(
            {"auth": AUTH, "user_id": result.id, "project_id": "p-service", "role_name": "admin"})
    gets = [c for c in fake.calls if c[0] == "GET"]
    assert sorted(path for _, path in gets) == ["endpoints", "regions", "roles", "users"], gets
    assert len(fake.writes()) == 29

    fake.new_run()  # `pulumi destroy`: endpoints and users, then the region
    fake.calls.clear()
    for provider, result in reversed(created):
        provider.delete(result.id, result.outs)
    assert sorted(path for m, path in fake.calls if m == "GET") == ["endpoints", "regions", "users"]
    assert len(fake.writes()) == 24 and not fake.of("endpoints", region_id="RegionTwo")


def test_a_listing_keystone_may_have_cut_is_not_used(fake, monkeypatch):
    """Keystone cuts users and projects at max_db_limit (1000) without saying so: a
    listing that long (or `truncated`) is not trusted, each record is looked up alone."""
    from components import keystone_api
    monkeypatch.setattr(keystone_api, "LISTING_CAP", 3)
    fake.max_db_limit = 3
    for i in range(3):
        fake.add("users", name=f"other-{i}-RegionTwo", domain_id="default")
    theirs = fake.add("users", name="nova-RegionTwo", domain_id="default", **{OWNER_ATTR: OTHER})  # listed 4th
    p = user(name_suffix="-RegionTwo")
    [failure] = _UserProvider().check({}, p).failures
    assert OTHER in failure.reason
    assert ("GET", "users") in fake.calls and len(fake.of("users", id=theirs["id"])) == 1


def test_an_earlier_runs_record_met_by_409_is_brought_to_the_config(fake):
    """The run's listing missed this stack's own record (made by an earlier run after the
    listing was read): the POST meets 409, and the record is taken and patched, never
    left as it was nor posted twice."""
    p = project(description="wanted")
    assert _ProjectProvider().check({}, p).failures == []
    mine = fake.add("projects", name="service", domain_id="default", description="old", **{OWNER_ATTR: ME})
    result = _ProjectProvider().create(p)
    assert result.id == mine["id"] and fake.records["projects"][mine["id"]]["description"] == "wanted"
    assert [c[0] for c in fake.writes()] == ["POST", "PATCH"]


def test_a_delete_reads_whose_record_it_is_right_before(fake, monkeypatch):
    """A listing older than DELETE_LISTING_AGE is read again before a delete: a region
    another stack registered under the same id since (deleted by hand in between) is
    left alone, though this run's earlier listing still showed it as this stack's."""
    monkeypatch.setattr(identity, "DELETE_LISTING_AGE", 0.0)
    created = _RegionProvider().create(region())
    fake.records["regions"]["RegionTwo"][OWNER_ATTR] = OTHER  # the listing still says ME
    _RegionProvider().delete(created.id, created.outs)
    assert "RegionTwo" in fake.records["regions"] and not [c for c in fake.calls if c[0] == "DELETE"]


def test_a_listing_read_while_this_process_writes_shows_the_write():
    from components.keystone_api import ListingCache
    cache = ListingCache()
    key = ("cred", "url", "users", (("domain_id", "default"),))

    def fetch():  # Keystone answered before another thread's create landed
        cache.write(key[:3], {"id": "u1", "domain_id": "default"}, deleted=False)
        return []

    assert [r["id"] for r in cache.read(key, None, fetch)] == ["u1"]
    cache.write(key[:3], {"id": "u1"}, deleted=True)
    assert cache.read(key, None, lambda: pytest.fail("read again")) == []
