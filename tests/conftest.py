"""Shared fixtures. Tests marked `engine` run the real Pulumi engine against a
sandbox (real Keystone, real sshd nodes on loopback) created for the session."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.sandbox import (MACHINES_SUBNET, PRINTABLE_PASSWORDS, SUBNET, CommandLineSampler, PulumiCli, SandboxInfo,
                           sandbox_cmd, start_sandbox)


def pytest_configure(config):
    config.addinivalue_line("markers", "engine: runs the real Pulumi engine against the sandbox (slow)")


@pytest.fixture(scope="session")
def sandbox() -> SandboxInfo:
    if not shutil.which("pulumi"):
        pytest.fail("the pulumi CLI is not on PATH: run the tests through scripts/test.sh")
    directory = Path(tempfile.mkdtemp(prefix="omr-test-sandbox-"))
    # A subnet of its own, so tests never collide with the main sandbox (127.0.1.x).
    info = start_sandbox(directory, subnet=SUBNET, nodes=9)
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


@pytest.fixture(scope="session")
def machines() -> SandboxInfo:
    """The test bed: eight real Debian 12 machines (systemd-nspawn), nothing installed: two
    regions of two, and an HA region of three controllers and a compute."""
    if not shutil.which("pulumi"):
        pytest.fail("the pulumi CLI is not on PATH: run the tests through scripts/test.sh")
    reused = os.environ.get("OMR_MACHINES_DIR")  # an existing machines sandbox: kept as it is
    directory = Path(reused) if reused else Path(tempfile.mkdtemp(prefix="omr-test-machines-"))
    info = start_sandbox(directory, subnet=MACHINES_SUBNET, nodes=8, kind="machines") if not reused else \
        SandboxInfo(directory, __import__("json").loads((directory / "sandbox.json").read_text()))
    yield info
    if not reused:
        sandbox_cmd(directory, "down", *([] if os.environ.get("OMR_KEEP_SANDBOX") else ["--purge"]))


@pytest.fixture(scope="session")
def machine_cli(machines) -> PulumiCli:
    """region-one (the shared Keystone + RegionOne) and region-two brought up from the
    bare machines with `pulumi up`: everything installed, configured and started.

    region-two's passwords (every service user, database user, RabbitMQ, the metadata
    secret) are the operator's, made of every printable ASCII character and each
    holding a canary; its `up` runs with every process command line on the host and on
    its nodes sampled (cli.seen_command_lines, cli.up_output)."""
    cli = PulumiCli(machines)
    cli.write_stack_config("region-one")
    cli.up("region-one", timeout=1800)
    cli.write_stack_config("region-two")
    cli.set_secret("region-two", "passwords", json.dumps(PRINTABLE_PASSWORDS))
    with CommandLineSampler(machines, ("node3", "node4")) as sampler:
        cli.up_output = cli.up("region-two", timeout=1800)
    cli.seen_command_lines = sampler.seen
    return cli


@pytest.fixture(scope="session")
def machine_admin(machine_cli) -> dict:
    return machine_cli.outputs("region-one", show_secrets=True)["adminAuth"]
