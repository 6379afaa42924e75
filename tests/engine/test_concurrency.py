"""Issue 11, idempotent Keystone writes with the real engine: the Keystone stack and
two region stacks run `up` at the same time through a proxy that loses the answer of
every third create (Keystone stored the record; the client never heard). The catalog is
exact: no duplicate, no lost record, every record in Keystone is in its owner's state
and the other way round. Then the regions are destroyed while region-one drops its
domains, at once, and nothing of theirs is left. (One round: the proxy loses answers
deterministically, so further rounds repeated the same interleavings for 3 more minutes
of CI.)"""
from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter

import pytest
import yaml

from tests.fault_proxy import FaultProxy
from tests.keystone_raw import OWNER_ATTR, records, stack_fqn
from tests.sandbox import SUBNET

pytestmark = pytest.mark.engine

# More rounds when hunting a race: OMR_CONCURRENCY_ROUNDS=5 scripts/test.sh -k up_at_once
ROUNDS = int(os.environ.get("OMR_CONCURRENCY_ROUNDS", "1"))
SERVICES = ["image", "network", "compute", "placement", "volumev3"]
CATALOG_STACKS = {"region-race-a": "RegionRaceA", "region-race-b": "RegionRaceB"}
ADDRESSES = {"region-race-a": f"{SUBNET}.211", "region-race-b": f"{SUBNET}.212"}
DOMAINS = {"domains": [{"name": "race-a", "projects": ["p1", "p2"]}, {"name": "race-b", "projects": ["p1", "p2"]}]}
USERS = ("glance", "neutron", "nova", "placement", "cinder")
KEYSTONE_TYPES = ("keystone:Region", "keystone:Service", "keystone:Endpoint", "keystone:Domain", "keystone:Project",
                  "keystone:User")
COLLECTION = {"keystone:Region": "regions", "keystone:Service": "services", "keystone:Endpoint": "endpoints",
              "keystone:Domain": "domains", "keystone:Project": "projects", "keystone:User": "users"}


def start(cli, env, *args: str, stack: str) -> subprocess.Popen:
    return subprocess.Popen(["pulumi", "--cwd", str(cli.project), *args, "--yes", "--skip-preview", "--stack", stack,
                             "--non-interactive", "--suppress-permalink"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_all(runs: dict[str, subprocess.Popen]) -> None:
    outputs = {stack: run.communicate(timeout=900)[0] for stack, run in runs.items()}
    failed = {s: outputs[s][outputs[s].find("Diagnostics:"):][:3000] for s, run in runs.items() if run.returncode}
    assert not failed, failed


def state_ids(cli, stack: str) -> dict[str, set[str]]:
    resources = json.loads(cli.run("stack", "export", stack=stack).stdout)["deployment"].get("resources") or []
    ids: dict[str, set[str]] = {c: set() for c in COLLECTION.values()}
    for r in resources:
        kind = next((t for t in KEYSTONE_TYPES if r["type"].endswith(t)), None)
        if kind and r.get("id"):
            ids[COLLECTION[kind]].add(r["id"])
    return ids


def check_exact_catalog(cli, admin, stacks: list[str]) -> None:
    endpoints = records(admin, "endpoints")
    services = {s["id"]: s for s in records(admin, "services")}
    regions = [r["id"] for r in records(admin, "regions")]
    assert len({r.lower() for r in regions}) == len(regions)
    for region in ["RegionOne", "RegionTwo", *CATALOG_STACKS.values()]:
        assert regions.count(region) == 1, regions
        triples = Counter((services[e["service_id"]]["type"], e["interface"]) for e in endpoints
                          if e["region_id"] == region)
        assert triples == {(t, i): 1 for t in ["identity", *SERVICES] for i in ("public", "internal", "admin")}, \
            (region, triples)
    assert Counter((s["type"], s["name"]) for s in services.values()) == {
        (t, n): 1 for t, n in [("identity", "keystone"), ("image", "glance"), ("network", "neutron"),
                               ("compute", "nova"), ("placement", "placement"), ("volumev3", "cinderv3")]}
    users = Counter(u["name"] for u in records(admin, "users"))
    for region in ["RegionOne", "RegionTwo", *CATALOG_STACKS.values()]:
        assert all(users[f"{u}-{region}"] == 1 for u in USERS), (region, users)
    domains = {d["name"]: d["id"] for d in records(admin, "domains")}
    for name in ("race-a", "race-b"):
        assert Counter(p["name"] for p in records(admin, "projects", domain_id=domains[name])) == {"p1": 1, "p2": 1}
    # No lost record and no orphan: what each stack's state holds is exactly what
    # Keystone says that stack owns.
    for stack in stacks:
        ids = state_ids(cli, stack)
        for collection, held in ids.items():
            owned = {r["id"] for r in records(admin, collection) if r.get(OWNER_ATTR) == stack_fqn(stack)}
            assert owned == held, (stack, collection, owned ^ held)


def test_the_keystone_stack_and_two_regions_up_at_once(sandbox, cli, admin):
    for stack, region in CATALOG_STACKS.items():
        cli.write_stack(stack, {"region": region, "keystone": {"stack": "region-one"}, "services": SERVICES,
                                "endpointAddress": ADDRESSES[stack]},
                        {"servicePassword": f"race-{region}-password"})
    one = cli.config_file("region-one")
    original = one.read_text()
    with_domains = yaml.safe_load(original)
    with_domains["config"]["openstack-multiregion:identity"] = DOMAINS
    proxy = FaultProxy(f"{SUBNET}.253", drop_every=3)
    # Only the programs under test talk to Keystone through the proxy.
    env = {k: v for k, v in cli.env.items() if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
    env["HTTP_PROXY"] = proxy.url
    timings = []
    try:
        for round_ in range(ROUNDS):
            one.write_text(yaml.safe_dump(with_domains))
            dropped_before = len(proxy.dropped)
            started = time.monotonic()
            wait_all({stack: start(cli, env, "up", stack=stack) for stack in ["region-one", *CATALOG_STACKS]})
            timings.append(time.monotonic() - started)
            assert len(proxy.dropped) > dropped_before, "the proxy lost no answer: nothing was shown"
            check_exact_catalog(cli, admin, ["region-one", "region-two", *CATALOG_STACKS])
            for stack in ["region-one", *CATALOG_STACKS]:
                assert cli.preview_steps(stack) == []
            # Back to the clean state: the regions destroyed, the domains removed, at once.
            one.write_text(original)
            wait_all({"region-one": start(cli, cli.env, "up", stack="region-one"),
                      **{s: start(cli, cli.env, "destroy", stack=s) for s in CATALOG_STACKS}})
            assert not [r for r in records(admin, "regions") if r["id"] in CATALOG_STACKS.values()]
            assert not [d for d in records(admin, "domains") if d["name"].startswith("race-")]
            assert not [u for u in records(admin, "users") if u["name"].endswith(tuple(CATALOG_STACKS.values()))]
        print(f"concurrent ups: {', '.join(f'{t:.1f} s' for t in timings)}; answers lost by the proxy: "
              f"{len(proxy.dropped)} ({Counter(proxy.dropped)})")
    finally:
        proxy.stop()
        one.write_text(original)
        for stack in CATALOG_STACKS:
            cli.destroy(stack, check=False)
            cli.run("stack", "rm", "--yes", "--force", stack=stack, check=False)
        cli.up("region-one")
