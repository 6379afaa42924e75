#!/usr/bin/env python3
"""Benchmark: both regions from fresh machines, and the run that changes nothing.

    . ~/.cache/openstack-multiregion/env.sh && python bench/machines.py [--out F]

On a machines sandbox of its own (four new systemd-nspawn machines, bare Debian 12,
on 198.18.88.0/24) it times, in one run:

- the first `pulumi up` of region-one (the shared Keystone + RegionOne) and of
  region-two: packages, the OpenStack virtualenv, MariaDB/RabbitMQ/memcached, every
  service started and checked ready;
- `pulumi preview` and `pulumi up` of each stack again, when nothing changed;
- a server booted in RegionTwo right after (`openstack server create --wait`).

Ratios are against the first `pulumi up` of the same stack in the same run. The
machine-wide caches (root filesystem, wheelhouse, the apt proxy's packages) are
reported as found: cold on a new machine, warm after one run.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.run import (SANDBOX_SCRIPT, BenchError, fmt, git_state, log, machine, resource_summary, run,  # noqa: E402
                       table)

SUBNET = "198.18.88"
STACKS = ("region-one", "region-two")
DEFAULT_OUT = REPO / "bench" / "results" / "machines.json"
CACHE = Path(os.environ.get("OMR_CACHE") or Path.home() / ".cache" / "openstack-multiregion")


def cache_state() -> dict:
    def size(path: Path) -> int:
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0
    return {name: round(size(CACHE / name) / 1e6) for name in ("rootfs", "wheelhouse", "apt-cacher-ng")}


class MachinesBench:
    def __init__(self, directory: Path):
        self.dir = directory
        self.env = dict(os.environ, PULUMI_BACKEND_URL=f"file://{directory / 'state'}",
                        PULUMI_CONFIG_PASSPHRASE_FILE=str(directory / "passphrase"), PYTHONWARNINGS="ignore",
                        PULUMI_PYTHON_CMD=sys.executable, PYTHONPATH=str(REPO))

    def sandbox(self, *args: str) -> None:
        run([sys.executable, str(SANDBOX_SCRIPT), "--dir", str(self.dir), *args], what=f"sandbox.py {args[0]}",
            env=self.env, timeout=1800)

    def pulumi(self, *args: str, stack: str) -> tuple[float, dict]:
        start = time.monotonic()
        out = run(["pulumi", "--cwd", str(self.dir / "project"), *args, "--stack", stack, "--non-interactive"],
                  what=f"pulumi {args[0]} {stack}", env=self.env, timeout=3600)
        return round(time.monotonic() - start, 1), resource_summary(out.stdout)

    def openstack(self, *args: str) -> None:
        admin = json.loads(run(["pulumi", "--cwd", str(self.dir / "project"), "stack", "output", "adminAuth",
                                "--show-secrets", "--json", "--stack", "region-one", "--non-interactive"],
                               what="admin credential", env=self.env).stdout)
        env = dict(self.env, OS_AUTH_URL=admin["authUrl"], OS_USERNAME="admin", OS_PASSWORD=admin["password"],
                   OS_PROJECT_NAME="admin", OS_USER_DOMAIN_NAME="Default", OS_PROJECT_DOMAIN_NAME="Default",
                   OS_IDENTITY_API_VERSION="3", OS_REGION_NAME="RegionTwo")
        run([str(Path(sys.executable).parent / "openstack"), *args], what=f"openstack {args[0]}", env=env,
            timeout=300)


def boot_server(bench: MachinesBench) -> float:
    image = bench.dir / "image.raw"
    image.write_bytes(os.urandom(65536))
    bench.openstack("network", "create", "bench-net")
    bench.openstack("subnet", "create", "--network", "bench-net", "--subnet-range", "10.77.0.0/24", "bench-subnet")
    bench.openstack("image", "create", "--disk-format", "raw", "--container-format", "bare", "--file", str(image),
                    "bench-image")
    bench.openstack("flavor", "create", "--vcpus", "1", "--ram", "64", "--disk", "1", "bench-tiny")
    start = time.monotonic()
    bench.openstack("server", "create", "--image", "bench-image", "--flavor", "bench-tiny", "--network",
                    "bench-net", "--wait", "bench-server")
    return round(time.monotonic() - start, 1)


def measure(bench: MachinesBench) -> dict:
    figures = {"caches_before_mb": cache_state()}
    start = time.monotonic()
    bench.sandbox("up", "--kind", "machines", "--subnet", SUBNET, "--nodes", "4")
    figures["machines_up_s"] = round(time.monotonic() - start, 1)
    figures["first_up"], figures["no_change"] = {}, {}
    for stack in STACKS:
        bench.sandbox("stack-config", stack)
        log(f"first pulumi up of {stack} on fresh machines ...")
        wall, summary = bench.pulumi("up", "--yes", "--skip-preview", stack=stack)
        figures["first_up"][stack] = {"wall_s": wall, "resources": summary}
        log(f"{stack}: {wall} s, {summary}")
    for stack in STACKS:
        preview, p_summary = bench.pulumi("preview", stack=stack)
        up, u_summary = bench.pulumi("up", "--yes", "--skip-preview", stack=stack)
        first = figures["first_up"][stack]["wall_s"]
        figures["no_change"][stack] = {"preview_s": preview, "up_s": up, "preview": p_summary, "up": u_summary,
                                       "up_ratio": round(up / first, 3)}
    figures["server_boot_s"] = boot_server(bench)
    figures["caches_after_mb"] = cache_state()
    return figures


def render(report: dict) -> str:
    f = report["figures"]
    rows = [[stack, f["first_up"][stack]["wall_s"], f["no_change"][stack]["preview_s"], f["no_change"][stack]["up_s"],
             f["no_change"][stack]["up_ratio"],
             ", ".join(f"{v} {k}" for k, v in f["no_change"][stack]["up"].items())] for stack in STACKS]
    return "\n".join([
        "## Regions from bare machines (`python bench/machines.py`)", "",
        f"- date: {report['date']}; machine: {report['machine']['nproc']} CPUs, {report['machine']['memory_gib']} GiB; "
        f"checkout: {report['git']['commit']}",
        f"- machine-wide caches before the run (MB): {f['caches_before_mb']}; four fresh machines booted in "
        f"{fmt(f['machines_up_s'])} s (includes the sandbox's own Keystone)", "",
        table(["stack", "first `pulumi up` s", "no-change preview s", "no-change up s", "no-change up / first up",
               "no-change up resources"], rows), "",
        f"Both regions from fresh machines: {fmt(sum(f['first_up'][s]['wall_s'] for s in STACKS))} s. "
        f"A server in RegionTwo right after: `server create --wait` {fmt(f['server_boot_s'])} s.", ""])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    bench = MachinesBench(Path(tempfile.mkdtemp(prefix="omr-bench-machines-")))
    try:
        report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "machine": machine(), "git": git_state(), "figures": measure(bench)}
    except BenchError as err:
        print(f"bench: FAILED: {err}", file=sys.stderr)
        return 1
    finally:
        bench.sandbox("down", "--purge")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
