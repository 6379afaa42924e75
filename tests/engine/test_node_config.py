"""Issue: region nodes configured over SSH from templates so every service trusts
the shared Keystone; real Placement and Glance answer through the catalog."""
from __future__ import annotations

import configparser
import stat
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.engine

CONTROLLER, COMPUTE = "node3", "node4"  # region-two's nodes in the sandbox layout
CONTROLLER_FILES = ["etc/glance/glance-api.conf", "etc/placement/placement.conf", "etc/nova/nova.conf",
                    "etc/neutron/neutron.conf", "etc/cinder/cinder.conf"]
# A compute runs nova-compute only (ML2/OVN: no Neutron process there), and serves no API.
COMPUTE_FILES = ["etc/nova/nova.conf"]


def read_conf(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read_string(path.read_text())
    return parser


def node_root(sandbox, node: str) -> Path:
    return sandbox.dir / "nodes" / node / "root"


def restarts(sandbox, node: str) -> list[str]:
    log = node_root(sandbox, node) / "var/log/openstack-multiregion/restarts.log"
    return [line.split()[-1] for line in log.read_text().splitlines()] if log.exists() else []


def test_every_keystoneauth_section_names_region_two(sandbox, cli, admin):
    keystone = admin["authUrl"].removesuffix("/v3/")
    checked = 0
    for node, files in ((CONTROLLER, CONTROLLER_FILES), (COMPUTE, COMPUTE_FILES)):
        for rel in files:
            path = node_root(sandbox, node) / rel
            assert stat.S_IMODE(path.stat().st_mode) == 0o640, path
            conf = read_conf(path)
            auth_sections = [s for s in conf.sections() if conf.has_option(s, "auth_url")]
            # Every file names the shared Keystone; the APIs (controllers) check tokens.
            assert auth_sections and ("keystone_authtoken" in auth_sections or node == COMPUTE), path
            for section in auth_sections:
                assert conf.get(section, "region_name") == "RegionTwo", (path, section)
                assert conf.get(section, "auth_url").startswith(keystone), (path, section)
                checked += 1
    nova = read_conf(node_root(sandbox, CONTROLLER) / "etc/nova/nova.conf")
    assert {"neutron", "placement", "keystone_authtoken"} <= {s for s in nova.sections() if nova.has_option(s, "auth_url")}
    assert nova.get("cinder", "os_region_name") == "RegionTwo"
    neutron = read_conf(node_root(sandbox, CONTROLLER) / "etc/neutron/neutron.conf")
    assert neutron.get("nova", "region_name") == "RegionTwo"
    assert checked >= 10


def test_real_services_answer_through_the_catalog(sandbox, admin):
    name = f"img-{uuid.uuid4().hex[:8]}"
    image = Path(sandbox.dir) / f"{name}.raw"
    image.write_bytes(b"\0" * 65536)
    sandbox.openstack("image", "create", "--disk-format", "raw", "--container-format", "bare", "--file", str(image),
                      name, region="RegionTwo", auth=admin)
    two = {i["Name"] for i in sandbox.openstack_json("image", "list", region="RegionTwo", auth=admin)}
    one = {i["Name"] for i in sandbox.openstack_json("image", "list", region="RegionOne", auth=admin)}
    assert name in two and name not in one
    provider = f"rp-{uuid.uuid4().hex[:8]}"
    sandbox.openstack("resource", "provider", "create", provider, region="RegionTwo", auth=admin)
    listed = {p["name"] for p in sandbox.openstack_json("resource", "provider", "list", region="RegionTwo", auth=admin)}
    assert provider in listed


def generated_secrets(sandbox) -> set[str]:
    """The secrets the program made for region-two (service users, databases,
    RabbitMQ, metadata), as its controller's files hold them."""
    found = set()
    for rel in CONTROLLER_FILES:
        conf = read_conf(node_root(sandbox, CONTROLLER) / rel)
        for section in conf.sections():
            for option in ("password", "metadata_proxy_shared_secret"):
                if conf.has_option(section, option):
                    found.add(conf.get(section, option))
        if conf.has_option("DEFAULT", "transport_url"):
            found.add(conf.get("DEFAULT", "transport_url").split("//")[1].split("@")[0].split(":")[1])
    assert len(found) >= 7, found  # 5 service users, RabbitMQ, metadata
    return found


class CommandLineWatcher:
    """Samples every process's command line while a `pulumi up` runs."""

    def __init__(self):
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
            self.seen.update(out.splitlines())
            time.sleep(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def test_memcached_change_touches_only_dependent_files_and_units(sandbox, cli, admin):
    path = cli.config_file("region-two")
    original = path.read_text()
    doc = yaml.safe_load(original)
    ctl = doc["config"]["openstack-multiregion:nodes"][0]["address"]
    doc["config"]["openstack-multiregion:memcachedServers"] = [f"{ctl}:11211", f"{ctl}:11212"]
    path.write_text(yaml.safe_dump(doc))
    secrets = [admin["password"], *generated_secrets(sandbox)]
    try:
        steps = cli.preview_steps("region-two")
        changed = {s["urn"].split("::")[-1] for s in steps}
        # Only the controller's files name memcached (the computes serve no API).
        expected_files = {f"nodes-{CONTROLLER}-file-{f.replace('/', '-')}" for f in CONTROLLER_FILES}
        expected_units = {f"nodes-{CONTROLLER}-unit-glance-api", f"nodes-{CONTROLLER}-unit-placement-api"}
        assert changed == expected_files | expected_units
        assert cli.preview_steps("region-one") == []

        before = {n: restarts(sandbox, n) for n in ("node1", CONTROLLER, COMPUTE)}
        with CommandLineWatcher() as watcher:
            out = cli.up("region-two")
        assert restarts(sandbox, "node1") == before["node1"]
        assert restarts(sandbox, COMPUTE) == before[COMPUTE]
        added = restarts(sandbox, CONTROLLER)[len(before[CONTROLLER]):]
        assert sorted(added) == ["glance-api", "placement-api"]
        conf = read_conf(node_root(sandbox, CONTROLLER) / "etc/glance/glance-api.conf")
        assert conf.get("keystone_authtoken", "memcached_servers") == f"{ctl}:11211,{ctl}:11212"

        # Secrets: never on a command line, in the engine's output or in plain state.
        assert watcher.seen, "the watcher saw no process at all"
        state = sandbox.state_text()
        for secret in secrets:
            assert len(secret) >= 16
            assert not [line for line in watcher.seen if secret in line]
            assert secret not in out.stdout + out.stderr
            assert secret not in state
        world_readable = [p for n in (CONTROLLER, COMPUTE) for p in node_root(sandbox, n).rglob("*")
                          if p.is_file() and p.stat().st_mode & stat.S_IROTH]
        assert world_readable, "expected some public files (WSGI entry points)"
        for p in world_readable:
            text = p.read_text(errors="replace")
            assert not any(secret in text for secret in secrets), p
    finally:
        path.write_text(original)
        cli.up("region-two")
