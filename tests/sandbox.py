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
        cmd = [str(Path(sys.executable).parent / "openstack"), *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, check=check, timeout=120)

    def openstack_json(self, *args: str, region: str | None = None, auth: dict | None = None):
        return json.loads(self.openstack(*args, "-f", "json", region=region, auth=auth).stdout)


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
            raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n"
                                 f"{result.stderr[-4000:]}")
        return result

    def up(self, stack: str, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("up", "--yes", "--skip-preview", "--suppress-permalink", *extra, stack=stack, check=check)

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

    def resource_count(self, stack: str) -> int:
        exported = json.loads(self.run("stack", "export", stack=stack).stdout)
        return len(exported.get("deployment", {}).get("resources") or [])
