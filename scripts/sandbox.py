#!/usr/bin/env python3
"""Local sandbox cloud: one real Keystone and N real SSH nodes.

    sandbox.py up [--kind machines|loopback] [--nodes N] [--subnet S]   start (idempotent)
    sandbox.py status                               what runs, exit 1 if anything is down
    sandbox.py down [--purge]                       stop everything (idempotent)
    sandbox.py env                                  shell exports for the Pulumi CLI
    sandbox.py sudo-user                            a non-root login with passwordless sudo (prints its name)
    sandbox.py stack-config region-two              write the stack's config for this sandbox

Two kinds of nodes; a new sandbox is `machines` unless --kind says otherwise, an
existing one keeps its kind (recorded in sandbox.json):
- machines: each node a real Debian 12 machine, a systemd-nspawn container booted
  with systemd on a bridge the sandbox creates (scripts/testbed.py): <subnet>.1 is
  the host (apt proxy, standalone Keystone on :5000), node i is <subnet>.<10+i> with
  sshd on port 22. The subnet lies inside 198.18.0.0/15 (default 198.18.1).
- loopback: one sshd per node on a /24 inside 127.0.0.0/8 (default 127.0.1): nodes
  at <subnet>.1..N port 2222, each with its own file root; Keystone at <subnet>.250:5000.

The sandbox directory (default .sandbox in the checkout, or $OMR_SANDBOX) holds the
state backend, the secrets passphrase, the SSH key pair, host keys, each node's
root, and the Keystone database and logs.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import testbed  # scripts/testbed.py: the machines kind's nodes

REPO = Path(__file__).resolve().parent.parent
SSH_PORT = 2222
KEYSTONE_PORT = 5000
KEYSTONE_HOST_OCTET = 250
SSHD = "/usr/sbin/sshd"
KINDS = ("machines", "loopback")
DEFAULT_SUBNETS = {"machines": "198.18.1", "loopback": "127.0.1"}


def log(msg: str) -> None:
    print(f"[sandbox] {msg}", file=sys.stderr, flush=True)


@dataclass
class Node:
    name: str
    address: str
    port: int
    root: str  # loopback: the node's file root; machines: the container's root directory
    host_key: str  # public host key, pinned by clients


@dataclass
class Sandbox:
    dir: str
    subnet: str
    nodes: list[Node] = field(default_factory=list)
    keystone_url: str = ""
    admin_password: str = ""
    kind: str = "loopback"  # sandboxes from before the machines kind have no kind field
    bridge: str = ""  # machines: the host bridge the nodes are on
    sudo_user: str = ""  # created by `sudo-user`, removed by `down --purge`

    @property
    def path(self) -> Path:
        return Path(self.dir)

    @property
    def keystone_address(self) -> str:
        # machines: the bridge address, so nodes reach the standalone Keystone too.
        if self.kind == "machines":
            return testbed.bridge_address(self.subnet)
        return f"{self.subnet}.{KEYSTONE_HOST_OCTET}"

    @property
    def private_key_file(self) -> Path:
        return self.path / "ssh" / "id_ed25519"

    @property
    def node_root_template(self) -> str:
        return str(self.path / "nodes" / "{node}" / "root")

    def save(self) -> None:
        data = asdict(self)
        target = self.path / "sandbox.json"
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.chmod(tmp, 0o600)
        tmp.replace(target)

    @classmethod
    def load(cls, directory: Path) -> "Sandbox | None":
        f = directory / "sandbox.json"
        if not f.exists():
            return None
        data = json.loads(f.read_text())
        data["nodes"] = [Node(**n) for n in data["nodes"]]
        return cls(**data)


def default_dir() -> Path:
    return Path(os.environ.get("OMR_SANDBOX") or REPO / ".sandbox").resolve()


def venv_bin() -> Path:
    return Path(sys.executable).parent


def port_open(address: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def stop_pid(pidfile: Path, sig: int = signal.SIGTERM, wait: float = 10.0) -> None:
    pid = pid_alive(pidfile)
    if pid:
        # Collected before the signal: a master killed after the grace period
        # (gunicorn waits for its workers) would otherwise orphan them.
        kids = testbed.children_of(pid)
        os.kill(pid, sig)
        deadline = time.time() + wait
        while time.time() < deadline and pid_alive(pidfile):
            time.sleep(0.1)
        for survivor in [pid, *kids]:
            try:
                os.kill(survivor, signal.SIGKILL)
            except ProcessLookupError:
                pass
    pidfile.unlink(missing_ok=True)


def wait_until(check, what: str, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise SystemExit(f"[sandbox] timed out after {timeout:.0f}s waiting for {what}")


# --- SSH nodes -------------------------------------------------------------

def ensure_client_key(sb: Sandbox) -> None:
    key = sb.private_key_file
    if key.exists():
        return
    key.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(key.parent, 0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "omr-sandbox",
                    "-f", str(key)], check=True)
    shutil.copy(f"{key}.pub", key.parent / "authorized_keys")
    os.chmod(key.parent / "authorized_keys", 0o600)


def node_dir(sb: Sandbox, name: str) -> Path:
    return sb.path / "nodes" / name


def ensure_node(sb: Sandbox, index: int) -> Node:
    name = f"node{index}"
    d = node_dir(sb, name)
    (d / "root").mkdir(parents=True, exist_ok=True)
    host_key = d / "ssh_host_ed25519_key"
    if not host_key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name,
                        "-f", str(host_key)], check=True)
    address = f"{sb.subnet}.{index}"
    (d / "sshd_config").write_text(f"""# generated by sandbox.py
ListenAddress {address}:{SSH_PORT}
HostKey {host_key}
PidFile {d / 'sshd.pid'}
AuthorizedKeysFile {sb.path / 'ssh' / 'authorized_keys'} {sb.path / 'ssh-users' / '%u'}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
""")
    pub = (d / "ssh_host_ed25519_key.pub").read_text().split()
    return Node(name=name, address=address, port=SSH_PORT, root=str(d / "root"),
                host_key=f"{pub[0]} {pub[1]}")


def start_node(sb: Sandbox, node: Node) -> None:
    d = node_dir(sb, node.name)
    if pid_alive(d / "sshd.pid") and port_open(node.address, node.port):
        return
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    subprocess.run([SSHD, "-f", str(d / "sshd_config"), "-E", str(d / "sshd.log")], check=True)
    wait_until(lambda: port_open(node.address, node.port), f"sshd of {node.name}", 15)


# --- Keystone --------------------------------------------------------------

KEYSTONE_WSGI = '''"""Keystone under gunicorn. oslo.config parses sys.argv, so reset it first."""
import os
import sys

sys.argv = sys.argv[:1]
os.environ["OS_KEYSTONE_CONFIG_FILES"] = {conf!r}
from keystone.server.wsgi import initialize_public_application  # noqa: E402

application = initialize_public_application()
'''


def keystone_conf(d: Path) -> str:
    return f"""[DEFAULT]
log_file = {d / 'keystone.log'}
[database]
connection = sqlite:///{d / 'keystone.db'}
[fernet_tokens]
key_repository = {d / 'fernet-keys'}
[credential]
key_repository = {d / 'credential-keys'}
[token]
provider = fernet
"""


def keystone_manage(d: Path, *args: str) -> None:
    cmd = [str(venv_bin() / "keystone-manage"), "--config-file", str(d / "keystone.conf"), *args]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"[sandbox] keystone-manage {args[0]} failed:\n{result.stderr[-2000:]}")


def ensure_keystone(sb: Sandbox) -> None:
    d = sb.path / "keystone"
    address = sb.keystone_address
    sb.keystone_url = f"http://{address}:{KEYSTONE_PORT}/v3"
    if not (d / "bootstrapped").exists():
        log("initialising Keystone (db_sync, fernet, bootstrap) ...")
        d.mkdir(parents=True, exist_ok=True)
        (d / "keystone.conf").write_text(keystone_conf(d))
        (d / "wsgi_keystone.py").write_text(KEYSTONE_WSGI.format(conf=str(d / "keystone.conf")))
        sb.admin_password = secrets.token_urlsafe(24)
        keystone_manage(d, "db_sync")
        keystone_manage(d, "fernet_setup", "--keystone-user", "root", "--keystone-group", "root")
        keystone_manage(d, "credential_setup", "--keystone-user", "root", "--keystone-group", "root")
        # The password travels in the environment, never on a command line.
        os.environ["OS_BOOTSTRAP_PASSWORD"] = sb.admin_password
        try:
            keystone_manage(d, "bootstrap", "--bootstrap-region-id", "RegionOne",
                            "--bootstrap-public-url", sb.keystone_url + "/",
                            "--bootstrap-internal-url", sb.keystone_url + "/",
                            "--bootstrap-admin-url", sb.keystone_url + "/")
        finally:
            del os.environ["OS_BOOTSTRAP_PASSWORD"]
        (d / "bootstrapped").touch()
    if pid_alive(d / "gunicorn.pid") and keystone_answers(sb):
        return
    if port_open(address, KEYSTONE_PORT):
        raise SystemExit(f"[sandbox] {address}:{KEYSTONE_PORT} is taken by another process")
    log(f"starting Keystone at {sb.keystone_url} ...")
    # gthread workers keep HTTP/1.1 connections alive, which keystoneauth's pooled
    # sessions rely on; one thread each, as Keystone's lazy policy loading races.
    subprocess.run([str(venv_bin() / "gunicorn"), "--daemon", "--chdir", str(d),
                    "--bind", f"{address}:{KEYSTONE_PORT}", "--worker-class", "gthread",
                    "--workers", "4", "--threads", "1", "--keep-alive", "30",
                    "--pid", str(d / "gunicorn.pid"), "--access-logfile", str(d / "access.log"),
                    "--error-logfile", str(d / "gunicorn.log"), "wsgi_keystone:application"],
                   check=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    wait_until(lambda: keystone_answers(sb), "Keystone", 60)


def keystone_answers(sb: Sandbox) -> bool:
    try:
        with urllib.request.urlopen(sb.keystone_url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


# --- machines: nspawn containers on a bridge (scripts/testbed.py) -------------

def machine_node(sb: Sandbox, index: int) -> Node:
    name = f"node{index}"
    d = node_dir(sb, name)
    return Node(name=name, address=testbed.node_address(sb.subnet, index), port=22, root=str(d / "rootfs"),
                host_key=testbed.ensure_host_key(d, name))


def build_caches() -> tuple[Path, str]:
    """The rootfs and the wheelhouse key (each cached per machine), built side by side."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        rootfs = pool.submit(testbed.ensure_rootfs, log)
        wheelhouse = pool.submit(testbed.ensure_wheelhouse, log)
        rootfs_dir, (wheelhouse_key, python_version) = rootfs.result(), wheelhouse.result()
    testbed.check_node_python(rootfs_dir, python_version)
    return rootfs_dir, wheelhouse_key


def up_machines(sb: Sandbox, count: int) -> None:
    testbed.check_node_count(count)
    sb.bridge = sb.bridge or testbed.bridge_name(sb.path)
    sb.save()  # from here on, `down` knows what to clean up after a failure
    testbed.ensure_bridge(sb.bridge, sb.subnet)
    testbed.ensure_proxy(sb.path, sb.subnet)
    rootfs, wheelhouse = build_caches()
    sb.nodes = [machine_node(sb, i) for i in range(1, count + 1)]
    sb.save()
    setup = testbed.NodeSetup(subnet=sb.subnet, authorized_key=(sb.path / "ssh" / "authorized_keys").read_text(),
                              wheelhouse=wheelhouse, repositories=testbed.host_repositories(),
                              peers=[(n.name, n.address) for n in sb.nodes])
    started = []
    for node in sb.nodes:
        d = node_dir(sb, node.name)
        root = testbed.ensure_node_disk(d, rootfs)
        testbed.configure_node(root, d, node.name, node.address, setup)
        if not testbed.container_pid(d):
            machine = testbed.machine_name(sb.bridge, node.name)
            testbed.start_container(d, testbed.nspawn_command(root, machine, node.name, sb.bridge,
                                                              testbed.wheelhouse_root()), machine)
            started.append(node.name)
    # For `ssh -o UserKnownHostsFile=<sandbox>/ssh/known_hosts`: the pinned keys.
    known_hosts = "".join(f"{n.address} {n.host_key}\n" for n in sb.nodes)
    testbed.write_if_changed(sb.path / "ssh" / "known_hosts", known_hosts)
    if started:
        log(f"booting {', '.join(started)} ...")
    testbed.wait_for_sshd([(n.name, n.address, node_dir(sb, n.name)) for n in sb.nodes])
    addresses = sb.nodes[0].address + (f"-{sb.nodes[-1].address.rsplit('.', 1)[1]}" if len(sb.nodes) > 1 else "")
    log(f"{len(sb.nodes)} machine(s) up at {addresses} (sshd on 22), bridge {sb.bridge}, "
        f"apt proxy {testbed.proxy_url(sb.subnet)}")


def status_machines(sb: Sandbox) -> bool:
    bridge_up = testbed.interface_exists(sb.bridge)
    print(f"{'bridge':8} {sb.bridge} {testbed.bridge_address(sb.subnet)}/24 {'up' if bridge_up else 'DOWN'}")
    proxy_up = bool(testbed.proxy_pid(sb.path)) and testbed.proxy_answers(sb.subnet)
    print(f"{'proxy':8} apt {testbed.proxy_url(sb.subnet):24} {'up' if proxy_up else 'DOWN'}")
    ok = bridge_up and proxy_up
    for node in sb.nodes:
        pid = testbed.container_pid(node_dir(sb, node.name))
        init = testbed.container_init(pid) if pid else None
        container = f"running (systemd: {testbed.systemd_state(init)})" if init else "STOPPED"
        ssh = testbed.sshd_answers(node.address)
        ok = ok and bool(init) and ssh
        print(f"{node.name:8} ssh {node.address}:{node.port:<3} container {container}, sshd {'up' if ssh else 'DOWN'}")
    return ok


def down_machines(sb: Sandbox) -> None:
    # Every node that has a pid file, also one a failed `up` never recorded.
    node_dirs = sorted({node_dir(sb, n.name) for n in sb.nodes} |
                       {p.parent for p in (sb.path / "nodes").glob("*/nspawn.pid")})
    testbed.stop_containers(node_dirs, log)
    testbed.stop_proxy(sb.path)
    if sb.bridge:
        testbed.delete_bridge(sb.bridge)
        for d in node_dirs:
            testbed.remove_nspawn_leftovers(testbed.machine_name(sb.bridge, d.name))
            testbed.remove_node_cgroups(testbed.machine_name(sb.bridge, d.name))
    testbed.unmount_below(sb.path)


# --- commands --------------------------------------------------------------

def loopback_subnet(text: str) -> str:
    octets = text.split(".")
    if len(octets) != 3 or octets[0] != "127" or not all(o.isdigit() and int(o) < 256 for o in octets):
        raise SystemExit(f"[sandbox] --subnet {text!r}: expected three octets inside 127.0.0.0/8, e.g. 127.0.1")
    return text


def checked_subnet(kind: str, text: str) -> str:
    return testbed.parse_subnet(text) if kind == "machines" else loopback_subnet(text)


def load_for_up(directory: Path, args) -> Sandbox:
    """The existing sandbox (same kind and subnet) or a new one of --kind."""
    sb = Sandbox.load(directory)
    if sb is None:
        kind = args.kind or "machines"
        subnet = checked_subnet(kind, args.subnet or DEFAULT_SUBNETS[kind])
        if kind == "machines":  # checked before anything is created
            testbed.check_node_count(4 if args.nodes is None else args.nodes)
            testbed.check_subnet_free(subnet, testbed.bridge_name(directory))
        directory.mkdir(parents=True, exist_ok=True)
        return Sandbox(dir=str(directory), subnet=subnet, kind=kind)
    if args.kind and args.kind != sb.kind:
        raise SystemExit(f"[sandbox] {directory} is a {sb.kind} sandbox; "
                         "run 'down --purge' first to make a new one of another kind")
    if args.subnet and checked_subnet(sb.kind, args.subnet) != sb.subnet:
        raise SystemExit(f"[sandbox] {directory} already uses subnet {sb.subnet}; "
                         "run 'down --purge' first to change it")
    return sb


def cmd_up(args) -> int:
    start = time.time()
    directory = default_dir() if args.dir is None else Path(args.dir).resolve()
    sb = load_for_up(directory, args)
    # Others may pass through (not list) the sandbox: the HA region's MariaDB runs as
    # `mysql` inside the node roots. What holds credentials stays owner-only.
    os.chmod(directory, 0o711)
    for private in ("state", "keystone"):
        (directory / private).mkdir(exist_ok=True)
        os.chmod(directory / private, 0o700)
    (sb.path / "state").mkdir(exist_ok=True)
    passphrase = sb.path / "passphrase"
    if not passphrase.exists():
        passphrase.write_text(secrets.token_urlsafe(32))
        os.chmod(passphrase, 0o600)
    ensure_client_key(sb)
    # --nodes only ever adds nodes; without it an existing sandbox keeps its count.
    count = max(args.nodes or (0 if sb.nodes else 4), len(sb.nodes))
    if sb.kind == "machines":
        up_machines(sb, count)
    else:
        sb.nodes = [ensure_node(sb, i) for i in range(1, count + 1)]
        for node in sb.nodes:
            start_node(sb, node)
        log(f"{len(sb.nodes)} SSH nodes up on {sb.subnet}.1-{len(sb.nodes)}:{SSH_PORT}")
    ensure_keystone(sb)
    sb.save()
    log(f"sandbox ready in {time.time() - start:.1f}s ({sb.dir})")
    return 0


def load_or_exit(args) -> Sandbox:
    directory = default_dir() if args.dir is None else Path(args.dir).resolve()
    sb = Sandbox.load(directory)
    if sb is None:
        raise SystemExit(f"[sandbox] no sandbox at {directory}; run 'sandbox.py up' first")
    return sb


def cmd_status(args) -> int:
    sb = load_or_exit(args)
    if sb.kind == "machines":
        ok = status_machines(sb)
    else:
        ok = True
        for node in sb.nodes:
            alive = bool(pid_alive(node_dir(sb, node.name) / "sshd.pid")) and port_open(node.address, node.port)
            ok &= alive
            print(f"{node.name:8} ssh {node.address}:{node.port:<5} {'up' if alive else 'DOWN'}")
    ks = bool(sb.keystone_url) and keystone_answers(sb)
    ok &= ks
    print(f"keystone {sb.keystone_url or '(not started)':24} {'up' if ks else 'DOWN'}")
    return 0 if ok else 1


def sudo_user_name(sb: Sandbox) -> str:
    return "omr-" + "-".join(sb.subnet.split(".")[1:])  # one per sandbox subnet, e.g. omr-0-78


def cmd_sudo_user(args) -> int:
    """A host user that logs in to every node with the sandbox key (the nodes share
    the host's users) and may run anything through `sudo -n`, as a deploy user on real
    nodes would: stacks with `sshUser: <it>` run every command through sudo."""
    sb = load_or_exit(args)
    name = sudo_user_name(sb)
    if subprocess.run(["id", "-u", name], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/", "--shell", "/bin/sh", name],
                       check=True)
    # '*' (no password, not locked): sshd refuses key logins of locked accounts without PAM.
    subprocess.run(["usermod", "-p", "*", name], check=True)
    # sshd reads a user's keys as that user: the sandbox key, in a file of the user's own.
    users = sb.path / "ssh-users"
    users.mkdir(exist_ok=True)
    os.chmod(users, 0o711)
    keys = users / name
    shutil.copy(sb.path / "ssh" / "id_ed25519.pub", keys)
    shutil.chown(keys, user=name)
    os.chmod(keys, 0o600)
    rule = Path("/etc/sudoers.d") / name
    tmp = rule.with_name(f".{name}.tmp")
    tmp.write_text(f"{name} ALL=(ALL) NOPASSWD: ALL\n")
    os.chmod(tmp, 0o440)
    subprocess.run(["visudo", "-c", "-q", "-f", str(tmp)], check=True)
    tmp.replace(rule)
    sb.sudo_user = name
    sb.save()
    print(name)
    return 0


def remove_sudo_user(sb: Sandbox) -> None:
    if not sb.sudo_user:
        return
    Path("/etc/sudoers.d", sb.sudo_user).unlink(missing_ok=True)
    subprocess.run(["userdel", sb.sudo_user], capture_output=True)
    log(f"removed user {sb.sudo_user}")


def machine_of(args, action: str) -> tuple[Sandbox, Node]:
    sb = Sandbox.load(default_dir() if args.dir is None else Path(args.dir).resolve())
    if sb is None or sb.kind != "machines":
        raise SystemExit(f"[sandbox] {action}: only a machines sandbox has machines to {action}")
    node = next((n for n in sb.nodes if n.name == args.node), None)
    if node is None:
        raise SystemExit(f"[sandbox] {action}: no node {args.node} (nodes: {', '.join(n.name for n in sb.nodes)})")
    return sb, node


def cmd_power_off(args) -> int:
    sb, node = machine_of(args, "power-off")
    machine = testbed.machine_name(sb.bridge, node.name)
    testbed.power_off(node_dir(sb, node.name), log)
    testbed.wait_node_processes_gone(machine)
    testbed.remove_node_cgroups(machine)
    return 0


def cmd_power_on(args) -> int:
    """The machine boots from its disk as it was: unlike `up`, nothing is written into
    it first (a real machine keeps what the program wrote, /etc/hosts included)."""
    sb, node = machine_of(args, "power-on")
    d = node_dir(sb, node.name)
    if not testbed.container_pid(d):
        root = testbed.ensure_node_disk(d, Path((d / "base").read_text().strip()))  # mounted still, unless `down`
        machine = testbed.machine_name(sb.bridge, node.name)
        testbed.start_container(d, testbed.nspawn_command(root, machine, node.name, sb.bridge,
                                                          testbed.wheelhouse_root()), machine)
        log(f"booting {node.name} ...")
    testbed.wait_for_sshd([(node.name, node.address, d)])
    return 0


def cmd_down(args) -> int:
    directory = default_dir() if args.dir is None else Path(args.dir).resolve()
    sb = Sandbox.load(directory)
    start = time.time()
    if sb is not None:
        stop_pid(sb.path / "keystone" / "gunicorn.pid")
        if sb.kind == "machines":
            down_machines(sb)  # the services on the nodes stop with them
        else:
            for node in sb.nodes:
                stop_pid(node_dir(sb, node.name) / "sshd.pid")
            # Services the deployed program started on the nodes stop with the sandbox.
            for pidfile in sb.path.glob("nodes/*/root/**/*.pid"):
                stop_pid(pidfile)
        log(f"stopped in {time.time() - start:.1f}s")
    if args.purge and directory.exists():
        if sb is not None:
            remove_sudo_user(sb)
        testbed.remove_tree(directory)  # never through a mount left inside
        log(f"removed {directory}")
    return 0


def cmd_env(args) -> int:
    sb = load_or_exit(args)
    print(f"export PULUMI_BACKEND_URL=file://{sb.path / 'state'}")
    print(f"export PULUMI_CONFIG_PASSPHRASE_FILE={sb.path / 'passphrase'}")
    print(f"export OMR_SANDBOX={sb.path}")
    print(f"export OMR_SANDBOX_PROJECT={sb.path / 'project'}")
    return 0


# --- stack configuration for the sandbox -------------------------------------

NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
REGION_SERVICES = ["image", "network", "compute", "placement", "volumev3"]
# Real guests under libvirt on the machines: emulated (TCG), as this host's /dev/kvm
# cannot run a standard guest kernel; no cgroups of libvirt's own, as a container's
# are read-only. No openvswitch kernel module either: Open vSwitch's userspace datapath.
# nova-compute stops in 30 s rather than nova's 160 (it waits all of it even when idle,
# and the tests restart it): 10 s for in-progress tasks, 20 for its cleanup.
MACHINE_COMPUTE = {"driver": "libvirt", "virtType": "qemu", "qemuCgroupControllers": [], "shutdownTimeout": 30}


def region_index(stack: str) -> int:
    """region-one -> 1, region-two -> 2, region-7 -> 7."""
    suffix = stack.removeprefix("region-")
    if suffix.isdigit():
        return int(suffix)
    if suffix in NUMBERS:
        return NUMBERS.index(suffix) + 1
    raise SystemExit(f"[sandbox] stack name {stack!r}: expected region-<n> or region-<one..ten>")


def config_node_name(sb: Sandbox, machine: str, region: int, role: str) -> str:
    """The name a stack gives a node. On the test bed it is NOT the machine's hostname
    (node<i>), as an operator's names often are not: every service must register under
    the config name (r<n>-ctl, r<n>-cmp). The loopback sandbox keeps the machine's."""
    if sb.kind != "machines":
        return machine
    return f"r{region}-{'ctl' if role == 'controller' else 'cmp'}"


def stack_config(sb: Sandbox, stack: str) -> dict:
    """Region n runs on nodes 2n-1 (controller) and 2n (compute); region-one hosts Keystone."""
    n = region_index(stack)
    machines = [f"node{2 * n - 1}", f"node{2 * n}"]
    by_name = {node.name: node for node in sb.nodes}
    missing = [m for m in machines if m not in by_name]
    if missing:
        raise SystemExit(f"[sandbox] {stack} needs {', '.join(missing)}: run 'sandbox.py up --nodes {2 * n}'")
    ns = "openstack-multiregion"
    roles = ["controller", "compute"]
    names = [config_node_name(sb, m, n, role) for m, role in zip(machines, roles)]
    nodes = [{"name": name, "address": by_name[m].address, "sshPort": by_name[m].port,
              "hostKey": by_name[m].host_key, "roles": [role]} for name, m, role in zip(names, machines, roles)]
    config = {
        f"{ns}:region": "RegionOne" if n == 1 else f"Region{NUMBERS[n - 1].capitalize() if n <= 10 else n}",
        f"{ns}:keystone": {"node": names[0]} if n == 1 else {"stack": "region-one"},
        f"{ns}:services": REGION_SERVICES,
        f"{ns}:nodes": nodes,
    }
    if sb.kind == "machines" and n == 1:  # the one dashboard, beside the shared Keystone
        config[f"{ns}:services"] = REGION_SERVICES + ["dashboard"]
    if sb.kind == "machines":  # real machines: services under their own systemd
        return {**config, f"{ns}:serviceManager": "systemd", f"{ns}:compute": MACHINE_COMPUTE,
                f"{ns}:network": {"datapath": "netdev"}}
    return {
        **config,
        f"{ns}:nodeRoot": sb.node_root_template,
        f"{ns}:serviceManager": "none",
        f"{ns}:plainHttp": True,  # the supervised sandbox's services serve plain HTTP
        f"{ns}:virtualenv": sys.prefix,
    }


# Keys that say how services run on the nodes; stack_config sets those its kind uses.
NODE_LAYOUT_KEYS = tuple(f"openstack-multiregion:{k}" for k in ("nodeRoot", "serviceManager", "virtualenv",
                                                                  "compute", "network", "plainHttp"))


PROGRAM_FILES = ("Pulumi.yaml", "__main__.py", "components", "templates", "venv")


def ensure_project(sb: Sandbox) -> Path:
    """<sandbox>/project: links to this checkout's program plus the sandbox's own
    stack files, so a sandbox never writes into the checkout's Pulumi.<stack>.yaml."""
    project = sb.path / "project"
    project.mkdir(exist_ok=True)
    for name in PROGRAM_FILES:
        link = project / name
        if not link.is_symlink():
            link.symlink_to(REPO / name)
    return project


def cmd_stack_config(args) -> int:
    """Write <sandbox>/project/Pulumi.<stack>.yaml; secrets go in through stdin, encrypted."""
    import yaml

    sb = load_or_exit(args)
    project = ensure_project(sb)
    env = dict(os.environ, PULUMI_BACKEND_URL=f"file://{sb.path / 'state'}",
               PULUMI_CONFIG_PASSPHRASE_FILE=str(sb.path / "passphrase"))
    pulumi = ["pulumi", "--cwd", str(project), "--non-interactive"]
    subprocess.run(pulumi + ["stack", "select", "--create", args.stack], env=env, check=True, capture_output=True)
    target = project / f"Pulumi.{args.stack}.yaml"
    document = yaml.safe_load(target.read_text()) if target.exists() else {}
    config = {k: v for k, v in (document or {}).get("config", {}).items() if k not in NODE_LAYOUT_KEYS}
    config.update(stack_config(sb, args.stack))
    target.write_text(yaml.safe_dump(dict(document or {}, config=config), sort_keys=True))
    # Every other secret (service users, databases, RabbitMQ) is made by the program.
    secrets_wanted = {"sshPrivateKey": sb.private_key_file.read_text()}
    if region_index(args.stack) == 1:
        secrets_wanted["adminPassword"] = secrets.token_urlsafe(24)
    for key, value in secrets_wanted.items():
        if f"openstack-multiregion:{key}" in config:
            continue  # keep existing secrets: a rerun must not rotate them
        subprocess.run(pulumi + ["config", "set", "--secret", "--stack", args.stack, f"openstack-multiregion:{key}"],
                       input=value, text=True, env=env, check=True, capture_output=True)
    print(target)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", help="sandbox directory (default: $OMR_SANDBOX or .sandbox)")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up")
    up.add_argument("--kind", choices=KINDS, default=None,
                    help="a new sandbox's nodes: machines (default; nspawn containers on a bridge) or "
                         "loopback (sshd processes on 127.x); an existing sandbox keeps its kind")
    up.add_argument("--nodes", type=int, default=None, help="how many nodes at least (default: 4 for a new sandbox)")
    up.add_argument("--subnet", default=None,
                    help="first three octets: inside 198.18.0.0/15 for machines (default 198.18.1), "
                         "127.0.0.0/8 for loopback (default 127.0.1)")
    sub.add_parser("status")
    down = sub.add_parser("down")
    down.add_argument("--purge", action="store_true", help="also delete the sandbox directory")
    sub.add_parser("env")
    for name, what in (("power-off", "a machine loses power (SIGKILL)"), ("power-on", "it boots again, as it was")):
        sub.add_parser(name, help=what).add_argument("node", help="node1, node2, ...")
    sub.add_parser("sudo-user")
    sc = sub.add_parser("stack-config")
    sc.add_argument("stack", help="region-one, region-two, ...")
    args = p.parse_args(argv)
    commands = {"up": cmd_up, "status": cmd_status, "down": cmd_down, "env": cmd_env, "stack-config": cmd_stack_config,
                "sudo-user": cmd_sudo_user, "power-off": cmd_power_off, "power-on": cmd_power_on}
    try:
        return commands[args.cmd](args)
    except testbed.TestbedError as err:
        raise SystemExit(f"[sandbox] {err}") from None


if __name__ == "__main__":
    sys.exit(main())
