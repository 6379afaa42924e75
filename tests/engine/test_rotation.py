"""Issue 11, credential rotation with the real engine: after `adminPassword`, the SSH
key or a node's host key changes, `up` only stores the new credential (no Keystone
write, no command run on a node, except files that hold the rotated secret), and
`refresh` and `destroy` of region-two keep working."""
from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.sandbox import sandbox_cmd

pytestmark = pytest.mark.engine

REGION_NODES = {"region-one": ("node1", "node2"), "region-two": ("node3", "node4")}
REQUEST = re.compile(r'"([A-Z]+) (\S+) HTTP/')


def _lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines() if path.exists() else []


class Watch:
    """What happens on the nodes and in the program's Keystone from now on."""

    def __init__(self, sandbox, nodes):
        self.sandbox, self.nodes = sandbox, nodes
        self.access_log = sandbox.node_file("node1", "/var/log/keystone/access.log")
        self.keystone_mark = len(_lines(self.access_log))
        self.ssh_marks = {n: len(_lines(self._sshd_log(n))) for n in nodes}
        self.restarts = {n: _lines(self._restarts(n)) for n in nodes}

    def _sshd_log(self, node):
        return self.sandbox.dir / "nodes" / node / "sshd.log"

    def _restarts(self, node):
        return self.sandbox.node_file(node, "/var/log/openstack-multiregion/restarts.log")

    def keystone_writes(self) -> list[str]:
        requests = [m.groups() for m in map(REQUEST.search, _lines(self.access_log)[self.keystone_mark:]) if m]
        return [f"{verb} {path}" for verb, path in requests
                if verb not in ("GET", "HEAD") and not path.startswith("/v3/auth/tokens")]

    def ssh_logins(self) -> list[str]:
        return [line for n in self.nodes for line in _lines(self._sshd_log(n))[self.ssh_marks[n]:]
                if "Accepted publickey" in line]

    def restarted(self) -> dict[str, list[str]]:
        return {n: _lines(self._restarts(n))[len(self.restarts[n]):] for n in self.nodes
                if _lines(self._restarts(n)) != self.restarts[n]}


def set_secret(cli, stack: str, key: str, value: str) -> None:
    subprocess.run(["pulumi", "--cwd", str(cli.project), "config", "set", "--secret", "--stack", stack,
                    f"openstack-multiregion:{key}"], input=value, text=True, env=cli.env, check=True,
                   capture_output=True)


def resources_of(cli, stack: str, kind: str) -> list[str]:
    import json

    exported = json.loads(cli.run("stack", "export", stack=stack).stdout)["deployment"]["resources"]
    # Records and commands (dynamic resources), not the components that hold them.
    return [r["urn"] for r in exported if r["type"].startswith(f"pulumi-python:dynamic/{kind}")
            and not r["type"].endswith(":KeyRepository")]


def name(step: dict) -> str:
    return step["urn"].split("::")[-1]


def typ(step: dict) -> str:
    return step["urn"].split("::")[2].split("$")[-1]  # the resource's own type, not its parents'


def files_holding(sandbox, nodes, value: str) -> set[str]:
    """`<node>-file-<path with dashes>` of every node file that contains `value`."""
    found = set()
    for node in nodes:
        root = sandbox.dir / "nodes" / node / "root"
        for path in root.rglob("*"):
            if path.is_file() and path.stat().st_size < 1_000_000 and value in path.read_text(errors="ignore"):
                found.add(f"{node}-file-{str(path.relative_to(root)).replace('/', '-')}")
    return found


def check_refresh_and_destroy(cli):
    cli.run("refresh", "--yes", "--skip-preview", stack="region-two")
    cli.destroy("region-two")
    cli.up("region-two")
    assert cli.preview_steps("region-two") == []


def check_refresh_and_a_delete_on_node3(cli):
    """`refresh`, and a delete over SSH on node3, work with the connection the state
    stored: a targeted destroy of node3's manifest (a resource nothing depends on) runs
    its delete exactly as a whole `destroy` would, and the next `up` makes it again.
    (A whole destroy and redeploy of the region would prove nothing more, in minutes.)"""
    cli.run("refresh", "--yes", "--skip-preview", stack="region-two")
    manifest = next(u for u in resources_of(cli, "region-two", "remote:Command")
                    if u.endswith("::nodes-node3-manifest"))
    cli.run("destroy", "--yes", "--skip-preview", "--target", manifest, stack="region-two")
    assert manifest not in resources_of(cli, "region-two", "remote:Command")
    cli.up("region-two")
    assert cli.preview_steps("region-two") == []


def test_rotated_admin_password(sandbox, cli, admin):
    old, new = admin["password"], "rotated-" + secrets.token_urlsafe(18)
    # The operator changes it in Keystone first, then in the Keystone stack's config.
    sandbox.openstack("user", "set", "--password", new, "admin", auth=admin)
    try:
        set_secret(cli, "region-one", "adminPassword", new)
        for stack, nodes in REGION_NODES.items():
            steps = cli.preview_steps(stack)
            assert steps and {s["op"] for s in steps} == {"update"}, steps
            identity = [s for s in steps if "keystone:" in typ(s)]
            # Every identity record of the stack stores the new credential (the region
            # stack gets it through the StackReference) ...
            assert len(identity) == len(resources_of(cli, stack, "keystone:")), [name(s) for s in identity]
            watch = Watch(sandbox, nodes)
            cli.up(stack)
            assert watch.keystone_writes() == []  # ... without a single write to Keystone
            assert watch.restarted() == {}
            # On the nodes, only the files that hold the admin password were pushed (and
            # Keystone's bootstrap step, which sets it, ran again).
            commands = {name(s) for s in steps if "remote:Command" in typ(s)}
            assert len(commands) + len(identity) == len(steps)
            expected = {n for n in files_holding(sandbox, nodes, new)}
            assert {c.split("-", 1)[1] for c in commands} - {"node1-keystone-bootstrap"} == expected, commands
        check_refresh_and_destroy(cli)
    finally:  # the session's other tests use the first password
        rotated = dict(admin, password=new)
        if sandbox.openstack("user", "set", "--password", old, "admin", auth=rotated, check=False).returncode:
            sandbox.openstack("user", "set", "--password", old, "admin", auth=admin, check=False)
        set_secret(cli, "region-one", "adminPassword", old)
        cli.up("region-one")
        cli.up("region-two")


def test_rotated_ssh_key(sandbox, cli):
    keys = sandbox.dir / "ssh"
    authorized = keys / "authorized_keys"
    original = authorized.read_text()
    rotated = keys / "rotated_ed25519"
    rotated.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rotated", "-f", str(rotated)], check=True)
    authorized.write_text(Path(f"{rotated}.pub").read_text())  # new key authorized, old one removed
    try:
        set_secret(cli, "region-two", "sshPrivateKey", rotated.read_text())
        steps = cli.preview_steps("region-two")
        assert {s["op"] for s in steps} == {"update"}
        assert {name(s) for s in steps} == {u.split("::")[-1] for u in resources_of(cli, "region-two",
                                                                                     "remote:Command")}
        watch = Watch(sandbox, REGION_NODES["region-two"])
        cli.up("region-two")
        assert watch.ssh_logins() == [] and watch.restarted() == {} and watch.keystone_writes() == []
        check_refresh_and_a_delete_on_node3(cli)
    finally:
        authorized.write_text(original)
        set_secret(cli, "region-two", "sshPrivateKey", sandbox.private_key)
        cli.up("region-two")


def test_rotated_host_key(sandbox, cli):
    node = sandbox.dir / "nodes" / "node3"
    old_key = (node / "ssh_host_ed25519_key.pub").read_text()
    # The node is reinstalled: new host key, sshd restarted with it.
    pid = int((node / "sshd.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 10
    while time.time() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)
    for f in node.glob("ssh_host_ed25519_key*"):
        f.unlink()
    sandbox_cmd(sandbox.dir, "up")
    assert (node / "ssh_host_ed25519_key.pub").read_text() != old_key
    cli.write_stack_config("region-two")  # the stack file pins the new key
    steps = cli.preview_steps("region-two")
    assert {s["op"] for s in steps} == {"update"}
    node3_commands = {u.split("::")[-1] for u in resources_of(cli, "region-two", "remote:Command")
                      if u.split("::")[-1].startswith("nodes-node3-")}
    assert {name(s) for s in steps} == node3_commands
    watch = Watch(sandbox, REGION_NODES["region-two"])
    cli.up("region-two")
    assert watch.ssh_logins() == [] and watch.restarted() == {} and watch.keystone_writes() == []
    check_refresh_and_a_delete_on_node3(cli)
