"""The front door of the regions of tests/engine/test_bare_machines.py: every endpoint
over HTTPS, verified by the stock clients with the cloud's CA and nothing else; no
plain http:// left on a node; Horizon driven by a real browser across regions; the CA
and every certificate replaced by `pulumi up`. Then region-two goes away cleanly.

(Runs after test_bare_machines.py, on the same session fixtures.)"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from tests.engine.test_bare_machines import NODES, cli_json, upload_image
from tests.sandbox import REPO, machine_name

pytestmark = [pytest.mark.engine, pytest.mark.machines]

ARTIFACTS = Path(os.environ.get("OMR_ARTIFACTS", REPO / "tests" / "artifacts"))
# The screenshot the README shows (committed).
README_SCREENSHOT = REPO / "docs" / "horizon-region-two.png"


def address(machines, node: str) -> str:
    return next(n["address"] for n in machines.nodes if n["name"] == machine_name(node))


def without_ca(admin: dict) -> dict:
    return {k: v for k, v in admin.items() if k != "caCert"}


def assert_clients_verify(machines, admin: dict) -> None:
    """The CLI given the CA (OS_CACERT) lists the catalog and uses RegionTwo's image and
    placement APIs over HTTPS; without it, verification fails."""
    endpoints = machines.openstack_json("endpoint", "list", auth=admin)
    assert endpoints and all(e["URL"].startswith("https://") for e in endpoints), \
        [e["URL"] for e in endpoints if not e["URL"].startswith("https://")]
    assert isinstance(cli_json(machines, admin, "RegionTwo", "image", "list"), list)
    providers = cli_json(machines, admin, "RegionTwo", "resource", "provider", "list")
    # libvirt names the compute's resource provider after the machine's hostname.
    assert {p["name"] for p in providers} == {machine_name(NODES["RegionTwo"][1])}, providers
    refused = machines.openstack("catalog", "list", auth=without_ca(admin), check=False)
    assert refused.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr, refused.stderr[-2000:]


def test_clients_verify_with_the_ca_and_nothing_else(machines, machine_admin):
    assert_clients_verify(machines, machine_admin)


def test_no_plain_http_url_in_the_catalog_or_any_file_the_program_wrote(machines, machine_admin):
    urls = [e["URL"] for e in machines.openstack_json("endpoint", "list", auth=machine_admin)]
    assert [u for u in urls if not u.startswith("https://")] == []
    for node in (*NODES["RegionOne"], *NODES["RegionTwo"]):
        written = machines.ssh(node, "grep -rIl -F 'Managed by openstack-multiregion' /etc /var/www /root "
                                     "/usr/local/lib/openstack-multiregion 2>/dev/null || true").split()
        assert len(written) > 3, (node, written)
        plain = machines.ssh(node, "grep -Hn -F 'http://' " + " ".join(written) + " || true").strip()
        assert plain == "", f"{node}: {plain}"


# --- Horizon in a real browser ----------------------------------------------------------

@pytest.fixture(scope="module")
def demo_user(machines, machine_admin):
    """A project member (no admin role) of a project of its own."""
    tag = uuid.uuid4().hex[:6]
    project, user, password = f"demo-{tag}", f"demo-user-{tag}", f"demo-{uuid.uuid4().hex}"
    cli_json(machines, machine_admin, None, "project", "create", "--domain", "Default", project)
    cli_json(machines, machine_admin, None, "user", "create", "--domain", "Default", "--project", project,
             "--password", password, user)
    machines.openstack("role", "add", "--project", project, "--user", user, "member", auth=machine_admin)
    yield {"project": project, "user": user, "password": password}
    machines.openstack("user", "delete", user, auth=machine_admin, check=False)
    machines.openstack("project", "delete", project, auth=machine_admin, check=False)


def test_horizon_shows_each_region_its_own_images(machines, machine_cli, machine_admin, demo_user, tmp_path):
    from tests import horizon_browser as hb

    name = f"only-in-region-two-{uuid.uuid4().hex[:6]}"
    image = upload_image(machines, machine_admin, "RegionTwo", name, tmp_path, "--public")
    dashboard = f"https://{address(machines, NODES['RegionOne'][0])}/dashboard"
    assert machine_cli.outputs("region-one")["dashboardUrl"] == dashboard + "/"  # what the stack tells its users
    ca = machines.ca_file(machine_admin["caCert"])
    shots = ARTIFACTS / "horizon"
    try:
        with hb.browser(ca, shots) as driver:
            hb.login(driver, dashboard, demo_user["user"], demo_user["password"])
            hb.screenshot(driver, shots, "1-logged-in")
            assert set(hb.available_regions(driver)) >= {"RegionOne", "RegionTwo"}
            hb.switch_region(driver, dashboard, "RegionTwo")
            two = hb.image_names(driver, dashboard)
            hb.screenshot(driver, shots, "2-region-two-images")
            hb.switch_region(driver, dashboard, "RegionOne")
            one = hb.image_names(driver, dashboard)
            hb.screenshot(driver, shots, "3-region-one-images")
    finally:
        machines.openstack("image", "delete", image, region="RegionTwo", auth=machine_admin, check=False)
    assert name in two, two
    assert name not in one, one
    README_SCREENSHOT.parent.mkdir(exist_ok=True)
    shutil.copyfile(shots / "2-region-two-images.png", README_SCREENSHOT)


def test_a_browser_without_the_ca_is_refused(machines):
    from tests import horizon_browser as hb

    dashboard = f"https://{address(machines, NODES['RegionOne'][0])}/dashboard"
    with hb.browser(None, ARTIFACTS / "horizon-untrusted") as driver:
        driver.get(dashboard + "/auth/login/")
        assert hb.is_cert_error_page(driver), driver.title


# --- rotation: a new CA and new certificates with `pulumi up` ------------------------------

@pytest.mark.last
def test_a_new_ca_reaches_every_node_and_client(machines, machine_cli, machine_admin, tmp_path):
    old = dict(machine_admin)
    machine_cli.up("region-one", "--replace", machine_cli.urn("region-one", "tls-ca"), timeout=1800)
    machine_cli.up("region-two", timeout=1800)
    new = machine_cli.outputs("region-one", show_secrets=True)["adminAuth"]
    assert new["caCert"] != old["caCert"]
    assert_clients_verify(machines, new)
    stale = machines.openstack("catalog", "list", auth=old, check=False)
    assert stale.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in stale.stderr, stale.stderr[-2000:]
    # Every node holds the new CA, and the services use it: a server still boots in RegionTwo.
    for node in (*NODES["RegionOne"], *NODES["RegionTwo"]):
        assert machines.ssh(node, "cat /etc/openstack-multiregion/tls/ca.pem") == new["caCert"]
    from tests.engine.test_bare_machines import assert_region_serves_itself
    assert_region_serves_itself(machines, new, "RegionTwo", tmp_path)
    machine_admin.update(new)  # the session's admin credential, for the tests after this one


# --- a region goes away cleanly -------------------------------------------------------------

@pytest.mark.last
def test_destroy_removes_region_two_and_stops_its_services(machines, machine_cli, machine_admin):
    machine_cli.destroy("region-two")
    regions = {r["Region"] for r in machines.openstack_json("region", "list", auth=machine_admin)}
    assert regions == {"RegionOne"}
    endpoints = machines.openstack_json("endpoint", "list", auth=machine_admin)
    assert {e["Region"] for e in endpoints} == {"RegionOne"}
    controller, compute = NODES["RegionTwo"]
    for node, units in ((controller, ("nova-api", "placement-api", "glance-api", "mariadb")),
                        (compute, ("nova-compute",))):
        states = machines.ssh(node, "systemctl is-active " + " ".join(units) + " || true").split()
        assert set(states) == {"inactive"}, (node, states)
    # RegionOne still boots a server.
    assert cli_json(machines, machine_admin, "RegionOne", "compute", "service", "list")
