"""Issue 11, SSH with the real engine: a node whose sshd stops answering mid-command
fails the `up` within the keepalive bound, naming the node and the step; a command
over its timeout fails too; a deploy user with passwordless sudo works."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.sandbox import REPO, SANDBOX_SCRIPT

pytestmark = pytest.mark.engine

NODE = "node9"  # used by no other stack of the session's regions (the HA tests reuse it after)
INTERVAL, COUNT = 2, 3  # the stated bound: a silent node fails the step after 6 s


def ssh_project(sandbox) -> Path:
    """tests/projects/ssh, run from inside the sandbox so its stack file stays there."""
    project = sandbox.dir / "ssh-project"
    project.mkdir(exist_ok=True)
    for name in ("Pulumi.yaml", "__main__.py"):
        link = project / name
        if not link.is_symlink():
            link.symlink_to(REPO / "tests" / "projects" / "ssh" / name)
    return project


def pulumi(cli, project: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["pulumi", "--cwd", str(project), *args, "--stack", "ssh", "--non-interactive"],
                          env=cli.env, capture_output=True, text=True, **kw)


def configure(sandbox, cli, project: Path, command: str, timeout: int | None = None) -> None:
    node = next(n for n in sandbox.nodes if n["name"] == NODE)
    subprocess.run(["pulumi", "--cwd", str(project), "stack", "select", "--create", "ssh", "--non-interactive"],
                   env=cli.env, check=True, capture_output=True)
    values = {"node": NODE, "host": node["address"], "port": str(node["port"]), "hostKey": node["host_key"],
              "keepaliveInterval": str(INTERVAL), "keepaliveCountMax": str(COUNT), "command": command}
    if timeout:
        values["timeout"] = str(timeout)
    for key, value in values.items():
        subprocess.run(["pulumi", "--cwd", str(project), "config", "set", "--stack", "ssh", "--non-interactive",
                        key, "--", value], env=cli.env, check=True, capture_output=True)
    subprocess.run(["pulumi", "--cwd", str(project), "config", "set", "--secret", "sshPrivateKey", "--stack", "ssh"],
                   input=sandbox.private_key, env=cli.env, text=True, check=True, capture_output=True)


def sshd_processes(sandbox) -> list[int]:
    """The node's sshd: the listener and every sshd process under it (one per connection)."""
    listener = int((sandbox.dir / "nodes" / NODE / "sshd.pid").read_text())
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            content = stat.read_text()
        except OSError:
            continue
        comm = content[content.index("(") + 1:content.rindex(")")]
        table[int(stat.parent.name)] = (comm, int(content[content.rindex(")") + 2:].split()[1]))
    found, todo = [], [listener]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += [child for child, (comm, ppid) in table.items() if ppid == pid and comm.startswith("sshd")]
    return found


def kill_leftover(marker: Path) -> None:
    """The slow command's process (its pid is in the marker): ours to end."""
    try:
        os.kill(int(marker.read_text().strip()), signal.SIGKILL)
    except (OSError, ValueError):
        pass
    marker.unlink(missing_ok=True)


def remove_stack(cli, project: Path) -> None:
    # A run killed by the test leaves its lock behind (file backends have no `pulumi cancel`).
    for lock in (cli.sb.dir / "state" / ".pulumi" / "locks" / "organization" / "omr-ssh" / "ssh").glob("*.json"):
        lock.unlink()
    pulumi(cli, project, "refresh", "--yes", "--clear-pending-creates", "--skip-preview")
    pulumi(cli, project, "destroy", "--yes", "--skip-preview")
    pulumi(cli, project, "stack", "rm", "--yes", "--force")


def test_a_node_that_stops_answering_fails_the_up_within_the_keepalive_bound(sandbox, cli):
    project = ssh_project(sandbox)
    marker = sandbox.dir / "nodes" / NODE / "root" / "slow-step.pid"
    marker.unlink(missing_ok=True)
    configure(sandbox, cli, project, f"echo $$ > {marker}; exec sleep 300")
    run = subprocess.Popen(["pulumi", "--cwd", str(project), "up", "--yes", "--skip-preview", "--stack", "ssh",
                            "--non-interactive"], env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, start_new_session=True)
    stopped: list[int] = []
    try:
        deadline = time.time() + 120
        while not marker.exists() and time.time() < deadline and run.poll() is None:
            time.sleep(0.2)
        assert marker.exists(), "the slow step never started"
        stopped = sshd_processes(sandbox)
        assert len(stopped) >= 2  # the listener and the connection's process(es)
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        output, _ = run.communicate(timeout=120)
        took = time.monotonic() - frozen_at
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        if run.poll() is None:  # still hanging: end it with the plugins it started
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
        kill_leftover(marker)
        remove_stack(cli, project)
    assert run.returncode != 0
    # INTERVAL * COUNT of silence, at most one more interval to notice, and the engine's exit.
    assert took < INTERVAL * (COUNT + 1) + 10, (took, output[-2000:])
    assert f"node {NODE} (" in output and "stopped answering" in output, output[-2000:]
    assert "during step slow-step (echo $$ >" in output, output[-2000:]
    assert "PRIVATE KEY" not in output
    print(f"sshd frozen -> up failed in {took:.1f} s (bound {INTERVAL * COUNT} s + one interval)")


def test_a_command_over_its_timeout_fails_the_up(sandbox, cli):
    project = ssh_project(sandbox)
    marker = sandbox.dir / "nodes" / NODE / "root" / "slow-step.pid"
    configure(sandbox, cli, project, f"echo $$ > {marker}; exec sleep 60", timeout=3)
    started = time.monotonic()
    try:
        out = pulumi(cli, project, "up", "--yes", "--skip-preview", timeout=120)
    finally:
        took = time.monotonic() - started
        kill_leftover(marker)
        remove_stack(cli, project)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert f"node {NODE} (" in text and "step slow-step (echo $$ >" in text, text[-2000:]
    assert "did not finish within 3 s (ssh.commandTimeout)" in text, text[-2000:]
    assert took < 40, took


def test_a_deploy_user_with_passwordless_sudo(sandbox, cli):
    user = subprocess.run([sys.executable, str(SANDBOX_SCRIPT), "--dir", str(sandbox.dir), "sudo-user"],
                          check=True, capture_output=True, text=True).stdout.strip()
    path = cli.config_file("region-two")
    original = path.read_text()
    doc = yaml.safe_load(original)
    compute = doc["config"]["openstack-multiregion:nodes"][1]
    assert compute["name"] == "node4"
    compute["sshUser"] = user
    path.write_text(yaml.safe_dump(doc))
    sshd_log = sandbox.dir / "nodes" / "node4" / "sshd.log"
    nova = sandbox.node_file("node4", "/etc/nova/nova.conf")
    try:
        steps = cli.preview_steps("region-two")
        assert steps and all("nodes-node4-" in s["urn"] and s["op"] == "update" for s in steps)
        mark, before = len(sshd_log.read_text().splitlines()), nova.stat().st_mtime_ns
        cli.up("region-two")
        logins = [line for line in sshd_log.read_text().splitlines()[mark:] if "Accepted publickey" in line]
        assert logins and all(f"for {user} from" in line for line in logins), logins
        # Every command ran as root through sudo: the file was written again, root-owned,
        # 0640, with the service password that travelled on stdin.
        password = sandbox.conf_value("node3", "/etc/nova/nova.conf", "keystone_authtoken", "password")
        info = nova.stat()
        assert info.st_mtime_ns != before and info.st_uid == 0 and oct(info.st_mode & 0o777) == "0o640"
        assert password.strip() in nova.read_text()
        assert cli.preview_steps("region-two") == []
        cli.run("refresh", "--yes", "--skip-preview", stack="region-two")
    finally:
        path.write_text(original)
        cli.up("region-two")
