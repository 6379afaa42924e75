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
        return self.dir / "nodes" / node / "root" / path.lstrip("/")

    def openstack(self, *args: str, region: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """The stock `openstack` CLI against the sandbox Keystone; password via environment."""
        env = dict(os.environ, OS_AUTH_URL=self.keystone_url, OS_USERNAME="admin", OS_PASSWORD=self.admin_password,
                   OS_PROJECT_NAME="admin", OS_USER_DOMAIN_NAME="Default", OS_PROJECT_DOMAIN_NAME="Default",
                   OS_IDENTITY_API_VERSION="3", PYTHONWARNINGS="ignore")
        if region:
            env["OS_REGION_NAME"] = region
        cmd = [str(Path(sys.executable).parent / "openstack"), *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, check=check, timeout=120)

    def openstack_json(self, *args: str, region: str | None = None):
        return json.loads(self.openstack(*args, "-f", "json", region=region).stdout)


def sandbox_cmd(directory: Path, *args: str) -> None:
    subprocess.run([sys.executable, str(SANDBOX_SCRIPT), "--dir", str(directory), *args], check=True)


def start_sandbox(directory: Path, subnet: str, nodes: int) -> SandboxInfo:
    sandbox_cmd(directory, "up", "--subnet", subnet, "--nodes", str(nodes))
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
