"""The resource graph of the program under Pulumi mocks: fast feedback, no engine.

(The real engine runs the same program in tests/engine/.)"""
from __future__ import annotations

import importlib.util
import json
from collections import Counter

import pulumi
import pytest

from components.certificates import new_ca
from tests.sandbox import REPO
from tests.unit.test_settings import KEY

NS = "openstack-multiregion"
# The Keystone stack's CA as its outputs give it (a real one: region stacks sign with it).
CA_CERT, CA_KEY = new_ca("test CA")


class Recorder(pulumi.runtime.Mocks):
    def __init__(self):
        self.resources: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.resources.append(args)
        if args.typ == "pulumi:pulumi:StackReference":
            return f"{args.name}-id", {"outputs": {
                "keystone": {"publicUrl": "https://192.168.80.83:5000/v3/"},
                "adminAuth": {"authUrl": "https://192.168.80.83:5000/v3/", "password": "x"},
                "serviceIds": {t: f"id-{t}" for t in ("identity", "image", "network", "compute", "placement",
                                                      "volumev3")},
                "serviceProjectId": "service-project-id",
                "tlsCa": CA_CERT, "tlsCaKey": CA_KEY,
                "sharedServicePasswords": {s: f"shared-{s}" for s in ("glance", "nova", "neutron", "cinder",
                                                                      "placement")},
            }}
        if args.typ.endswith("secrets:GeneratedSecret"):  # what its provider's create returns
            return f"{args.name}-id", {"length": args.inputs["length"], "value": f"generated-{args.name}"}
        if args.typ.endswith(("tls:CertificateAuthority", "tls:Certificate")):
            return f"{args.name}-id", {**args.inputs, "cert": CA_CERT, "key": f"key-of-{args.name}"}
        if args.typ.endswith("keystone:KeyRepository"):  # what its provider's create returns
            return f"{args.name}-id", {"count": args.inputs["count"], "keys": [f"key-{i}" for i in range(2)]}
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}

    def of_type(self, suffix: str) -> list[pulumi.runtime.MockResourceArgs]:
        return [r for r in self.resources if r.typ.endswith(suffix)]


def run_program(config: dict) -> Recorder:
    recorder = Recorder()
    pulumi.runtime.set_mocks(recorder, project=NS, stack="test", preview=False)
    pulumi.runtime.set_all_config({f"{NS}:{k}": v if isinstance(v, str) else json.dumps(v)
                                   for k, v in config.items()}, [f"{NS}:{k}" for k in
                                                                  ("adminPassword", "servicePassword", "sshPrivateKey")])
    spec = importlib.util.spec_from_file_location("omr_program", REPO / "__main__.py")
    module = importlib.util.module_from_spec(spec)

    @pulumi.runtime.test
    def program():
        spec.loader.exec_module(module)
        return pulumi.Output.from_input(None)

    program()
    return recorder


def nodes(*specs):
    return [{"name": n, "address": a, "roles": r, "hostKey": KEY} for n, a, r in specs]


REGION_TWO = {
    "region": "RegionTwo", "keystone": {"stack": "region-one"},
    "services": ["image", "network", "compute", "placement", "volumev3"],
    "nodes": nodes(("ctl2", "192.168.80.85", ["controller"]), ("cmp2", "192.168.80.86", ["compute"])),
    "servicePassword": "s", "sshPrivateKey": "k",
}


def test_service_region_registers_region_endpoints_and_users():
    rec = run_program(REGION_TWO)
    regions = rec.of_type("keystone:Region")
    assert [r.inputs["region_id"] for r in regions] == ["RegionTwo"]
    endpoints = rec.of_type("keystone:Endpoint")
    assert len(endpoints) == 6 * 3  # identity + 5 services, three interfaces each
    assert len({e.name for e in endpoints}) == 18  # explicit, unique names
    by_type = Counter(e.name.split("-")[1] for e in endpoints)
    assert by_type == {t: 3 for t in ("identity", "image", "network", "compute", "placement", "volumev3")}
    urls = {e.name: e.inputs["url"] for e in endpoints}
    assert urls["region-identity-public"] == "https://192.168.80.83:5000/v3/"
    assert urls["region-compute-internal"] == "https://192.168.80.85:8774/v2.1"
    assert urls["region-volumev3-admin"] == "https://192.168.80.85:8776/v3/%(project_id)s"
    assert urls["region-image-public"] == "https://192.168.80.85:9292"
    users = sorted(u.inputs["user_name"] for u in rec.of_type("keystone:User"))
    assert users == ["cinder-RegionTwo", "glance-RegionTwo", "neutron-RegionTwo", "nova-RegionTwo",
                     "placement-RegionTwo"]
    # admin and service on the `service` project (service tokens need the service role)
    roles = Counter(r.inputs["role_name"] for r in rec.of_type("keystone:RoleAssignment"))
    assert roles == {"admin": 5, "service": 5}
    # A service region never owns a shared service record.
    assert rec.of_type("keystone:Service") == []


def test_endpoint_address_overrides_controller():
    rec = run_program(dict(REGION_TWO, endpointAddress="172.16.181.30"))
    urls = {e.inputs["url"] for e in rec.of_type("keystone:Endpoint") if "identity" not in e.name}
    assert all(u.startswith("https://172.16.181.30:") for u in urls)


def test_shared_service_users_are_not_owned_by_a_service_region():
    rec = run_program(dict(REGION_TWO, serviceUsers="shared"))
    assert rec.of_type("keystone:User") == []


def test_admin_region_owns_shared_records_and_keystone_node():
    rec = run_program({
        "region": "RegionOne", "keystone": {"node": "ctl1"}, "services": ["image", "compute"],
        "nodes": nodes(("ctl1", "192.168.80.83", ["controller"])),
        "adminPassword": "ADMIN-PW-4711", "servicePassword": "s", "sshPrivateKey": "k",
        "identity": {"domains": [{"name": "nhanhoa", "projects": ["phong_ky_thuat"]},
                                 {"name": "cloud365", "projects": ["phong_ky_thuat"]}]},
    })
    services = sorted(s.inputs["type"] for s in rec.of_type("keystone:Service"))
    assert services == ["compute", "identity", "image", "network", "placement", "volumev3"]
    assert sorted(d.inputs["domain_name"] for d in rec.of_type("keystone:Domain")) == ["cloud365", "nhanhoa"]
    projects = Counter(p.inputs["project_name"] for p in rec.of_type("keystone:Project"))
    assert projects == {"service": 1, "phong_ky_thuat": 2}
    commands = {c.name for c in rec.of_type("remote:Command")}
    assert {"software-ctl1-packages", "software-ctl1-virtualenv", "admin-ctl1-keystone-db",
            "admin-ctl1-keystone-bootstrap", "admin-ctl1-unit-keystone", "admin-ctl1-file-etc-keystone-keystone.conf",
            "admin-ctl1-file-etc-systemd-system-keystone.service", "control-plane-ctl1-databases"} <= commands
    # The admin password reaches the node on stdin only, never inside a command string.
    bootstrap = [c for c in rec.of_type("remote:Command") if c.name.endswith("keystone-bootstrap")][0]
    assert bootstrap.inputs["stdin"]["value"] == "ADMIN-PW-4711"  # wrapped: a secret
    for c in rec.of_type("remote:Command"):
        assert "ADMIN-PW-4711" not in c.inputs["create"]
    assert len(rec.of_type("keystone:Endpoint")) == 3 * 3
