"""Shared fixtures. Tests marked `engine` run the real Pulumi engine against a
sandbox (real Keystone, real sshd nodes on loopback) created for the session."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.sandbox import PulumiCli, SandboxInfo, sandbox_cmd, start_sandbox


def pytest_configure(config):
    config.addinivalue_line("markers", "engine: runs the real Pulumi engine against the sandbox (slow)")


@pytest.fixture(scope="session")
def sandbox() -> SandboxInfo:
    if not shutil.which("pulumi"):
        pytest.fail("the pulumi CLI is not on PATH: run the tests through scripts/test.sh")
    directory = Path(tempfile.mkdtemp(prefix="omr-test-sandbox-"))
    # A subnet of its own, so tests never collide with the main sandbox (127.0.1.x).
    info = start_sandbox(directory, subnet="127.0.77", nodes=9)
    yield info
    # OMR_KEEP_SANDBOX=1 keeps the directory (logs, state) for a post-mortem.
    sandbox_cmd(directory, "down", *([] if os.environ.get("OMR_KEEP_SANDBOX") else ["--purge"]))


@pytest.fixture(scope="session")
def cli(sandbox) -> PulumiCli:
    """region-one (shared Keystone + RegionOne) and region-two, deployed with `pulumi up`."""
    cli = PulumiCli(sandbox)
    for stack in ("region-one", "region-two"):
        cli.write_stack_config(stack)
        cli.up(stack)
    yield cli
    for stack in ("region-three", "region-two", "region-one"):
        cli.destroy(stack, check=False)


@pytest.fixture(scope="session")
def admin(cli) -> dict:
    """The shared Keystone's admin credential, from region-one's secret output."""
    return cli.outputs("region-one", show_secrets=True)["adminAuth"]
