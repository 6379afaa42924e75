"""Issue: one stack per region around the shared Keystone, with the real engine,
verified with the stock `openstack` CLI against the Keystone region-one installs."""
from __future__ import annotations

from collections import Counter

import pytest

from tests.sandbox import SUBNET
import yaml


pytestmark = pytest.mark.engine

SERVICES = {"identity": "keystone", "image": "glance", "network": "neutron", "compute": "nova",
            "placement": "placement", "volumev3": "cinderv3"}
PATHS = {"image": ":9292", "network": ":9696", "compute": ":8774/v2.1", "placement": ":8778",
         "volumev3": ":8776/v3/%(project_id)s"}


def endpoints(sandbox, admin, region=None):
    """`openstack endpoint list`, filtered here: --region fails once a region is gone."""
    listed = sandbox.openstack_json("endpoint", "list", auth=admin)
    return [e for e in listed if region is None or e["Region"] == region]


def node_address(cli, stack, node_index=0):
    config = yaml.safe_load(cli.config_file(stack).read_text())["config"]
    return config["openstack-multiregion:nodes"][node_index]["address"]


def test_catalog_matches_seed_000(sandbox, cli, admin):
    keystone = admin["authUrl"]
    for stack, region in (("region-one", "RegionOne"), ("region-two", "RegionTwo")):
        eps = endpoints(sandbox, admin, region)
        ctl = node_address(cli, stack)
        triples = Counter((e["Service Type"], e["Interface"]) for e in eps)
        assert triples == {(t, i): 1 for t in SERVICES for i in ("public", "internal", "admin")}, "no duplicates"
        for e in eps:
            assert e["Service Name"] == SERVICES[e["Service Type"]]
            if e["Service Type"] == "identity":
                assert e["URL"] == keystone  # the SAME Keystone URL in every region
            else:
                assert e["URL"] == f"http://{ctl}{PATHS[e['Service Type']]}"
    regions = {r["Region"] for r in sandbox.openstack_json("region", "list", auth=admin)}
    assert regions == {"RegionOne", "RegionTwo"}


def test_second_up_changes_nothing(cli):
    for stack in ("region-one", "region-two"):
        assert cli.preview_steps(stack) == []
        out = cli.up(stack)
        assert "unchanged" in out.stdout and "created" not in out.stdout and "updated" not in out.stdout


def test_address_change_touches_only_region_two_endpoints(cli):
    path = cli.config_file("region-two")
    original = path.read_text()
    doc = yaml.safe_load(original)
    doc["config"]["openstack-multiregion:endpointAddress"] = f"{SUBNET}.99"
    path.write_text(yaml.safe_dump(doc))
    try:
        steps = cli.preview_steps("region-two")
        endpoints_changed = [s for s in steps if s["urn"].endswith(tuple(f"-{i}" for i in ("public", "internal", "admin")))
                             and "keystone:Endpoint" in s["urn"]]
        assert {s["op"] for s in endpoints_changed} == {"update"}
        assert len(endpoints_changed) == 15  # 5 services x 3 interfaces; identity stays at the shared Keystone
        # Besides endpoints, only region-two's node files that name the address change.
        others = {s["urn"].split("::")[-1] for s in steps if s not in endpoints_changed}
        assert others and all(name.startswith(("nodes-node3-file-", "nodes-node4-file-", "nodes-node3-unit-"))
                              for name in others), others
        assert cli.preview_steps("region-one") == []
    finally:
        path.write_text(original)


def test_drift_is_seen_and_repaired(sandbox, cli, admin):
    victim = next(e for e in endpoints(sandbox, admin, "RegionTwo")
                  if e["Service Type"] == "image" and e["Interface"] == "public")
    sandbox.openstack("endpoint", "delete", victim["ID"], auth=admin)
    steps = cli.preview_steps("region-two", "--refresh")
    assert [s["op"] for s in steps] == ["create"]
    assert steps[0]["urn"].endswith("region-image-public")
    cli.up("region-two", "--refresh")
    again = [e for e in endpoints(sandbox, admin, "RegionTwo")
             if e["Service Type"] == "image" and e["Interface"] == "public"]
    assert len(again) == 1 and again[0]["ID"] != victim["ID"]


def test_destroy_region_two_removes_only_its_records(sandbox, cli, admin):
    before_one = endpoints(sandbox, admin, "RegionOne")
    users_before = {u["Name"] for u in sandbox.openstack_json("user", "list", auth=admin)}
    assert {"nova-RegionTwo", "glance-RegionTwo", "nova-RegionOne"} <= users_before
    cli.destroy("region-two")
    assert endpoints(sandbox, admin, "RegionTwo") == []
    assert {r["Region"] for r in sandbox.openstack_json("region", "list", auth=admin)} == {"RegionOne"}
    users_after = {u["Name"] for u in sandbox.openstack_json("user", "list", auth=admin)}
    assert users_after == {u for u in users_before if not u.endswith("-RegionTwo")}
    assert endpoints(sandbox, admin, "RegionOne") == before_one  # nothing else touched
    cli.up("region-two")
    assert len(endpoints(sandbox, admin, "RegionTwo")) == 18


def test_third_region_from_a_new_stack_file_only(sandbox, cli, admin):
    cli.write_stack_config("region-three")
    cli.up("region-three")
    eps = endpoints(sandbox, admin, "RegionThree")
    assert len(eps) == 18
    assert {e["URL"] for e in eps if e["Service Type"] == "identity"} == {admin["authUrl"]}
    cli.destroy("region-three")
    assert endpoints(sandbox, admin, "RegionThree") == []


def test_destroying_the_shared_keystone_is_refused_while_used(sandbox, cli, admin):
    before = endpoints(sandbox, admin)
    out = cli.destroy("region-one", check=False)
    assert out.returncode != 0
    assert "region(s) RegionTwo still use it" in out.stdout + out.stderr
    assert "pulumi destroy" in out.stdout + out.stderr
    assert endpoints(sandbox, admin) == before  # nothing was deleted
    assert cli.preview_steps("region-one") == []  # and the stack is intact
