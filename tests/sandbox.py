"""Test helpers: a sandbox per test session and real-engine stacks inside it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pulumi import automation as auto

REPO = Path(__file__).resolve().parent.parent
SANDBOX_SCRIPT = REPO / "scripts" / "sandbox.py"
# The loopback /24 of the test sandbox; another one lets two test runs share a machine.
SUBNET = os.environ.get("OMR_TEST_SUBNET", "127.0.77")
# Passwords for every purpose, each made of every printable ASCII character, with
# blanks and quotes at both ends, and a canary that must appear nowhere in clear.
CANARY = "CaNaRy-5d1e"
PRINTABLE = "".join(chr(c) for c in range(32, 127))
PRINTABLE_PASSWORDS = {
    # oslo.messaging cannot carry a '/' in RabbitMQ's password, and dogpile.cache strips
    # memcached's blanks at both ends (the config refuses both).
    purpose: (f" '{CANARY}-{purpose}{PRINTABLE if purpose != 'rabbitmq' else PRINTABLE.replace('/', '')}\" "
              if purpose != "memcached" else f"'{CANARY}-{purpose}{PRINTABLE}\"")
    for purpose in ("keystone-glance", "keystone-placement", "keystone-nova", "keystone-neutron", "keystone-cinder",
                    "database-glance", "database-placement", "database-nova", "database-neutron", "database-cinder",
                    "rabbitmq", "metadata-proxy", "memcached")
}
# The /24 of the test bed's machines (inside 198.18.0.0/15, reserved for tests).
MACHINES_SUBNET = os.environ.get("OMR_MACHINES_SUBNET", "198.18.78")


# A stack's node name -> the test bed's machine (its hostname), for names a test gives
# its own stacks; region n of `sandbox.py stack-config` is r<n>-ctl / r<n>-cmp.
MACHINE_ALIASES: dict[str, str] = {}


def machine_name(node: str) -> str:
    """The machine behind a node name of a stack (or the machine's own name)."""
    import re

    match = re.fullmatch(r"r(\d+)-(ctl|cmp)", node)
    if match:
        return f"node{2 * int(match[1]) - (1 if match[2] == 'ctl' else 0)}"
    return MACHINE_ALIASES.get(node, node)


@dataclass
class SandboxInfo:
    dir: Path
    data: dict

    @property
    def keystone_url(self) -> str:
        return self.data["keystone_url"]

    @property
    def admin_password(self) -> str:
        return self.data["admin_password"]

    @property
    def nodes(self) -> list[dict]:
        return self.data["nodes"]

    @property
    def private_key(self) -> str:
        return (self.dir / "ssh" / "id_ed25519").read_text()

    def state_text(self) -> str:
        """Everything the file:// state backend holds, as plain text."""
        return "\n".join(p.read_text(errors="replace") for p in (self.dir / "state").rglob("*") if p.is_file())

    def node_file(self, node: str, path: str) -> Path:
        """A file of a node as the host sees it (its file root, or its container's root)."""
        root = next(n["root"] for n in self.nodes if n["name"] == machine_name(node))
        return Path(root) / path.lstrip("/")

    def openstack(self, *args: str, region: str | None = None, check: bool = True,
                  auth: dict | None = None) -> subprocess.CompletedProcess:
        """The stock `openstack` CLI, against the standalone sandbox Keystone or the
        Keystone that `auth` (an adminAuth stack output) names; password via environment."""
        auth = auth or {"authUrl": self.keystone_url, "password": self.admin_password}
        env = dict(os.environ, OS_AUTH_URL=auth["authUrl"], OS_USERNAME="admin", OS_PASSWORD=auth["password"],
                   OS_PROJECT_NAME="admin", OS_USER_DOMAIN_NAME="Default", OS_PROJECT_DOMAIN_NAME="Default",
                   OS_IDENTITY_API_VERSION="3", PYTHONWARNINGS="ignore")
        if region:
            env["OS_REGION_NAME"] = region
        if auth.get("caCert"):  # an https Keystone: the CA, and nothing else, makes the client trust it
            env["OS_CACERT"] = str(self.ca_file(auth["caCert"]))
        cmd = [str(Path(sys.executable).parent / "openstack"), *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, check=check, timeout=120)

    def ca_file(self, ca_pem: str) -> Path:
        """The CA as a file in the sandbox directory (clients take a path)."""
        import hashlib

        path = self.dir / f"ca-{hashlib.sha256(ca_pem.encode()).hexdigest()[:12]}.pem"
        if not path.exists():
            path.write_text(ca_pem)
        return path

    def openstack_json(self, *args: str, region: str | None = None, auth: dict | None = None):
        return json.loads(self.openstack(*args, "-f", "json", region=region, auth=auth).stdout)


    def conf_value(self, node: str, path: str, section: str, option: str) -> str:
        """An option of an ini file on a node (e.g. a service user's generated password)."""
        import configparser

        conf = configparser.ConfigParser(interpolation=None, strict=False)
        conf.read_string(self.node_file(node, path).read_text())
        return conf.get(section, option)

    def ssh(self, node: str, command: str, check: bool = True) -> str:
        """Run a command as root on a node over SSH (its pinned host key); stdout."""
        from components import remote

        spec = next(n for n in self.nodes if n["name"] == machine_name(node))
        connection = {"node": node, "host": spec["address"], "port": spec["port"], "user": "root",
                      "private_key": self.private_key, "host_key": spec["host_key"]}
        try:
            return remote.run(connection, command)[0]
        except remote.RemoteError:
            if check:
                raise
            return ""


def failure_excerpt(output: str, limit: int = 6000) -> str:
    """What a failed engine run said: its Diagnostics section (each resource's error),
    which the stack outputs after it would push out of a plain tail."""
    start = output.find("Diagnostics:")
    if start < 0:
        return output[-limit:]
    end = output.find("\nOutputs:", start)
    return output[start:end if end > 0 else None][:limit]


def sandbox_cmd(directory: Path, *args: str) -> None:
    subprocess.run([sys.executable, str(SANDBOX_SCRIPT), "--dir", str(directory), *args], check=True)


def start_sandbox(directory: Path, subnet: str, nodes: int, kind: str = "loopback") -> SandboxInfo:
    sandbox_cmd(directory, "up", "--kind", kind, "--subnet", subnet, "--nodes", str(nodes))
    return SandboxInfo(directory, json.loads((directory / "sandbox.json").read_text()))


def engine_env(sb: SandboxInfo) -> dict[str, str]:
    """Environment for the Pulumi CLI: local state and passphrase inside the sandbox."""
    return {
        "PULUMI_BACKEND_URL": f"file://{sb.dir / 'state'}",
        "PULUMI_CONFIG_PASSPHRASE_FILE": str(sb.dir / "passphrase"),
        "PULUMI_PYTHON_CMD": sys.executable,
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "PYTHONPATH": str(REPO),
        "PYTHONWARNINGS": "ignore",
    }


def stack(sb: SandboxInfo, project_dir: Path, name: str) -> auto.Stack:
    return auto.create_or_select_stack(stack_name=name, work_dir=str(project_dir),
                                       opts=auto.LocalWorkspaceOptions(env_vars=engine_env(sb),
                                                                       pulumi_home=os.environ.get("PULUMI_HOME")))


class PulumiCli:
    """The real `pulumi` CLI on this repository's program, run in the sandbox's
    project directory (links to the program + the sandbox's stack files)."""

    def __init__(self, sb: SandboxInfo):
        self.sb = sb
        self.env = dict(os.environ, **engine_env(sb))

    @property
    def project(self) -> Path:
        return self.sb.dir / "project"

    def config_file(self, stack: str) -> Path:
        return self.project / f"Pulumi.{stack}.yaml"

    def write_stack_config(self, stack: str) -> Path:
        out = subprocess.run([sys.executable, str(SANDBOX_SCRIPT), "--dir", str(self.sb.dir), "stack-config", stack],
                             env=self.env, check=True, capture_output=True, text=True)
        return Path(out.stdout.strip())

    def run(self, *args: str, stack: str, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
        cmd = ["pulumi", "--cwd", str(self.project), *args, "--stack", stack, "--non-interactive"]
        result = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{failure_excerpt(result.stdout)}\n"
                                 f"{result.stderr[-4000:]}")
        return result

    def up(self, stack: str, *extra: str, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
        return self.run("up", "--yes", "--skip-preview", "--suppress-permalink", *extra, stack=stack, check=check,
                        timeout=timeout)

    def preview_steps(self, stack: str, *extra: str) -> list[dict]:
        """The engine's planned steps (op, urn, type) for a preview, from its JSON output."""
        out = self.run("preview", "--json", *extra, stack=stack)
        # "read" (the StackReference) and "refresh" (reading live state) are not changes.
        return [s for s in json.loads(out.stdout).get("steps", []) if s.get("op") not in ("same", "read", "refresh")]

    def destroy(self, stack: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("destroy", "--yes", "--skip-preview", "--suppress-permalink", stack=stack, check=check)

    def outputs(self, stack: str, show_secrets: bool = False) -> dict:
        extra = ["--show-secrets"] if show_secrets else []
        return json.loads(self.run("stack", "output", "--json", *extra, stack=stack).stdout)

    def write_stack(self, stack: str, config: dict, secrets: dict[str, str]) -> Path:
        """A stack file of our own in the sandbox project; secrets set through stdin."""
        import yaml

        subprocess.run(["pulumi", "--cwd", str(self.project), "stack", "select", "--create", stack,
                        "--non-interactive"], env=self.env, check=True, capture_output=True)
        path = self.config_file(stack)
        doc = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
        # Keep the secrets set before (they are `secure:` values), replace the rest.
        kept = {k: v for k, v in doc.get("config", {}).items() if isinstance(v, dict) and "secure" in v}
        doc["config"] = {**kept, **{f"openstack-multiregion:{k}": v for k, v in config.items()}}
        path.write_text(yaml.safe_dump(doc))
        for key, value in secrets.items():
            subprocess.run(["pulumi", "--cwd", str(self.project), "config", "set", "--secret", "--stack", stack,
                            f"openstack-multiregion:{key}"], input=value, text=True, env=self.env, check=True,
                           capture_output=True)
        return path

    def set_secret(self, stack: str, key: str, value: str) -> None:
        """`pulumi config set --secret`, the value through stdin."""
        subprocess.run(["pulumi", "--cwd", str(self.project), "config", "set", "--secret", "--stack", stack,
                        f"openstack-multiregion:{key}"], input=value, text=True, env=self.env, check=True,
                       capture_output=True)

    def urn(self, stack: str, name: str) -> str:
        """The URN of the stack's resource named `name` (for --replace / --target)."""
        exported = json.loads(self.run("stack", "export", stack=stack).stdout)
        urns = [r["urn"] for r in exported["deployment"]["resources"] if r["urn"].endswith(f"::{name}")]
        assert len(urns) == 1, (name, urns)
        return urns[0]

    def resource_count(self, stack: str) -> int:
        exported = json.loads(self.run("stack", "export", stack=stack).stdout)
        return len(exported.get("deployment", {}).get("resources") or [])


class CommandLineSampler:
    """Every process command line on this machine and on `nodes` (over SSH), sampled
    while a `with` block runs."""

    def __init__(self, sb: SandboxInfo, nodes=()):
        import threading

        self.sb, self.nodes, self.seen = sb, nodes, set()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._sample, args=(n,), daemon=True) for n in (None, *nodes)]

    def _sample(self, node):
        import time

        while not self._stop.is_set():
            if node is None:
                out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
            else:
                out = self.sb.ssh(node, "ps -eo args", check=False)
            self.seen.update(out.splitlines())
            time.sleep(0.05 if node is None else 0.2)

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join()
