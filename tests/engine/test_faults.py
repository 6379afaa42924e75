"""Behaviour under bad input and faults, with the real engine."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import yaml

from tests.sandbox import SUBNET, sandbox_cmd

pytestmark = pytest.mark.engine

BASE = {"region": "RegionBad", "keystone": {"stack": "region-one"}, "services": ["image"],
        "endpointAddress": f"{SUBNET}.200"}
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHxDVG9o8V3l9pQ3B3p1p0y3Jb3q7b8z9q3J6yq3Jb3q"
# One of each class of mistake, through the real engine: what the operator sees (the key
# named, no traceback, no Keystone request). Every rule is checked without the engine
# in tests/unit/test_settings.py (each preview here costs the engine's start).
MALFORMED = [
    ("regoin", {"regoin": "RegionBad"}),  # an unknown key
    ("region", {"region": "Region Bad"}),  # a bad value
    ("services[0]", {"services": ["dns"]}),  # an item of a list
    ("keystone.node", {"keystone": {"node": "nope"}}),  # a nested key naming what does not exist
    ("nodes[1].name", {"nodes": [{"name": "n1", "address": "10.0.0.1", "roles": ["controller"], "hostKey": KEY},
                                 {"name": "n1", "address": "10.0.0.2", "roles": ["compute"], "hostKey": KEY}]}),
    # The classes a review found passing preview and failing mid-deploy (hardening, item 8).
    ("region", {"region": "RegionBad\n"}),  # a trailing newline
    ("keystone.stack", {"keystone": {"stack": "bad"}}),  # the stack itself: only the engine knows its name
    ("services", {"services": "image"}),  # a list given as a string
    ("nodes[0].address", {"nodes": [{"name": "n1", "address": "n1.example.org", "roles": ["controller"],
                                     "hostKey": KEY}]}),  # a DNS name
    ("identity.domains[0].projects[0]", {"identity": {"domains": [{"name": "d", "projects": [42]}]}}),
]


def test_malformed_configs_are_rejected_before_any_change(sandbox, cli):
    access_log = sandbox.node_file("node1", "/var/log/keystone/access.log")
    requests_before = len(access_log.read_text().splitlines())
    cli.write_stack("bad", BASE, {"servicePassword": "x" * 20, "sshPrivateKey": "unused"})
    for key, override in MALFORMED:
        config = {**BASE, **override}
        cli.write_stack("bad", config, {})
        out = cli.run("preview", stack="bad", check=False)
        text = out.stdout + out.stderr
        assert out.returncode != 0, key
        assert f"config openstack-multiregion:{key} = " in text, (key, text[-1500:])
        assert "Traceback" not in text, key
    # Canaries in secret keys, misspelt ones included, never reach the output.
    canary = "CaNaRy-" + "q" * 12
    for key, secret_key in (("adminPasword", "adminPasword"), ("passwords.rabitmq", "passwords"),
                            ("passwords", "passwords")):
        cli.write_stack("bad", BASE, {})
        value = canary if key != "passwords.rabitmq" else '{"rabitmq": "' + canary + '"}'
        cli.write_stack("bad", BASE, {secret_key: value})
        out = cli.run("preview", stack="bad", check=False)
        text = out.stdout + out.stderr
        assert out.returncode != 0 and f"config openstack-multiregion:{key} = " in text, (key, text[-1500:])
        assert canary not in text and "Traceback" not in text, key
        cli.run("config", "rm", f"openstack-multiregion:{secret_key}", stack="bad")
    # Nothing was ever created: even `up` stops at the first line of the program.
    cli.write_stack("bad", {**BASE, **MALFORMED[-1][1]}, {})
    out = cli.up("bad", check=False)
    assert out.returncode != 0
    assert cli.resource_count("bad") <= 1  # at most the (empty) stack itself
    # ... and Keystone was not even asked: no request at all, let alone a write.
    assert access_log.read_text().splitlines()[requests_before:] == []
    cli.run("stack", "rm", "--yes", "--force", stack="bad")


def _sandbox_node_pid(sandbox, node: str) -> int:
    return int((sandbox.dir / "nodes" / node / "sshd.pid").read_text())


def _set_memcached(cli, servers):
    path = cli.config_file("region-two")
    doc = yaml.safe_load(path.read_text())
    key = "openstack-multiregion:memcachedServers"
    if servers:
        doc["config"][key] = servers
    else:
        doc["config"].pop(key, None)
    path.write_text(yaml.safe_dump(doc))


def test_node_down_names_the_node_and_a_rerun_converges(sandbox, cli):
    ctl = yaml.safe_load(cli.config_file("region-two").read_text())["config"]["openstack-multiregion:nodes"][0]["address"]
    os.kill(_sandbox_node_pid(sandbox, "node3"), signal.SIGTERM)  # the controller's sshd
    time.sleep(0.5)
    try:
        _set_memcached(cli, [f"{ctl}:11211", f"{ctl}:11213"])
        out = cli.up("region-two", check=False)
        assert out.returncode != 0
        assert "node node3" in out.stdout + out.stderr
        assert "cannot connect over SSH" in out.stdout + out.stderr
    finally:
        sandbox_cmd(sandbox.dir, "up")  # brings node3's sshd back
    cli.up("region-two")  # no manual cleanup
    assert cli.preview_steps("region-two") == []
    _set_memcached(cli, None)
    cli.up("region-two")


def keystone_unit(cli) -> str:
    return [line for line in cli.run("stack", "--show-urns", stack="region-one").stdout.split()
            if line.startswith("urn:") and line.endswith("unit-keystone")][0]


def test_keystone_stopped_mid_run_then_rerun_converges_without_duplicates(sandbox, cli, admin):
    keystone_pid = sandbox.dir / "nodes" / "node1" / "root" / "run" / "openstack-multiregion" / "keystone.pid"
    path = cli.config_file("region-two")
    original = path.read_text()
    doc = yaml.safe_load(original)
    doc["config"]["openstack-multiregion:endpointAddress"] = f"{SUBNET}.98"
    path.write_text(yaml.safe_dump(doc))
    run = subprocess.Popen(["pulumi", "--cwd", str(cli.project), "up", "--yes", "--skip-preview", "--stack",
                            "region-two", "--non-interactive"], env=cli.env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    # Keystone goes away as soon as the first endpoint update is under way.
    seen = []
    for line in run.stdout:
        seen.append(line)
        if "keystone:Endpoint" in line and "updating" in line:
            break
    os.kill(int(keystone_pid.read_text()), signal.SIGTERM)
    rest, _ = run.communicate(timeout=600)
    output = "".join(seen) + rest
    path.write_text(original)
    try:
        assert run.returncode != 0, output[-2000:]
    except AssertionError:
        cli.up("region-one", "--replace", keystone_unit(cli))  # leave Keystone running for the next tests
        raise
    assert f"{SUBNET}.1:5000" in output or "Unable to establish connection" in output, output[-2000:]
    # Recovery: restart Keystone through its own stack, then rerun the region.
    cli.up("region-one", "--replace", keystone_unit(cli))
    cli.up("region-two")
    listed = sandbox.openstack_json("endpoint", "list", auth=admin)
    triples = [(e["Service Type"], e["Interface"]) for e in listed if e["Region"] == "RegionTwo"]
    assert len(triples) == 18 and len(set(triples)) == 18
    assert cli.preview_steps("region-two") == []


def test_interrupted_up_recovers_with_the_documented_commands(sandbox, cli, admin):
    cli.write_stack_config("region-three")
    run = subprocess.Popen(["pulumi", "--cwd", str(cli.project), "up", "--yes", "--skip-preview", "--stack",
                            "region-three", "--non-interactive"], env=cli.env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    time.sleep(6)  # Keystone records and node files are being created
    run.send_signal(signal.SIGINT)
    run.communicate(timeout=600)
    # README, "When things go wrong": refresh clearing pending creates, then up.
    cli.run("refresh", "--yes", "--clear-pending-creates", "--skip-preview", stack="region-three")
    cli.up("region-three")
    listed = sandbox.openstack_json("endpoint", "list", auth=admin)
    triples = [(e["Service Type"], e["Interface"]) for e in listed if e["Region"] == "RegionThree"]
    assert len(triples) == 18 and len(set(triples)) == 18
    assert cli.preview_steps("region-three") == []
    cli.destroy("region-three")
