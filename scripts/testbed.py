"""Real machines for the sandbox: systemd-nspawn containers booted from a cached
Debian 12 root filesystem, on a bridge of the sandbox's own.

Built once per machine, under the project cache ($OMR_CACHE, default
~/.cache/openstack-multiregion):
  rootfs/debian12-<key>/   debootstrap (minbase) of ROOTFS_PACKAGES, keyed by that list
  wheelhouse/<key>/        `pip wheel` of install/constraints.txt, keyed by its content
  apt-cacher-ng/           the Debian packages any sandbox's proxy has fetched

Per sandbox (sandbox.py composes these pieces):
  bridge omr-<hash> with <subnet>.1/24; node i at <subnet>.<10+i>, sshd on port 22
  proxy/                   apt-cacher-ng on <subnet>.1:3142: config, log, pid
  nodes/<node>/rootfs      the node's disk: an overlay of the cached rootfs and
                           nodes/<node>/upper (its own changes), mounted while it runs
  nodes/<node>/            its SSH host key pair, console log and nspawn pid

Nodes have no route beyond the bridge: Debian packages come through the proxy,
Python packages from the wheelhouse, bind-mounted read-only.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

REPO = Path(__file__).resolve().parent.parent

DEBIAN_SUITE = "bookworm"  # Debian 12, what the nodes run
# What a node needs beyond minbase: systemd as PID 1, sshd (and sftp for scp),
# `ip`, a Python that can make virtualenvs, and ps/pgrep (a real server has them).
ROOTFS_PACKAGES = ("systemd", "systemd-sysv", "dbus", "openssh-server", "openssh-sftp-server",
                   "iproute2", "python3", "python3-venv", "ca-certificates", "procps")
# Bump when prepare_rootfs changes what it leaves in the cached tree.
ROOTFS_RECIPE = 1

TEST_NETWORK = ipaddress.ip_network("198.18.0.0/15")  # RFC 2544: reserved for network tests
FIRST_NODE_OCTET = 10  # node i at <subnet>.<10+i>; .1 is the host's bridge address
MAX_NODES = 254 - FIRST_NODE_OCTET
PROXY_PORT = 3142
WHEELHOUSE_IN_NODE = "/var/cache/wheelhouse"
# The wheelhouse is resolved by Debian's own python3, the interpreter the nodes run:
# environment markers compare full versions (redis needs async-timeout only below
# 3.11.3), so another 3.11 on the host would leave a node a wheel short.
DISTRIBUTION_PYTHON = "/usr/bin/python3"
STOP_TIMEOUT = 30.0  # a node halts in 1-20 s after SIGTERM

# What OpenStack's services need inside a node beyond a booted Debian, in one place.
# nspawn's default capability set already holds CAP_SYS_ADMIN (mounts, `ip netns`).
# Not granted: CAP_IPC_LOCK. ovs-vswitchd then logs "mlockall failed" and runs on
# (measured: a netdev bridge with a tap port works); locking every node's memory on
# a shared host would cost more than that log line.
NODE_NSPAWN_OPTIONS = (
    # Open vSwitch's userspace datapath (datapath_type=netdev) and tap ports. nspawn
    # 252 creates /dev/net/tun by itself with a private network; say so explicitly.
    "--bind=/dev/net/tun",
    # Network agents create interfaces, routes and namespaces. nspawn keeps
    # CAP_NET_ADMIN because the network is private; explicit, for the same reason.
    "--capability=CAP_NET_ADMIN",
)


class TestbedError(Exception):
    """A user or host problem, reported as one line."""


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "openstack-multiregion"
    return Path(os.environ.get("OMR_CACHE") or default)


def digest(*parts: str | bytes, length: int = 12) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:length]


# --- address plan (pure) ---------------------------------------------------------

def parse_subnet(text: str) -> str:
    """'198.18.1' -> '198.18.1'; anything outside 198.18.0.0/15 is a user error."""
    octets = text.split(".")
    if len(octets) == 3 and all(o.isdigit() and int(o) < 256 for o in octets):
        subnet = ".".join(str(int(o)) for o in octets)
        if ipaddress.ip_network(f"{subnet}.0/24").subnet_of(TEST_NETWORK):
            return subnet
    raise TestbedError(f"--subnet {text!r}: expected the first three octets of a /24 inside "
                       f"{TEST_NETWORK} (reserved for network tests), e.g. 198.18.1")


def check_node_count(count: int) -> None:
    if not 1 <= count <= MAX_NODES:
        raise TestbedError(f"--nodes {count}: a machines sandbox holds 1 to {MAX_NODES} nodes")


def bridge_address(subnet: str) -> str:
    return f"{subnet}.1"


def node_address(subnet: str, index: int) -> str:
    return f"{subnet}.{FIRST_NODE_OCTET + index}"


def bridge_name(sandbox_dir: Path) -> str:
    """omr-<8 hex>: stable per sandbox directory, within Linux's 15-character limit."""
    return f"omr-{digest(str(sandbox_dir), length=8)}"


def machine_name(bridge: str, node: str) -> str:
    # nspawn names the host side of the node's link vb-<machine>, hashed when too long.
    return f"{bridge}-{node}"


# --- files the sandbox writes into a node (pure) ---------------------------------

def networkd_config(address: str) -> str:
    # No gateway: a node reaches its bridge only (the host does not forward).
    return f"""# generated by the sandbox
[Match]
Name=host0

[Network]
Address={address}/24
LinkLocalAddressing=no
IPv6AcceptRA=no
"""


def hosts_file(peers: list[tuple[str, str]]) -> str:
    """Every node of the sandbox by name (no DNS; RabbitMQ and Galera peers go by name)."""
    lines = [f"{address} {name}" for name, address in peers]
    return "# generated by the sandbox\n127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n" + \
        "\n".join(lines) + "\n"


SSHD_CONFIG = """# generated by the sandbox: only the host key it pinned; root by key only
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
"""

RESOLV_CONF = """# No DNS: a node reaches only its bridge. apt goes through the sandbox's proxy,
# which resolves the mirror's name on the host.
"""


def apt_proxy_config(proxy_url: str) -> str:
    return f'# generated by the sandbox: packages come through its caching proxy\nAcquire::http::Proxy "{proxy_url}";\n'


def apt_sources(repositories: list[tuple[str, str, list[str]]]) -> str:
    lines = [f"deb {uri} {suite} {' '.join(components)}" for uri, suite, components in repositories]
    return "# generated by the sandbox from the host's apt sources\n" + "\n".join(lines) + "\n"


def pip_config(find_links: str) -> str:
    return f"""# generated by the sandbox: Python packages come from its wheelhouse only
[global]
no-index = true
find-links = {find_links}
"""


def proxy_config(cache_dir: Path, log_dir: Path, socket_path: Path, address: str) -> str:
    # SocketPath is set because the default (/run/apt-cacher-ng/socket) is shared by
    # every apt-cacher-ng on the machine; a second one would take it over.
    return f"""# generated by the sandbox
CacheDir: {cache_dir}
LogDir: {log_dir}
SocketPath: {socket_path}
SupportDir: /usr/lib/apt-cacher-ng
BindAddress: {address}
Port: {PROXY_PORT}
ForeGround: 1
ConnectProto: v4
VerboseLog: 1
UnbufferLogs: 1
ExThreshold: 4
"""


def nspawn_command(root: Path, machine: str, hostname: str, bridge: str, wheelhouses: Path) -> list[str]:
    return ["systemd-nspawn", "--quiet",
            f"--directory={root}", f"--machine={machine}", f"--hostname={hostname}",
            "--register=no",  # no systemd-machined on the host
            "--keep-unit",  # no systemd as the host's PID 1 to make a scope for it
            "--boot", "--console=passive",
            f"--network-bridge={bridge}",
            "--link-journal=no",  # the node's journal stays inside the node
            "--settings=no",  # no .nspawn file on the host changes a node
            "--resolv-conf=off",  # keep the node's own (DNS-less) resolv.conf
            f"--bind-ro={wheelhouses}:{WHEELHOUSE_IN_NODE}",
            *NODE_NSPAWN_OPTIONS]


# --- the host's apt sources --------------------------------------------------------

def parse_index_targets(text: str) -> list[tuple[str, str, list[str]]]:
    """`apt-get indextargets` lines (URI, suite, component) -> the Debian 12
    repositories as (uri, suite, components), in the host's order."""
    repositories: dict[tuple[str, str], list[str]] = {}
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) != 3:
            continue
        uri, suite, component = fields
        if suite.split("-")[0] != DEBIAN_SUITE:
            continue
        components = repositories.setdefault((uri, suite), [])
        if component not in components:
            components.append(component)
    return [(uri, suite, components) for (uri, suite), components in repositories.items()]


def host_repositories() -> list[tuple[str, str, list[str]]]:
    """The Debian 12 repositories the host's apt uses (read at run time, so the
    project names no mirror). --no-release-info: also before any apt-get update."""
    out = subprocess.run(["apt-get", "indextargets", "--no-release-info",
                          "--format", "$(REPO_URI)\t$(RELEASE)\t$(COMPONENT)",
                          "IDENTIFIER: Packages"], capture_output=True, text=True)
    repositories = parse_index_targets(out.stdout) if out.returncode == 0 else []
    if not any(suite == DEBIAN_SUITE for _, suite, _ in repositories):
        raise TestbedError(f"the host's apt sources have no Debian 12 ({DEBIAN_SUITE}) repository; "
                           "the nodes' packages come from it")
    return repositories


def debootstrap_mirror(repositories: list[tuple[str, str, list[str]]]) -> str:
    return next(uri for uri, suite, _ in repositories if suite == DEBIAN_SUITE)


# --- small host helpers ------------------------------------------------------------

def run(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise TestbedError(f"{what} failed ({' '.join(cmd[:4])} ...): {result.stderr.strip()[-1500:]}")
    return result


def write_if_changed(path: Path, text: str, mode: int = 0o644) -> bool:
    """Idempotent file writes: an unchanged file keeps its mtime."""
    if path.is_file() and not path.is_symlink() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    if path.is_symlink():
        path.unlink()
    tmp.replace(path)
    return True


@contextlib.contextmanager
def file_lock(name: str, log: Callable[[str], None], what: str) -> Iterator[None]:
    """One builder per machine: a second sandbox waits for the first one's build."""
    path = cache_root() / "locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another build of {what} ...")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def mounts_below(path: Path) -> list[str]:
    """Mount points at or below path, deepest first (from /proc/self/mountinfo)."""
    prefix = str(path.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # The 5th field is the mount point, with spaces etc. octal-escaped.
        point = line.split()[4].encode().decode("unicode_escape")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return sorted(found, key=len, reverse=True)


def unmount_below(path: Path) -> None:
    for point in mounts_below(path):
        subprocess.run(["umount", "--lazy", point], capture_output=True)


def remove_tree(path: Path) -> None:
    """rm -rf that never follows a mount: a build may leave the host's /proc or
    /dev mounted inside a tree, and removing through it would damage the host."""
    if not path.exists():
        return
    unmount_below(path)
    left = mounts_below(path)
    if left:
        raise TestbedError(f"not removing {path}: still mounted below it: {', '.join(left)}")
    shutil.rmtree(path)


def port_answers(address: str, port: int, expect: bytes = b"", timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout) as conn:
            return not expect or conn.recv(len(expect)) == expect
    except OSError:
        return False


def process_cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def running_pid(pidfile: Path, marker: str) -> int | None:
    """The pid in pidfile if that process runs and its command line holds marker
    (so a reused pid is never mistaken for, or signalled as, ours)."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    cmdline = process_cmdline(pid)
    for _ in range(100):  # between fork and exec a process shows an empty command line
        if cmdline != [""] or process_gone(pid):
            break
        time.sleep(0.01)
        cmdline = process_cmdline(pid)
    return pid if any(marker in arg for arg in cmdline) else None


def children_of(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def spawn(cmd: list[str], log_file: Path, pidfile: Path, cgroups: list[Path] = ()) -> int:
    """A daemon of the sandbox: own session, output to its log, pid recorded; started
    in the given cgroups when there are any."""
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True,
                                preexec_fn=entering(list(cgroups)) if cgroups else None)
    pidfile.write_text(f"{proc.pid}\n")
    return proc.pid


def signal_quietly(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.time() + timeout
    alive = list(pids)
    while alive and time.time() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if not process_gone(p)]
    return alive


def process_gone(pid: int) -> bool:
    """Exited: no such process, or a zombie its (adoptive) parent has not reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# --- the bridge --------------------------------------------------------------------

def interface_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", "dev", name], capture_output=True).returncode == 0


def interfaces_in(network: ipaddress.IPv4Network) -> list[str]:
    out = run(["ip", "-j", "-4", "addr", "show"], "listing addresses").stdout
    return [link["ifname"] for link in json.loads(out or "[]")
            for addr in link.get("addr_info", [])
            if ipaddress.ip_address(addr["local"]) in network]


def bridge_members(name: str) -> list[str]:
    out = subprocess.run(["ip", "-j", "link", "show", "master", name], capture_output=True, text=True)
    return [link["ifname"] for link in json.loads(out.stdout or "[]")] if out.returncode == 0 else []


def check_subnet_free(subnet: str, bridge: str) -> None:
    """No interface but the sandbox's own bridge may hold an address in the subnet."""
    network = ipaddress.ip_network(f"{subnet}.0/24")
    others = sorted(set(interfaces_in(network)) - {bridge})
    if others:
        raise TestbedError(f"subnet {network} is already in use on this host (interface "
                           f"{', '.join(others)}); pick another --subnet")


def ensure_bridge(name: str, subnet: str) -> None:
    address = f"{bridge_address(subnet)}/24"
    network = ipaddress.ip_network(f"{subnet}.0/24")
    check_subnet_free(subnet, name)
    if not interface_exists(name):
        run(["ip", "link", "add", "name", name, "type", "bridge"], f"creating bridge {name}")
    if name not in interfaces_in(network):
        run(["ip", "addr", "add", address, "dev", name], f"addressing bridge {name}")
    run(["ip", "link", "set", name, "up"], f"bringing bridge {name} up")


def delete_bridge(name: str) -> None:
    """The bridge and the host ends of its nodes' links. Called once the nodes are
    stopped; a node killed at halt may leave its host end (vb-...) behind, measured."""
    members = [m for m in bridge_members(name) if m.startswith("vb-")]
    if interface_exists(name):
        run(["ip", "link", "del", name], f"deleting bridge {name}")
    for member in members:
        if interface_exists(member):
            run(["ip", "link", "del", member], f"deleting the leftover link {member}")


# --- the cached root filesystem ------------------------------------------------------

def rootfs_key() -> str:
    return digest(DEBIAN_SUITE, "minbase", *sorted(ROOTFS_PACKAGES), str(ROOTFS_RECIPE))


def ensure_rootfs(log: Callable[[str], None]) -> Path:
    """The Debian 12 tree under every node's disk (read-only); built once per machine."""
    base = cache_root() / "rootfs"
    target = base / f"debian12-{rootfs_key()}"
    if target.is_dir():
        return target
    base.mkdir(parents=True, exist_ok=True)  # a new machine: debootstrap's log goes there
    with file_lock(f"rootfs-{target.name}", log, "the node root filesystem"):
        if target.is_dir():  # built while we waited
            return target
        for stale in base.glob(f".build-{target.name}-*"):  # a build that was interrupted
            remove_tree(stale)
        build = base / f".build-{target.name}-{os.getpid()}"
        start = time.time()
        log("building the node root filesystem (debootstrap, once per machine; about 1 minute) ...")
        try:
            debootstrap(build, debootstrap_mirror(host_repositories()), base / f"{target.name}.log")
            prepare_rootfs(build)
        except BaseException:
            remove_tree(build)
            raise
        build.rename(target)
        log(f"root filesystem ready in {time.time() - start:.0f}s: {target}")
    return target


def debootstrap(root: Path, mirror: str, log_file: Path) -> None:
    cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(ROOTFS_PACKAGES)}",
           DEBIAN_SUITE, str(root), mirror]
    with open(log_file, "w") as out:
        status = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT).returncode
    unmount_below(root)  # debootstrap mounts /proc and /sys inside; an error may leave them
    if status != 0:
        tail = log_file.read_text(errors="replace").strip().splitlines()[-3:]
        raise TestbedError(f"debootstrap failed (log: {log_file}): {' | '.join(tail)}")


def prepare_rootfs(root: Path) -> None:
    """Make the tree a template: nothing node-specific, nothing stale."""
    # Every node gets its own host key (pinned by the sandbox) and machine id.
    for key in (root / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc" / "machine-id").write_text("")
    dbus_id = root / "var" / "lib" / "dbus" / "machine-id"
    dbus_id.unlink(missing_ok=True)
    dbus_id.symlink_to("/etc/machine-id")  # else systemd falls back to this shared one
    (root / "etc" / "hostname").unlink(missing_ok=True)
    (root / "etc" / "resolv.conf").unlink(missing_ok=True)
    (root / "etc" / "resolv.conf").write_text(RESOLV_CONF)
    run(["chroot", str(root), "systemctl", "enable", "systemd-networkd"], "enabling systemd-networkd")
    # The daily apt timers take dpkg's lock at random times, and a deployment's
    # apt-get on the node would then fail.
    for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        (root / "etc" / "systemd" / "system" / timer).symlink_to("/dev/null")
    for stale in [*(root / "var/cache/apt/archives").glob("*.deb"),
                  *(p for p in (root / "var/lib/apt/lists").iterdir() if p.is_file())]:
        stale.unlink()


# --- the wheelhouse ------------------------------------------------------------------

CONSTRAINTS = REPO / "install" / "constraints.txt"  # every package the nodes' virtualenv may install


def requirement_files() -> list[Path]:
    return [CONSTRAINTS] if CONSTRAINTS.exists() else []


def wheelhouse_key(files: list[Path], python_version: str) -> str:
    return digest(python_version, *(part for f in files for part in (f.name, f.read_bytes())))


def python_version(*python: str) -> str:
    """Full version of an interpreter, e.g. ('chroot', ROOTFS, 'python3') -> '3.11.2'."""
    return run([*python, "-c", "import platform; print(platform.python_version())"],
               f"asking {python[-1]} for its version").stdout.strip()


def host_python_version() -> str:
    if not Path(DISTRIBUTION_PYTHON).exists():
        raise TestbedError(f"{DISTRIBUTION_PYTHON} is missing: the wheelhouse is built with the distribution's "
                           "python3 (apt-get install python3-venv)")
    return python_version(DISTRIBUTION_PYTHON)


def check_node_python(rootfs: Path, wheelhouse_python: str) -> None:
    node = python_version("chroot", str(rootfs), "python3")
    if node != wheelhouse_python:
        raise TestbedError(f"the nodes run Python {node} but the host's {DISTRIBUTION_PYTHON} is "
                           f"{wheelhouse_python}; the wheelhouse must be resolved by the nodes' version")


def builder_python(version: str) -> Path:
    """A virtualenv of the distribution's python3 that only builds wheelhouses
    (Debian's python3 itself has no pip)."""
    venv = wheelhouse_root() / f".builder-{version}"
    if not (venv / "bin" / "python").exists():
        run([DISTRIBUTION_PYTHON, "-m", "venv", "--clear", str(venv)], "creating the wheelhouse builder")
    return venv / "bin" / "python"


def wheelhouse_root() -> Path:
    return cache_root() / "wheelhouse"


def ensure_wheelhouse(log: Callable[[str], None]) -> tuple[str, str]:
    """Wheels of every requirement, built once per machine. Returns the key (the
    wheelhouse is wheelhouse_root()/<key>) and the Python version it is for."""
    files = requirement_files()
    if not files:
        raise TestbedError(f"no requirement files in {REPO / 'install'}")
    version = host_python_version()
    key = wheelhouse_key(files, version)
    target = wheelhouse_root() / key
    if target.is_dir():
        return key, version
    with file_lock(f"wheelhouse-{key}", log, "the wheelhouse"):
        if target.is_dir():
            return key, version
        for stale in wheelhouse_root().glob(f".build-{key}-*"):
            remove_tree(stale)
        build = wheelhouse_root() / f".build-{key}-{os.getpid()}"
        start = time.time()
        log(f"building the wheelhouse from {', '.join(f.name for f in files)} (once per machine) ...")
        # A host's own PIP_FIND_LINKS/PIP_NO_INDEX would make the wheelhouse depend on
        # local directories; the package index (and the host's CA settings) stay.
        env = {k: v for k, v in os.environ.items() if k not in ("PIP_FIND_LINKS", "PIP_NO_INDEX")}
        # Exactly the pinned set: every dependency is pinned in the file too.
        # PEP 517 builds: a package that ships only its source (ovs) builds in an isolated
        # environment, without a `wheel` package in the builder.
        cmd = [str(builder_python(version)), "-m", "pip", "wheel", "--quiet", "--no-deps", "--use-pep517",
               "--wheel-dir", str(build)]
        for f in files:
            cmd += ["--requirement", str(f)]
        try:
            run(cmd, "building the wheelhouse", env=env)
        except BaseException:
            remove_tree(build)
            raise
        build.rename(target)
        size = sum(p.stat().st_size for p in target.iterdir()) / 1e6
        log(f"wheelhouse ready in {time.time() - start:.0f}s: {len(list(target.iterdir()))} wheels, "
            f"{size:.0f} MB")
    return key, version


# --- the package proxy ---------------------------------------------------------------

def proxy_dir(sandbox_dir: Path) -> Path:
    return sandbox_dir / "proxy"


def proxy_url(subnet: str) -> str:
    return f"http://{bridge_address(subnet)}:{PROXY_PORT}"


def proxy_pid(sandbox_dir: Path) -> int | None:
    return running_pid(proxy_dir(sandbox_dir) / "apt-cacher-ng.pid", str(proxy_dir(sandbox_dir)))


def proxy_answers(subnet: str) -> bool:
    return port_answers(bridge_address(subnet), PROXY_PORT)


def ensure_proxy(sandbox_dir: Path, subnet: str) -> None:
    """apt-cacher-ng on the bridge address; its cache is the machine's, so a package
    is downloaded once per machine whichever node or sandbox asks for it."""
    d = proxy_dir(sandbox_dir)
    if proxy_pid(sandbox_dir) and proxy_answers(subnet):
        return
    if port_answers(bridge_address(subnet), PROXY_PORT):
        raise TestbedError(f"{bridge_address(subnet)}:{PROXY_PORT} is taken by another process")
    (d / "log").mkdir(parents=True, exist_ok=True)
    cache = cache_root() / "apt-cacher-ng"
    cache.mkdir(parents=True, exist_ok=True)
    write_if_changed(d / "acng.conf", proxy_config(cache, d / "log", d / "socket", bridge_address(subnet)))
    (d / "socket").unlink(missing_ok=True)  # apt-cacher-ng leaves it behind
    # `-c` reads every *.conf in the directory: only ours is there.
    spawn(["apt-cacher-ng", "-c", str(d)], d / "apt-cacher-ng.out", d / "apt-cacher-ng.pid")
    deadline = time.time() + 15
    while not proxy_answers(subnet):
        if time.time() > deadline or not proxy_pid(sandbox_dir):
            raise TestbedError(f"apt-cacher-ng did not start (see {d / 'apt-cacher-ng.out'})")
        time.sleep(0.1)


def stop_proxy(sandbox_dir: Path) -> None:
    pidfile = proxy_dir(sandbox_dir) / "apt-cacher-ng.pid"
    pid = proxy_pid(sandbox_dir)
    if pid:
        signal_quietly(pid, signal.SIGTERM)
        if wait_gone([pid], 5.0):  # it can take its time over SIGTERM
            signal_quietly(pid, signal.SIGKILL)
            wait_gone([pid], 5.0)
    pidfile.unlink(missing_ok=True)
    (proxy_dir(sandbox_dir) / "socket").unlink(missing_ok=True)


# --- nodes ---------------------------------------------------------------------------

def ensure_host_key(node_dir: Path, node: str) -> str:
    """The node's SSH host key, generated on the host so it is pinned before boot."""
    key = node_dir / "ssh_host_ed25519_key"
    if not key.exists():
        node_dir.mkdir(parents=True, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", node, "-f", str(key)], "ssh-keygen")
    kind, data = (node_dir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    return f"{kind} {data}"


def is_mount_point(path: Path) -> bool:
    return str(path.resolve()) in mounts_below(path)


def ensure_node_disk(node_dir: Path, rootfs: Path) -> Path:
    """The node's disk, mounted at node_dir/rootfs: an overlay of the cached rootfs
    (read-only, shared by every node) and the node's own upper directory, which
    keeps its changes across `down` and `up`. An overlay mounts in milliseconds;
    a copy of the rootfs took 1.5 s on an idle host and 5-13 s on a busy one."""
    root, upper, work = node_dir / "rootfs", node_dir / "upper", node_dir / "work"
    if is_mount_point(root):
        return root
    base_file = node_dir / "base"  # the rootfs this node's upper directory belongs to
    if not base_file.exists():
        base_file.write_text(f"{rootfs}\n")
    base = Path(base_file.read_text().strip())
    if not base.is_dir():
        raise TestbedError(f"{node_dir.name} was made from {base}, which is gone; "
                           "run 'down --purge' and 'up' to make fresh nodes")
    if any(c in str(p) for p in (base, upper, work) for c in ",:"):
        raise TestbedError(f"overlay paths cannot hold ',' or ':': {node_dir}")
    for d in (root, upper, work):
        d.mkdir(exist_ok=True)
    run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={base},upperdir={upper},workdir={work}",
         str(root)], f"mounting {node_dir.name}'s disk")
    return root


@dataclass(frozen=True)
class NodeSetup:
    """What every node of one sandbox is told."""
    subnet: str
    authorized_key: str  # the sandbox's client key, root's only way in
    wheelhouse: str  # key of the wheelhouse pip installs from
    repositories: list[tuple[str, str, list[str]]]  # the host's Debian 12 apt repositories
    peers: list[tuple[str, str]]  # (name, address) of every node


def configure_node(root: Path, node_dir: Path, node: str, address: str, setup: NodeSetup) -> None:
    """Everything node-specific, written into its root before (or while) it runs;
    an unchanged file is left alone."""
    etc = root / "etc"
    write_if_changed(etc / "hostname", f"{node}\n")
    write_if_changed(etc / "hosts", hosts_file(setup.peers))
    if not (etc / "machine-id").read_text().strip():
        (etc / "machine-id").write_text(secrets.token_hex(16) + "\n")
    write_if_changed(etc / "systemd" / "network" / "10-host0.network", networkd_config(address))
    for name, mode in (("ssh_host_ed25519_key", 0o600), ("ssh_host_ed25519_key.pub", 0o644)):
        write_if_changed(etc / "ssh" / name, (node_dir / name).read_text(), mode)
    write_if_changed(etc / "ssh" / "sshd_config.d" / "sandbox.conf", SSHD_CONFIG)
    ssh_dir = root / "root" / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    write_if_changed(ssh_dir / "authorized_keys", setup.authorized_key, 0o600)
    write_if_changed(etc / "apt" / "sources.list", apt_sources(setup.repositories))
    write_if_changed(etc / "apt" / "apt.conf.d" / "01sandbox-proxy", apt_proxy_config(proxy_url(setup.subnet)))
    write_if_changed(etc / "pip.conf", pip_config(f"{WHEELHOUSE_IN_NODE}/{setup.wheelhouse}"))


def container_pid(node_dir: Path) -> int | None:
    """The node's nspawn, recognised by the root directory on its command line."""
    return running_pid(node_dir / "nspawn.pid", f"--directory={node_dir / 'rootfs'}")


def container_init(nspawn_pid: int) -> int | None:
    """The node's systemd: nspawn's child in the node's pid namespace."""
    kids = children_of(nspawn_pid)
    return kids[0] if kids else None


def start_container(node_dir: Path, cmd: list[str], machine: str) -> int:
    cgroups = node_cgroups(machine)
    for cgroup in cgroups:
        cgroup.mkdir(exist_ok=True)
    return spawn(cmd, node_dir / "console.log", node_dir / "nspawn.pid", cgroups)


# --- a node's own cgroup ---------------------------------------------------------
# Without systemd as the host's PID 1, nspawn (--keep-unit) puts a node's systemd in
# <nspawn's own cgroup>/payload. Nodes started from one cgroup then share one tree: their
# systemds create, watch and remove the same unit cgroups (measured: two nodes' inits
# both in /payload/init.scope, and a unit of one failing at boot with 219/CGROUP while
# the other started the same unit). Each node's nspawn starts in a cgroup of its own.

CGROUP_FS = Path("/sys/fs/cgroup")


def own_cgroups(proc_cgroup: str, fs: Path = CGROUP_FS) -> list[Path]:
    """The directories of a process's cgroup (its /proc/<pid>/cgroup text) in the
    hierarchies a node's systemd uses: the unified one (cgroup v2, or v1 hybrid's
    `unified`) and v1's name=systemd."""
    dirs = []
    for line in proc_cgroup.splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and not controllers:
            base = fs if (fs / "cgroup.controllers").exists() else fs / "unified"
        elif controllers == "name=systemd":
            base = fs / "systemd"
        else:
            continue
        if base.is_dir():
            dirs.append(base / path.lstrip("/"))
    return dirs


def node_cgroups(machine: str) -> list[Path]:
    return [d / machine for d in own_cgroups(Path("/proc/self/cgroup").read_text())]


def entering(cgroups: list[Path]) -> Callable[[], None]:
    """For Popen's preexec_fn: the child moves itself into the cgroups before exec."""
    procs = [str(c / "cgroup.procs") for c in cgroups]

    def enter() -> None:
        for path in procs:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, str(os.getpid()).encode())
            finally:
                os.close(fd)
    return enter


def node_processes(machine: str) -> list[int]:
    """Every process still in the node's cgroups (its whole process tree)."""
    pids: set[int] = set()
    for cgroup in node_cgroups(machine):
        for procs in cgroup.rglob("cgroup.procs") if cgroup.is_dir() else ():
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
    return sorted(pids)


def wait_node_processes_gone(machine: str, timeout: float = 60.0) -> None:
    """After a SIGKILL to its init, the kernel ends the rest of a node's processes in
    its own time (QEMU freeing a guest's memory, on a loaded host): the node is off only
    when none is left, and only then may it boot again into the same cgroups."""
    left = wait_gone(node_processes(machine), timeout)
    if left:
        raise TestbedError(f"{machine}: processes {left} still there {timeout:.0f}s after its power went off")


def remove_node_cgroups(machine: str) -> None:
    """A stopped node's cgroups, innermost first; one still in use stays."""
    for cgroup in node_cgroups(machine):
        if not cgroup.is_dir():
            continue
        for d in sorted((p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            cgroup.rmdir()


def sshd_answers(address: str) -> bool:
    return port_answers(address, 22, expect=b"SSH-")


def wait_for_sshd(nodes: list[tuple[str, str, Path]], timeout: float = 90.0) -> None:
    """nodes: (name, address, node_dir); fails early if a container died."""
    deadline = time.time() + timeout
    waiting = list(nodes)
    while waiting:
        waiting = [n for n in waiting if not sshd_answers(n[1])]
        for name, _, node_dir in waiting:
            if not container_pid(node_dir):
                raise TestbedError(f"{name}'s container stopped while booting (see {node_dir / 'console.log'})")
        if waiting and time.time() > deadline:
            raise TestbedError(f"timed out after {timeout:.0f}s waiting for sshd on "
                               f"{', '.join(n[0] for n in waiting)}")
        time.sleep(0.2)


def systemd_state(init_pid: int) -> str:
    """`systemctl is-system-running` inside the node (running, degraded, starting...)."""
    out = subprocess.run(["nsenter", "-t", str(init_pid), "-a", "systemctl", "is-system-running"],
                         capture_output=True, text=True, timeout=10)
    return out.stdout.strip() or "unknown"


def stop_containers(node_dirs: list[Path], log: Callable[[str], None], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM every node's nspawn (a clean halt), then SIGKILL what is left.
    Killing the node's init ends its whole pid namespace; nspawn then exits."""
    running = {}
    for node_dir in node_dirs:
        pid = container_pid(node_dir)
        if pid:
            running[pid] = (node_dir, container_init(pid))
    for pid in running:
        signal_quietly(pid, signal.SIGTERM)
    for pid in wait_gone(list(running), timeout):
        node_dir, init = running[pid]
        log(f"{node_dir.name} did not halt within {timeout:.0f}s; killing it (see {node_dir / 'console.log'})")
        if init:
            signal_quietly(init, signal.SIGKILL)
        signal_quietly(pid, signal.SIGKILL)
    wait_gone(list(running), 10.0)
    for node_dir in node_dirs:
        (node_dir / "nspawn.pid").unlink(missing_ok=True)


def power_off(node_dir: Path, log: Callable[[str], None]) -> None:
    """A node loses power: its init and nspawn get SIGKILL, nothing halts cleanly."""
    pid = container_pid(node_dir)
    if not pid:
        raise TestbedError(f"{node_dir.name} is not running")
    init = container_init(pid)
    link = host_end_of_link(init) if init else None
    if init:
        signal_quietly(init, signal.SIGKILL)  # ends the node's whole pid namespace
    signal_quietly(pid, signal.SIGKILL)
    if wait_gone([pid], 10.0):
        raise TestbedError(f"{node_dir.name}'s nspawn ({pid}) is still there after SIGKILL")
    (node_dir / "nspawn.pid").unlink(missing_ok=True)
    # The kernel frees a dead node's network namespace, and with it the link, in its own
    # time (measured: about 2 minutes after a test bed's `down`); nspawn could not make
    # the link again before that.
    if link and interface_exists(link):
        run(["ip", "link", "del", link], f"deleting {node_dir.name}'s link {link}")
    log(f"{node_dir.name} powered off (SIGKILL)")


def host_end_of_link(init: int) -> str | None:
    """The host's name of the node's link (nspawn's vb-..., hashed when long): the
    interface whose index the node's host0 names as its peer."""
    try:
        peer = (Path(f"/proc/{init}/root/sys/class/net/host0/iflink")).read_text().strip()
    except OSError:
        return None
    for index in Path("/sys/class/net").glob("*/ifindex"):
        if index.read_text().strip() == peer:
            return index.parent.name
    return None


def remove_nspawn_leftovers(machine: str) -> None:
    """nspawn keeps a per-machine directory under /run; it may be left behind."""
    leftover = Path("/run/systemd/nspawn/propagate") / machine
    if leftover.is_dir() and not mounts_below(leftover):
        shutil.rmtree(leftover, ignore_errors=True)
