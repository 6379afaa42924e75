#!/usr/bin/env python3
"""Benchmark of openstack-multiregion against a sandbox of its own (loopback only).

    python bench/run.py [--quick] [--out bench/results/bench.json] [--keep-sandbox]

One run: start a sandbox on 127.0.88.x in a temporary directory, deploy region-one
(which installs the shared Keystone on node1) and region-two, then measure

  a) catalog registration of one service region: the seed 000 manual way (one stock
     `openstack` process per object) and a one-process openstacksdk script
     (bench/sdk_script.py) against `pulumi up` of a catalog-only stack;
  b) no-change `pulumi preview` / `pulumi up` of region-one, region-two and that stack;
  c) one endpoint URL changed, then the region removed: `pulumi up` / `pulumi destroy`
     against the sdk script doing the same;
  d) scale: 1, 10, 50 catalog-only regions deployed one after another (--quick: 1, 2, 4);
  e) node fan-out: first `pulumi up` of a 1-node region against an 8-node region,

counting Keystone API requests in the access log of the Keystone region-one installs.
Progress goes to stderr, the table to stdout, every figure to the JSON file. The
sandbox is torn down (`down --purge`) at the end, also after a failure.
See bench/README.md for what each figure means.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the service registry: what seed 000's manual steps register
from components import registry  # noqa: E402
from components.registry.context import http_url  # noqa: E402

SANDBOX_SCRIPT = REPO / "scripts" / "sandbox.py"
DEFAULT_OUT = REPO / "bench" / "results" / "bench.json"

SUBNET = "127.0.88"
NS = "openstack-multiregion"
KEYSTONE_STACK = "region-one"
CATALOG_STACK = "bench-catalog"
MANUAL_REGION, PULUMI_REGION, SDK_REGION = "BenchManual", "BenchPulumi", "BenchSdk"
SDK_SCRIPT = REPO / "bench" / "sdk_script.py"
CHANGED_URL = f"{SUBNET}.201"  # the image service's public endpoint moves here in e)
ENDPOINT_ADDRESS = f"{SUBNET}.200"  # no node behind it: a catalog-only region
REGION_SERVICES = ["image", "network", "compute", "placement", "volumev3"]
FAN_OUT = {1: ("bench-fan-1", "BenchFanOne"), 8: ("bench-fan-8", "BenchFanEight")}
FAN_OUT_SERVICES = ["compute", "network"]
FIRST_FAN_OUT_NODE = 5  # region-one uses node1-2, region-two node3-4
NODES_NEEDED = FIRST_FAN_OUT_NODE - 1 + sum(FAN_OUT)  # 4 + 1 + 8 = 13

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
TOKENS_PATH = "/v3/auth/tokens"
REQUEST_LINE = re.compile(r'"([A-Z]+) (\S+) HTTP/[0-9.]+"')

TIMEOUT_PULUMI = 1800
TIMEOUT_CLI = 180
TIMEOUT_SANDBOX = 300

_started = time.monotonic()


class BenchError(Exception):
    """A step failed: the message says which and why."""


def log(msg: str) -> None:
    print(f"[bench +{time.monotonic() - _started:6.1f}s] {msg}", file=sys.stderr, flush=True)


# --- running commands ------------------------------------------------------------

def run(cmd: list[str], *, what: str, env: dict | None = None, stdin: str | None = None,
        timeout: int = TIMEOUT_CLI, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a command; a non-zero exit or a timeout stops the benchmark with `what`."""
    try:
        result = subprocess.run(cmd, env=env, input=stdin, capture_output=True, text=True,
                                timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what}: timed out after {timeout}s") from None
    if result.returncode != 0:
        raise BenchError(f"{what}: exit code {result.returncode}\n--- stdout (tail)\n{result.stdout[-3000:]}"
                         f"\n--- stderr (tail)\n{result.stderr[-3000:]}")
    return result


# --- Keystone access log -----------------------------------------------------------

@dataclass
class Requests:
    total: int = 0
    writes: int = 0  # POST/PUT/PATCH/DELETE, except POST /v3/auth/tokens
    tokens: int = 0  # POST /v3/auth/tokens (token issues)
    by_method: dict = field(default_factory=dict)

    def add_line(self, line: str) -> None:
        self.total += 1
        match = REQUEST_LINE.search(line)
        if not match:
            return
        method, path = match.group(1), match.group(2).split("?")[0].rstrip("/")
        self.by_method[method] = self.by_method.get(method, 0) + 1
        if method == "POST" and path == TOKENS_PATH:
            self.tokens += 1
        elif method in WRITE_METHODS:
            self.writes += 1


class KeystoneLog:
    """Gunicorn access log of the Keystone region-one installs: one line per request."""

    def __init__(self, path: Path):
        self.path = path

    def _size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def _settle(self, quiet: float = 0.5, limit: float = 5.0) -> int:
        """Size once it has not grown for `quiet` seconds (workers log after responding)."""
        size, deadline = self._size(), time.monotonic() + limit
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = self._size()
            if now == size:
                break
            size = now
        return size

    def mark(self) -> int:
        return self._settle()

    def requests_since(self, mark: int) -> Requests:
        end = self._settle()
        counts = Requests()
        if end <= mark:
            return counts
        with open(self.path, "rb") as f:
            f.seek(mark)
            chunk = f.read(end - mark).decode(errors="replace")
        for line in chunk.splitlines():
            if line.strip():
                counts.add_line(line)
        return counts


def measured(klog: KeystoneLog, fn, *args, **kwargs) -> tuple[dict, object]:
    """Wall time of fn(...) and the Keystone requests it caused."""
    mark = klog.mark()
    start = time.monotonic()
    result = fn(*args, **kwargs)
    wall = time.monotonic() - start
    req = klog.requests_since(mark)
    return {"wall_s": round(wall, 2), **asdict(req)}, result


# --- sandbox and Pulumi CLI --------------------------------------------------------

class Bench:
    def __init__(self, directory: Path):
        self.dir = directory
        self.project = directory / "project"
        self.klog = KeystoneLog(directory / "nodes" / "node1" / "root" / "var" / "log" / "keystone" / "access.log")
        self.env = dict(os.environ, PULUMI_BACKEND_URL=f"file://{directory / 'state'}",
                        PULUMI_CONFIG_PASSPHRASE_FILE=str(directory / "passphrase"),
                        PULUMI_PYTHON_CMD=sys.executable, PULUMI_SKIP_UPDATE_CHECK="true",
                        PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true", PYTHONPATH=str(REPO),
                        PYTHONWARNINGS="ignore")
        self.admin: dict = {}

    @property
    def sandbox(self) -> dict:
        return json.loads((self.dir / "sandbox.json").read_text())

    def node(self, name: str) -> dict:
        return next(n for n in self.sandbox["nodes"] if n["name"] == name)

    # sandbox.py
    def sandbox_cmd(self, *args: str, what: str) -> subprocess.CompletedProcess:
        return run([sys.executable, str(SANDBOX_SCRIPT), "--dir", str(self.dir), *args], what=what,
                   env=self.env, timeout=TIMEOUT_SANDBOX)

    # pulumi
    def pulumi(self, *args: str, stack: str | None = None, stdin: str | None = None,
               timeout: int = TIMEOUT_PULUMI) -> subprocess.CompletedProcess:
        cmd = ["pulumi", "--cwd", str(self.project), *args, "--non-interactive"]
        if stack:
            cmd += ["--stack", stack]
        return run(cmd, what=f"pulumi {' '.join(args)} (stack {stack})", env=self.env, stdin=stdin, timeout=timeout)

    def up(self, stack: str) -> subprocess.CompletedProcess:
        return self.pulumi("up", "--yes", "--skip-preview", "--suppress-permalink", stack=stack)

    def preview(self, stack: str) -> subprocess.CompletedProcess:
        return self.pulumi("preview", "--suppress-permalink", stack=stack)

    def write_stack(self, stack: str, config: dict, secret_values: dict) -> None:
        """D/project/Pulumi.<stack>.yaml with `config` (keys without namespace); secrets
        set with `pulumi config set --secret`, each value read from stdin."""
        self.pulumi("stack", "select", "--create", stack)
        target = self.project / f"Pulumi.{stack}.yaml"
        document = (yaml.safe_load(target.read_text()) if target.exists() else None) or {}
        document["config"] = {**document.get("config", {}), **{f"{NS}:{k}": v for k, v in config.items()}}
        target.write_text(yaml.safe_dump(document, sort_keys=True))
        for key, value in secret_values.items():
            self.pulumi("config", "set", "--secret", f"{NS}:{key}", stack=stack, stdin=value)

    def load_admin_auth(self) -> None:
        out = self.pulumi("stack", "output", "adminAuth", "--show-secrets", "--json", stack=KEYSTONE_STACK)
        self.admin = json.loads(out.stdout)

    # openstack CLI, credentials in the environment only
    def os_env(self) -> dict:
        return dict(os.environ, OS_AUTH_URL=self.admin["authUrl"], OS_USERNAME="admin",
                    OS_PASSWORD=self.admin["password"], OS_PROJECT_NAME="admin", OS_USER_DOMAIN_NAME="Default",
                    OS_PROJECT_DOMAIN_NAME="Default", OS_IDENTITY_API_VERSION="3", PYTHONWARNINGS="ignore")

    def openstack(self, *args: str) -> subprocess.CompletedProcess:
        return run([str(Path(sys.executable).parent / "openstack"), *args], what=f"openstack {' '.join(args)}",
                   env=self.os_env())

    # the one-process openstacksdk script (bench/sdk_script.py), the other baseline
    def sdk_script(self, *args: str) -> subprocess.CompletedProcess:
        env = dict(self.os_env(), BENCH_SERVICE_PASSWORD=secrets.token_urlsafe(24))
        return run([sys.executable, str(SDK_SCRIPT), *args], what=f"sdk_script.py {' '.join(args)}", env=env)


def resource_summary(output: str) -> dict:
    """The 'Resources:' block of pulumi's output, e.g. {'unchanged': 42}."""
    summary, inside = {}, False
    for line in output.splitlines():
        if line.strip() == "Resources:":
            inside = True
            continue
        if inside:
            match = re.match(r"^\s+([-+~/]*\s*)(\d+) (to )?(\w+)", line)
            if not match:
                if line.strip():
                    break
                continue
            summary[match.group(4)] = summary.get(match.group(4), 0) + int(match.group(2))
    return summary


# --- the steps -----------------------------------------------------------------------

def start_sandbox(bench: Bench) -> None:
    log(f"starting the sandbox on {SUBNET}.x with {NODES_NEEDED} nodes ...")
    bench.sandbox_cmd("up", "--kind", "loopback", "--subnet", SUBNET, "--nodes", str(NODES_NEEDED), what="sandbox.py up")


def deploy_sandbox_region(bench: Bench, stack: str) -> dict:
    bench.sandbox_cmd("stack-config", stack, what=f"sandbox.py stack-config {stack}")
    log(f"deploying {stack} (first pulumi up) ...")
    figures, _ = measured(bench.klog, bench.up, stack)
    log(f"{stack} deployed in {figures['wall_s']} s ({figures['total']} Keystone requests)")
    return figures


def manual_registration(bench: Bench, region: str) -> int:
    """Seed 000's way: one `openstack` process per object. Returns the process count."""
    commands = [["region", "create", region]]
    for service_type, url in [("identity", bench.admin["authUrl"]), *(
            (t, http_url(ENDPOINT_ADDRESS, registry.catalog_entry(t).port, registry.catalog_entry(t).path))
            for t in REGION_SERVICES)]:
        for interface in registry.INTERFACES:
            commands.append(["endpoint", "create", "--region", region, service_type, interface, url])
    for service_type in REGION_SERVICES:
        # No password: --password would put it on the command line and --password-prompt
        # needs a terminal. With one it travels in the same POST /v3/users.
        commands.append(["user", "create", "--domain", "default", f"{registry.service_user(service_type)}-{region}"])
    for service_type in REGION_SERVICES:
        commands.append(["role", "add", "--project", "service", "--user", f"{registry.service_user(service_type)}-{region}",
                         "admin"])
    for i, args in enumerate(commands, 1):
        bench.openstack(*args)
        if i % 5 == 0 or i == len(commands):
            log(f"manual: {i}/{len(commands)} openstack processes done")
    return len(commands)


def catalog_stack_config(region: str) -> dict:
    return {"region": region, "keystone": {"stack": KEYSTONE_STACK}, "services": REGION_SERVICES,
            "endpointAddress": ENDPOINT_ADDRESS}


def write_catalog_stack(bench: Bench, stack: str, region: str) -> None:
    bench.write_stack(stack, catalog_stack_config(region), {"servicePassword": secrets.token_urlsafe(24)})


def region_endpoint_count(bench: Bench, region: str) -> int:
    """One GET /v3/endpoints?region_id=... (`openstack endpoint list` GETs every
    endpoint's service, 160+ requests here). Run outside the measured windows."""
    from keystoneauth1 import session
    from keystoneauth1.identity import v3

    auth = v3.Password(auth_url=bench.admin["authUrl"], username="admin", password=bench.admin["password"],
                       project_name="admin", user_domain_name="Default", project_domain_name="Default")
    url = bench.admin["authUrl"].rstrip("/") + "/endpoints"
    try:
        listed = session.Session(auth=auth).get(url, params={"region_id": region}, timeout=60).json()["endpoints"]
    except Exception as err:  # noqa: BLE001 - any failure here stops the run with its reason
        raise BenchError(f"listing the endpoints of {region}: {err}") from None
    return sum(1 for e in listed if e.get("region_id") == region)


def ratio(value: float, baseline: float) -> float | None:
    return round(value / baseline, 3) if baseline else None


def bench_catalog_registration(bench: Bench) -> dict:
    log(f"a) manual registration of {MANUAL_REGION} (one openstack process per object) ...")
    manual, processes = measured(bench.klog, manual_registration, bench, MANUAL_REGION)
    manual.update(processes=processes, note="service users created without a password (see README)")
    log(f"a) manual: {manual['wall_s']} s, {manual['total']} Keystone requests")
    log(f"a) one-process openstacksdk script registering {SDK_REGION} ...")
    sdk, _ = measured(bench.klog, bench.sdk_script, "register", SDK_REGION, ENDPOINT_ADDRESS)
    sdk.update(processes=1)
    log(f"a) sdk script: {sdk['wall_s']} s, {sdk['total']} Keystone requests")
    write_catalog_stack(bench, CATALOG_STACK, PULUMI_REGION)
    log(f"a) pulumi up of catalog-only stack {CATALOG_STACK} ({PULUMI_REGION}) ...")
    pulumi, out = measured(bench.klog, bench.up, CATALOG_STACK)
    pulumi.update(processes=1, resources=resource_summary(out.stdout))
    log(f"a) pulumi: {pulumi['wall_s']} s, {pulumi['total']} Keystone requests")
    counts = {r: region_endpoint_count(bench, r) for r in (MANUAL_REGION, SDK_REGION, PULUMI_REGION)}
    if set(counts.values()) != {18}:
        raise BenchError(f"expected 18 endpoints in each benchmark region, found {counts}")
    keys = ("wall_s", "total", "writes", "tokens")
    return {"manual": manual, "sdk": sdk, "pulumi": pulumi, "endpoints": counts,
            "ratio_pulumi_over_manual": {k: ratio(pulumi[k], manual[k]) for k in keys},
            "ratio_pulumi_over_sdk": {k: ratio(pulumi[k], sdk[k]) for k in keys},
            "speedup_over_manual": ratio(manual["wall_s"], pulumi["wall_s"])}


def bench_change_and_removal(bench: Bench) -> dict:
    """c) One endpoint URL changed (the image service's public one), then the whole
    region removed: `pulumi up` / `pulumi destroy` of the catalog-only stack beside the
    SDK script doing the same to its own region."""
    url = http_url(CHANGED_URL, registry.catalog_entry("image").port, registry.catalog_entry("image").path)
    rows = {}
    config = dict(catalog_stack_config(PULUMI_REGION), endpointUrls={"image": {"public": url}})
    bench.write_stack(CATALOG_STACK, config, {})
    log(f"c) pulumi up: the public image endpoint of {PULUMI_REGION} moves to {url} ...")
    rows["change_pulumi"], out = measured(bench.klog, bench.up, CATALOG_STACK)
    rows["change_pulumi"]["resources"] = resource_summary(out.stdout)
    rows["change_sdk"], _ = measured(bench.klog, bench.sdk_script, "change", SDK_REGION, url)
    log(f"c) pulumi destroy of {CATALOG_STACK} ({PULUMI_REGION}) ...")
    rows["destroy_pulumi"], out = measured(bench.klog, bench.pulumi, "destroy", "--yes", "--skip-preview",
                                           "--suppress-permalink", stack=CATALOG_STACK)
    rows["destroy_pulumi"]["resources"] = resource_summary(out.stdout)
    rows["destroy_sdk"], _ = measured(bench.klog, bench.sdk_script, "remove", SDK_REGION)
    left = {r: region_endpoint_count(bench, r) for r in (PULUMI_REGION, SDK_REGION)}
    if set(left.values()) != {0}:
        raise BenchError(f"expected no endpoint left in the removed regions, found {left}")
    for op in ("change", "destroy"):
        rows[f"ratio_{op}_pulumi_over_sdk"] = ratio(rows[f"{op}_pulumi"]["wall_s"], rows[f"{op}_sdk"]["wall_s"])
        log(f"c) {op}: pulumi {rows[f'{op}_pulumi']['wall_s']} s ({rows[f'{op}_pulumi']['total']} requests), "
            f"sdk {rows[f'{op}_sdk']['wall_s']} s ({rows[f'{op}_sdk']['total']} requests)")
    return rows


def bench_no_change(bench: Bench, first_up: dict) -> list[dict]:
    rows = []
    for stack in ("region-one", "region-two", CATALOG_STACK):
        for op, fn in (("preview", bench.preview), ("up", bench.up)):
            figures, out = measured(bench.klog, fn, stack)
            summary = resource_summary(out.stdout)
            changed = {k: v for k, v in summary.items() if k != "unchanged"}
            figures.update(stack=stack, op=op, resources=summary,
                           ratio_to_first_up=ratio(figures["wall_s"], first_up[stack]["wall_s"]))
            rows.append(figures)
            log(f"b) no-change {op} {stack}: {figures['wall_s']} s, {figures['total']} requests, "
                f"{figures['writes']} writes{'; CHANGES: ' + str(changed) if changed else ''}")
    return rows


def bench_scale(bench: Bench, checkpoints: list[int]) -> dict:
    per_region = []
    for i in range(1, max(checkpoints) + 1):
        stack = f"bench-{i}"
        write_catalog_stack(bench, stack, f"BenchScale{i}")
        figures, _ = measured(bench.klog, bench.up, stack)
        figures["stack"] = stack
        per_region.append(figures)
        log(f"d) scale: {stack} up in {figures['wall_s']} s ({figures['total']} requests, {figures['writes']} writes)")
    rows = []
    for n in checkpoints:
        first = per_region[:n]
        total = sum(r["wall_s"] for r in first)
        rows.append({"regions": n, "total_s": round(total, 2), "s_per_region": round(total / n, 2),
                     "min_s": min(r["wall_s"] for r in first), "max_s": max(r["wall_s"] for r in first),
                     **{f"{k}_per_region": round(sum(r[k] for r in first) / n, 1) for k in ("total", "writes", "tokens")}})
    base = rows[0]["s_per_region"]
    for row in rows:
        row["ratio_s_per_region_to_1"] = ratio(row["s_per_region"], base)
    return {"checkpoints": rows, "per_region": per_region}


def fan_out_config(bench: Bench, region: str, node_names: list[str]) -> dict:
    nodes = []
    for i, name in enumerate(node_names):
        node = bench.node(name)
        nodes.append({"name": name, "address": node["address"], "sshPort": node["port"],
                      "hostKey": node["host_key"], "roles": ["controller"] if i == 0 else ["compute"]})
    return {"region": region, "keystone": {"stack": KEYSTONE_STACK}, "services": FAN_OUT_SERVICES,
            "nodes": nodes, "nodeRoot": str(bench.dir / "nodes" / "{node}" / "root"),
            "serviceManager": "none", "plainHttp": True, "virtualenv": sys.prefix}


def bench_fan_out(bench: Bench) -> dict:
    results, next_node = {}, FIRST_FAN_OUT_NODE
    private_key = (bench.dir / "ssh" / "id_ed25519").read_text()
    for count, (stack, region) in FAN_OUT.items():
        names = [f"node{next_node + i}" for i in range(count)]
        next_node += count
        bench.write_stack(stack, fan_out_config(bench, region, names),
                          {"servicePassword": secrets.token_urlsafe(24), "sshPrivateKey": private_key})
        log(f"e) fan-out: first pulumi up of {stack} ({count} node(s): {names[0]}..{names[-1]}) ...")
        figures, out = measured(bench.klog, bench.up, stack)
        figures.update(stack=stack, nodes=count, resources=resource_summary(out.stdout))
        results[str(count)] = figures
        log(f"e) fan-out: {stack} up in {figures['wall_s']} s")
    results["ratio_8_over_1"] = ratio(results["8"]["wall_s"], results["1"]["wall_s"])
    return results


# --- report ----------------------------------------------------------------------------

def machine() -> dict:
    meminfo = Path("/proc/meminfo").read_text()
    kib = int(re.search(r"MemTotal:\s+(\d+) kB", meminfo).group(1))
    return {"nproc": os.cpu_count(), "memory_gib": round(kib / 1024 / 1024, 1), "platform": platform.platform()}


def versions(bench: Bench) -> dict:
    def pkg(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None
    pulumi_version = run(["pulumi", "version"], what="pulumi version", env=bench.env).stdout.strip()
    return {"pulumi": pulumi_version, "python": platform.python_version(), "keystone": pkg("keystone"),
            "python-openstackclient": pkg("python-openstackclient"), "pulumi (python sdk)": pkg("pulumi")}


def git_state() -> dict:
    """Commit of the checkout and whether the program had uncommitted changes."""
    def git(*args: str) -> str:
        return run(["git", "-C", str(REPO), *args], what=f"git {' '.join(args)}").stdout.strip()
    try:
        return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted_changes": bool(git("status", "--porcelain"))}
    except BenchError:
        return {"commit": None, "uncommitted_changes": None}


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render_report(report: dict) -> str:
    f = report["figures"]
    out = [f"# openstack-multiregion benchmark ({report['mode']})", "",
           f"- date: {report['date']}",
           f"- command: `{report['command']}`",
           f"- machine: {report['machine']['nproc']} CPUs, {report['machine']['memory_gib']} GiB RAM, "
           f"{report['machine']['platform']}",
           "- versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
           f"- checkout: {report['git']['commit']}"
           + (" with uncommitted changes" if report["git"]["uncommitted_changes"] else ""), ""]
    d = f["deploy"]
    out += ["## Sandbox regions, first `pulumi up` (for reference)", "",
            table(["stack", "wall s", "Keystone requests", "writes", "token requests"],
                  [[s, d[s]["wall_s"], d[s]["total"], d[s]["writes"], d[s]["tokens"]] for s in d]), ""]
    a = f["catalog_registration"]
    r = a["ratio_pulumi_over_manual"]
    out += ["## a) Catalog registration of one service region (region, 18 endpoints, 5 users and their roles)", "",
            table(["method", "processes", "wall s", "Keystone requests", "writes", "token requests"],
                  [[f"manual: `openstack` per object ({MANUAL_REGION})", a["manual"]["processes"], a["manual"]["wall_s"],
                    a["manual"]["total"], a["manual"]["writes"], a["manual"]["tokens"]],
                   [f"one-process openstacksdk script ({SDK_REGION})", a["sdk"]["processes"], a["sdk"]["wall_s"],
                    a["sdk"]["total"], a["sdk"]["writes"], a["sdk"]["tokens"]],
                   [f"`pulumi up`, catalog-only stack ({PULUMI_REGION})", a["pulumi"]["processes"],
                    a["pulumi"]["wall_s"], a["pulumi"]["total"], a["pulumi"]["writes"], a["pulumi"]["tokens"]],
                   ["ratio pulumi / manual", "", r["wall_s"], r["total"], r["writes"], r["tokens"]],
                   ["ratio pulumi / sdk script", "", *(a["ratio_pulumi_over_sdk"][k]
                                                       for k in ("wall_s", "total", "writes", "tokens"))]]), "",
            f"`pulumi up` is **{fmt(a['speedup_over_manual'])}x** faster than the manual procedure.", ""]
    out += ["## b) No-change runs (goal: zero writes)", "",
            table(["stack", "command", "wall s", "x first up", "Keystone requests", "writes", "token requests",
                   "resources"],
                  [[row["stack"], f"pulumi {row['op']}", row["wall_s"], row["ratio_to_first_up"], row["total"],
                    row["writes"], row["tokens"], ", ".join(f"{v} {k}" for k, v in row["resources"].items())]
                   for row in f["no_change"]]), ""]
    e = f["change_and_removal"]
    out += ["## c) One endpoint URL changed, then the region removed", "",
            table(["operation", "method", "wall s", "Keystone requests", "writes", "token requests"],
                  [[op, method, e[f"{key}_{m}"]["wall_s"], e[f"{key}_{m}"]["total"], e[f"{key}_{m}"]["writes"],
                    e[f"{key}_{m}"]["tokens"]]
                   for key, op in (("change", "public image URL changed"), ("destroy", "region removed"))
                   for m, method in (("pulumi", "`pulumi up` / `pulumi destroy`"), ("sdk", "sdk script"))]), "",
            f"Ratios pulumi / sdk script: change {fmt(e['ratio_change_pulumi_over_sdk'])}, "
            f"removal {fmt(e['ratio_destroy_pulumi_over_sdk'])}.", ""]
    if "scale" not in f:
        return "\n".join(out)
    out += ["## d) Scale: catalog-only regions deployed one after another", "",
            table(["regions", "total s", "s / region", "min s", "max s", "x s/region of 1", "requests / region",
                   "writes / region", "tokens / region"],
                  [[c["regions"], c["total_s"], c["s_per_region"], c["min_s"], c["max_s"],
                    c["ratio_s_per_region_to_1"], c["total_per_region"], c["writes_per_region"],
                    c["tokens_per_region"]] for c in f["scale"]["checkpoints"]]), ""]
    fo = f["fan_out"]
    out += ["## e) Node fan-out: first `pulumi up` (services compute + network)", "",
            table(["stack", "nodes", "wall s", "Keystone requests", "writes", "token requests"],
                  [[fo[k]["stack"], fo[k]["nodes"], fo[k]["wall_s"], fo[k]["total"], fo[k]["writes"], fo[k]["tokens"]]
                   for k in ("1", "8")] + [["ratio 8-node / 1-node", "", fo["ratio_8_over_1"], "", "", ""]]), ""]
    return "\n".join(out)


# --- main -----------------------------------------------------------------------------

def run_benchmark(bench: Bench, quick: bool, catalog_only: bool = False) -> dict:
    start_sandbox(bench)
    deploy = {s: deploy_sandbox_region(bench, s) for s in ("region-one", "region-two")}
    bench.load_admin_auth()
    catalog = bench_catalog_registration(bench)
    first_up = {**deploy, CATALOG_STACK: catalog["pulumi"]}
    no_change = bench_no_change(bench, first_up)
    change_and_removal = bench_change_and_removal(bench)
    if catalog_only:
        return {"deploy": deploy, "catalog_registration": catalog, "no_change": no_change,
                "change_and_removal": change_and_removal}
    scale = bench_scale(bench, [1, 2, 4] if quick else [1, 10, 50])
    fan_out = bench_fan_out(bench)
    return {"deploy": deploy, "catalog_registration": catalog, "no_change": no_change,
            "change_and_removal": change_and_removal, "scale": scale, "fan_out": fan_out}


def check_prerequisites() -> None:
    if not shutil.which("pulumi"):
        raise BenchError("the pulumi CLI is not on PATH: source the env.sh that scripts/setup.sh prints first")
    if not (Path(sys.executable).parent / "openstack").exists():
        raise BenchError("run this with the project's Python environment (its bin holds the openstack CLI)")


def teardown(bench: Bench, keep: bool) -> None:
    if keep:
        log("sandbox kept (--keep-sandbox); stop it with: scripts/sandbox.py --dir <dir> down --purge")
        print(f"sandbox kept at {bench.dir}", file=sys.stderr)
        return
    log("tearing the sandbox down (down --purge) ...")
    try:
        run([sys.executable, str(SANDBOX_SCRIPT), "--dir", str(bench.dir), "down", "--purge"],
            what="sandbox.py down --purge", timeout=TIMEOUT_SANDBOX)
    except BenchError as err:
        print(f"bench: teardown failed: {err}", file=sys.stderr)


def write_json(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    log(f"figures written to {out}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="scale with 1, 2, 4 regions instead of 1, 10, 50")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file (default: bench/results/bench.json)")
    p.add_argument("--catalog-only", action="store_true", help="only a), b) and c): no scale, no fan-out")
    p.add_argument("--keep-sandbox", action="store_true", help="do not tear the sandbox down (post-mortem)")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the teardown on SIGTERM too
    bench = None
    try:
        check_prerequisites()
        bench = Bench(Path(tempfile.mkdtemp(prefix="omr-bench-")))
        report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "mode": "catalog-only" if args.catalog_only else "quick" if args.quick else "full",
                  "command": " ".join(["python bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
                  "machine": machine(), "versions": versions(bench), "git": git_state()}
        report["figures"] = run_benchmark(bench, args.quick, args.catalog_only)
    except BenchError as err:
        print(f"bench: FAILED: {err}", file=sys.stderr)
        return 1
    finally:
        if bench is not None:
            teardown(bench, args.keep_sandbox)
    print(render_report(report))
    write_json(report, args.out)
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
