"""Shared fixtures. Tests marked `engine` run the real Pulumi engine against a
sandbox (real Keystone, real sshd nodes on loopback) created for the session."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.sandbox import (MACHINES_SUBNET, PRINTABLE_PASSWORDS, SUBNET, CommandLineSampler, PulumiCli, SandboxInfo,
                           sandbox_cmd, start_sandbox)


def pytest_configure(config):
    config.addinivalue_line("markers", "engine: runs the real Pulumi engine against the sandbox (slow)")
    config.addinivalue_line("markers", "machines: runs on the test bed of real machines (the `machines` fixtures); "
                                       "`scripts/test.sh -m machines` runs them alone")
    config.addinivalue_line("markers", "last: changes the shared test-bed cloud for good (CA rotation, destroy): "
                                       "runs after every other test")


def pytest_collection_modifyitems(session, config, items):
    """Tests that change the shared cloud for good run last; the rest keep their order."""
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)


PHASES: list[tuple[str, float]] = []  # (phase, seconds): deployments the fixtures make
MODULE_SECONDS: dict[str, float] = {}  # test module -> setup + call + teardown seconds


@contextlib.contextmanager
def timed(phase: str):
    """Records how long a phase of the run took, for the per-phase timings at the end."""
    start = time.monotonic()
    try:
        yield
    finally:
        PHASES.append((phase, time.monotonic() - start))


def pytest_runtest_logreport(report):
    module = report.nodeid.split("::")[0]
    MODULE_SECONDS[module] = MODULE_SECONDS.get(module, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    """Per-phase timings: the shared deployments, then each test module (which includes
    the deployments its fixtures made first)."""
    terminalreporter.section("per-phase timings")
    for phase, seconds in PHASES:
        terminalreporter.write_line(f"{seconds:7.0f}s  {phase}")
    for module, seconds in sorted(MODULE_SECONDS.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{seconds:7.0f}s  {module}")


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
    """The test bed's cloud, deployed once per run: region-one (the shared Keystone and
    RegionOne) from bare machines with `pulumi up`, then region-two and the `ha` region
    (tests/engine/test_ha_machines.py) from bare machines AT THE SAME TIME, as two
    operators would. Every node is named unlike its machine's hostname.

    region-two's passwords (every service user, database user, RabbitMQ, the metadata
    secret) are the operator's, made of every printable ASCII character and each
    holding a canary; its `up` runs with every process command line on the host and on
    its nodes sampled (cli.seen_command_lines, cli.up_output)."""
    from tests.engine.test_ha_machines import write_ha_stack

    cli = PulumiCli(machines)
    with timed("deploy region-one"):
        cli.write_stack_config("region-one")
        cli.up("region-one", timeout=1800)
    cli.write_stack_config("region-two")
    cli.set_secret("region-two", "passwords", json.dumps(PRINTABLE_PASSWORDS))
    ha_stack = write_ha_stack(machines, cli)
    with timed("deploy region-two and the ha region at once"), \
            CommandLineSampler(machines, ("r2-ctl", "r2-cmp")) as sampler:
        results = at_once({"region-two": lambda: cli.up("region-two", timeout=2400),
                           ha_stack: lambda: cli.up(ha_stack, timeout=2400)})
    cli.seen_command_lines = sampler.seen
    cli.up_output = results["region-two"]
    return cli


def at_once(runs: dict) -> dict:
    """Run each callable in its own thread; their results by name, or the first error."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(runs)) as pool:
        futures = {name: pool.submit(run) for name, run in runs.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.fixture(scope="session")
def machine_admin(machine_cli) -> dict:
    return machine_cli.outputs("region-one", show_secrets=True)["adminAuth"]
