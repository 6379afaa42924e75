"""Issue 11, ownership: a stack never takes, changes or deletes another stack's
Keystone records, nor records made by hand, with the real engine and Keystone."""
from __future__ import annotations

import json

import pytest
import yaml

from tests.keystone_raw import OWNER_ATTR, raw, records, stack_fqn
from tests.sandbox import SUBNET

pytestmark = pytest.mark.engine


def region_two_records(admin) -> dict[str, bytes]:
    """RegionTwo's region, endpoints and users as Keystone returns them, byte for byte."""
    found = {"region": raw(admin, "regions/RegionTwo"),
             "endpoints": raw(admin, "endpoints?region_id=RegionTwo")}
    for ep in records(admin, "endpoints", region_id="RegionTwo"):
        found[f"endpoint {ep['id']}"] = raw(admin, f"endpoints/{ep['id']}")
    for user in records(admin, "users"):
        if user["name"].endswith("-RegionTwo"):
            found[f"user {user['name']}"] = raw(admin, f"users/{user['id']}")
    return found


def service_user_token(admin, user: str, password: str) -> bool:
    from keystoneauth1 import session as ks_session
    from keystoneauth1.identity import v3

    auth = v3.Password(auth_url=admin["authUrl"], username=user, password=password, project_name="service",
                       user_domain_name="Default", project_domain_name="Default")
    try:
        return bool(ks_session.Session(auth=auth).get_token())
    except Exception:  # noqa: BLE001
        return False


def test_a_second_stack_with_the_same_region_id_stops_at_preview(sandbox, cli, admin):
    before = region_two_records(admin)
    assert len([k for k in before if k.startswith("endpoint ")]) == 18 and len(before) == 2 + 18 + 5
    owner = json.loads(before["region"])["region"][OWNER_ATTR]
    assert owner == stack_fqn("region-two")
    # nova-RegionTwo's password, which the program made (its controller's nova.conf has it).
    password = sandbox.conf_value("node3", "/etc/nova/nova.conf", "keystone_authtoken", "password")
    regions_before = raw(admin, "regions")
    try:
        for region_id in ("RegionTwo", "regiontwo"):  # MariaDB would make these one region
            cli.write_stack("dup-region", {"region": region_id, "keystone": {"stack": "region-one"},
                                           "services": ["image", "compute"], "endpointAddress": f"{SUBNET}.201"},
                            {"servicePassword": "another-service-password"})
            expected = (f"config openstack-multiregion:region = {region_id}: expected a region id no other stack "
                        f"registered (compared case-insensitively); stack {owner} already registered RegionTwo")
            preview = cli.run("preview", stack="dup-region", check=False)
            text = preview.stdout + preview.stderr
            assert preview.returncode != 0 and expected in text, text[-3000:]
            assert "Traceback" not in text and "another-service-password" not in text
            # `up` stops at the same check, before any change.
            up = cli.up("dup-region", check=False)
            assert up.returncode != 0 and expected in up.stdout + up.stderr
        assert region_two_records(admin) == before  # byte-identical: nothing was rewritten
        assert raw(admin, "regions") == regions_before
        assert service_user_token(admin, "nova-RegionTwo", password)  # its password was not reset
    finally:
        cli.destroy("dup-region", check=False)
        cli.run("stack", "rm", "--yes", "--force", stack="dup-region", check=False)


def test_the_default_domain_in_config_is_refused_before_any_change(sandbox, cli, admin):
    path = cli.config_file("region-one")
    original = path.read_text()
    domains_before = raw(admin, "domains")
    try:
        for name in ("Default", "default"):
            doc = yaml.safe_load(original)
            doc["config"]["openstack-multiregion:identity"] = {"domains": [{"name": name, "projects": ["p"]}]}
            path.write_text(yaml.safe_dump(doc))
            expected = (f"config openstack-multiregion:identity.domains[0].name = {name}: expected a domain this "
                        f"stack creates, not Keystone's Default domain (it holds admin and the service users)")
            for attempt in (cli.run("preview", stack="region-one", check=False), cli.up("region-one", check=False)):
                text = attempt.stdout + attempt.stderr
                assert attempt.returncode != 0 and expected in text, text[-3000:]
                assert "Traceback" not in text
    finally:
        path.write_text(original)
    assert raw(admin, "domains") == domains_before
    assert cli.preview_steps("region-one") == []


def _drop_from_state(cli, stack: str, urn: str) -> None:
    """Forget one resource, as an interrupted `up` forgets a create that reached Keystone."""
    exported = json.loads(cli.run("stack", "export", stack=stack).stdout)
    resources = exported["deployment"]["resources"]
    exported["deployment"]["resources"] = [r for r in resources if r["urn"] != urn]
    for r in exported["deployment"]["resources"]:
        r["dependencies"] = [d for d in r.get("dependencies") or [] if d != urn]
        r["propertyDependencies"] = {k: [d for d in v if d != urn]
                                     for k, v in (r.get("propertyDependencies") or {}).items()}
    state = cli.project / f".state-{stack}.json"
    state.write_text(json.dumps(exported))
    try:
        cli.run("stack", "import", "--file", str(state), stack=stack)
    finally:
        state.unlink()


def test_a_hand_made_duplicate_service_is_not_deleted(sandbox, cli, admin):
    owned = cli.outputs("region-one")["serviceIds"]["image"]
    endpoints_before = raw(admin, "endpoints")
    made = sandbox.openstack_json("service", "create", "--name", "glance", "--description", "made by hand",
                                  "image", auth=admin)
    try:
        urn = next(line for line in cli.run("stack", "--show-urns", stack="region-one").stdout.split()
                   if line.startswith("urn:") and line.endswith("::admin-service-image"))
        _drop_from_state(cli, "region-one", urn)
        # The create adopts the stack's own record and leaves the hand-made one alone.
        cli.up("region-one")
        images = {s["id"]: s for s in records(admin, "services", type="image")}
        assert set(images) == {owned, made["id"]}
        assert images[owned][OWNER_ATTR] == stack_fqn("region-one")
        assert OWNER_ATTR not in images[made["id"]]
        assert cli.outputs("region-one")["serviceIds"]["image"] == owned
        assert raw(admin, "endpoints") == endpoints_before  # no region lost (or gained) an endpoint
        assert cli.preview_steps("region-one") == [] and cli.preview_steps("region-two") == []
        # Refresh and a rerun leave it alone too.
        cli.up("region-one", "--refresh")
        assert made["id"] in {s["id"] for s in records(admin, "services", type="image")}
    finally:
        sandbox.openstack("service", "delete", made["id"], auth=admin, check=False)


def test_a_refresh_never_takes_a_region_another_stack_registered_since(sandbox, cli, admin):
    """Stack A's region is deleted by hand and stack B registers the same id. A's
    `up --refresh` stops naming B, A's `destroy` skips B's records: B's region and
    endpoints are byte-identical before and after."""
    region_id = "RegionReown"
    config = {"region": region_id, "keystone": {"stack": "region-one"}, "services": []}
    try:
        cli.write_stack("reown-a", config, {})
        cli.up("reown-a")
        session = __import__("tests.keystone_raw", fromlist=["session"]).session(admin)
        base = admin["authUrl"].rstrip("/")
        for ep in records(admin, "endpoints", region_id=region_id):  # by hand, as an operator would
            session.delete(f"{base}/endpoints/{ep['id']}", raise_exc=True)
        session.delete(f"{base}/regions/{region_id}", raise_exc=True)
        cli.write_stack("reown-b", config, {})
        cli.up("reown-b")

        def b_records():
            found = {"region": raw(admin, f"regions/{region_id}")}
            for ep in records(admin, "endpoints", region_id=region_id):
                found[ep["id"]] = raw(admin, f"endpoints/{ep['id']}")
            return found

        before = b_records()
        assert json.loads(before["region"])["region"][OWNER_ATTR] == stack_fqn("reown-b") and len(before) > 1
        refreshed = cli.up("reown-a", "--refresh", check=False)
        text = refreshed.stdout + refreshed.stderr
        # Refused naming B (the region's message, or an endpoint's if that is checked first).
        assert refreshed.returncode != 0 and stack_fqn("reown-b") in text, text[-3000:]
        assert "Traceback" not in text
        cli.destroy("reown-a")
        assert b_records() == before
    finally:
        for stack in ("reown-a", "reown-b"):
            cli.destroy(stack, check=False)
            cli.run("stack", "rm", "--yes", "--force", stack=stack, check=False)
