"""Shared fixtures. Tests marked `engine` run the real Pulumi engine against a
sandbox (real Keystone, real sshd nodes on loopback) created for the session."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.sandbox import SandboxInfo, sandbox_cmd, start_sandbox


def pytest_configure(config):
    config.addinivalue_line("markers", "engine: runs the real Pulumi engine against the sandbox (slow)")


@pytest.fixture(scope="session")
def sandbox() -> SandboxInfo:
    if not shutil.which("pulumi"):
        pytest.fail("the pulumi CLI is not on PATH: run the tests through scripts/test.sh")
    directory = Path(tempfile.mkdtemp(prefix="omr-test-sandbox-"))
    # A subnet of its own, so tests never collide with the main sandbox (127.0.1.x).
    info = start_sandbox(directory, subnet="127.0.77", nodes=6)
    yield info
    # OMR_KEEP_SANDBOX=1 keeps the directory (logs, state) for a post-mortem.
    sandbox_cmd(directory, "down", *([] if os.environ.get("OMR_KEEP_SANDBOX") else ["--purge"]))
