"""One node configured over SSH: software, rendered files, one-off steps, services.

Order on the node: install -> files -> steps (in the given order) -> units.
A file is pushed only when its content changes; a unit restarts only when a file
it reads changed (content hashes are its triggers); every restart is appended to
`<nodeRoot>/var/log/openstack-multiregion/restarts.log`, so an operator (and our
tests) can see exactly what a change restarted.
"""
from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field
from typing import Optional, Sequence

import pulumi

from components.remote import Command
from components.settings import NodeSpec

RESTART_LOG = "/var/log/openstack-multiregion/restarts.log"
# One manifest per Node component of each stack: the files and units it manages on the
# node. When a rename (a node renamed at the same address, `ha` switched on or off)
# makes a new component manage a path or unit, the old component's delete (which
# Pulumi runs at the END of the `up`, after the new one's create) finds it in another
# manifest and leaves it alone instead of removing what the create just made.
MANIFEST_DIR = "/var/lib/openstack-multiregion/managed.d"


@dataclass
class NodeFile:
    path: str  # absolute path on the node, before nodeRoot is applied
    content: pulumi.Input[str]  # a secret Output when it holds a secret
    mode: str = "0640"
    group: str = "root"  # set when the group exists on the node (e.g. 'glance')
    owner: str = "root"  # e.g. 'rabbitmq' for the Erlang cookie, which must be owner-only


@dataclass
class NodeStep:
    """A one-off command, run again only when its triggers or stdin change."""

    name: str
    command: str
    stdin: Optional[pulumi.Input[str]] = None
    triggers: Sequence[pulumi.Input[str]] = ()
    delete: Optional[str] = None  # run by `pulumi destroy` (e.g. stop what the step started)
    timeout: Optional[int] = None  # seconds; default: the stack's ssh.commandTimeout


@dataclass
class NodeUnit:
    name: str  # systemd unit, or program name when supervised
    files: Sequence[str]  # node paths whose change restarts the unit
    start: str = ""  # with serviceManager 'none': starts it in the background, writing {pidfile}
    ready_url: Optional[str] = None  # wait until this URL answers after a (re)start
    ready_command: str = ""  # or run this after a (re)start: it exits 0 once the unit really works
    triggers: Sequence[pulumi.Input[str]] = ()  # more reasons to restart it than its files' content
    needs: Sequence[str] = ()  # units of this node that must be ready before it (re)starts


@dataclass
class NodeArgs:
    spec: NodeSpec
    private_key: pulumi.Input[str]
    root: str  # nodeRoot for this node ('/' on real nodes)
    service_manager: str  # 'systemd' or 'none'
    install: Optional[str] = None
    files: Sequence[NodeFile] = ()
    steps: Sequence[NodeStep] = ()
    units: Sequence[NodeUnit] = ()
    depends_on: Sequence[pulumi.Resource] = field(default_factory=list)


def content_hash(content: pulumi.Input[str]) -> pulumi.Output[str]:
    """sha256 of the content; kept secret when the content is."""
    return pulumi.Output.from_input(content).apply(lambda c: hashlib.sha256(c.encode()).hexdigest())


def on_node(root: str, path: str) -> str:
    return path if root == "/" else root.rstrip("/") + path


def supervised_pidfile(root: str, name: str) -> str:
    """Where a process supervised without systemd records its pid (quoted for a shell)."""
    return shlex.quote(on_node(root, f"/run/openstack-multiregion/{name}.pid"))


def supervised_stop(root: str, name: str, pidfile: Optional[str] = None) -> str:
    """Stop a supervised process: TERM, up to 10 s, then KILL. `pidfile` (quoted):
    where the program writes its own pid, if not the supervised place."""
    pidfile = pidfile or supervised_pidfile(root, name)
    # The children are collected first: a master killed after the grace period
    # (gunicorn waits for its workers) would otherwise leave them orphaned.
    return (f"if [ -f {pidfile} ]; then pid=$(cat {pidfile}); kids=$(pgrep -P \"$pid\" || true); "
            f"kill \"$pid\" 2>/dev/null || true; "
            f"for i in $(seq 1 100); do kill -0 \"$pid\" 2>/dev/null || break; sleep 0.1; done; "
            f"kill -9 \"$pid\" $kids 2>/dev/null || true; rm -f {pidfile}; fi")


def _push_file_command(target: str, mode: str, group: str, owner: str = "root") -> str:
    t = shlex.quote(target)
    # Written beside the target and renamed, so a reader never sees half a file;
    # mktemp creates it 0600, so the content is never world-readable.
    return (f"set -e; d=$(dirname {t}); mkdir -p \"$d\"; tmp=$(mktemp \"$d/.omr.XXXXXX\"); "
            f"cat > \"$tmp\"; chmod {mode} \"$tmp\"; "
            f"chown {shlex.quote(owner)}:{shlex.quote(group)} \"$tmp\" 2>/dev/null || chown root \"$tmp\"; "
            f"mv -f \"$tmp\" {t}")


def units_in_start_order(units: Sequence[NodeUnit]) -> list[NodeUnit]:
    """The units, each after the units of this node it needs (otherwise in the given
    order). A cycle is a registry mistake, named."""
    by_name = {u.name: u for u in units}
    ordered: list[NodeUnit] = []
    visiting: set[str] = set()

    def visit(unit: NodeUnit) -> None:
        if any(u.name == unit.name for u in ordered):
            return
        if unit.name in visiting:
            raise ValueError(f"units {sorted(visiting)} need each other: no start order exists")
        visiting.add(unit.name)
        for name in unit.needs:
            if name in by_name:
                visit(by_name[name])
        visiting.discard(unit.name)
        ordered.append(unit)

    for unit in units:
        visit(unit)
    return ordered


def manifest_entries(root: str, files: Sequence[NodeFile], units: Sequence[NodeUnit]) -> str:
    return "".join(f"file:{on_node(root, f.path)}\n" for f in files) + "".join(f"unit:{u.name}\n" for u in units)


def unless_managed_elsewhere(root: str, manifest: str, entry: str, command: str) -> str:
    """`command` (a delete), unless a manifest other than `manifest` lists `entry`."""
    directory = shlex.quote(on_node(root, MANIFEST_DIR))
    return (f"others=$(grep -lsxF {shlex.quote(entry)} {directory}/* 2>/dev/null | grep -vxF {shlex.quote(manifest)} "
            f"|| true); if [ -z \"$others\" ]; then {command}; fi")


class Node(pulumi.ComponentResource):
    """A node of a region, configured over SSH from its role's files and units."""

    def __init__(self, name: str, args: NodeArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("openstack-multiregion:node:Node", name, None, opts)
        self._args = args
        self.resource_name = name
        # This component's manifest (named by stack and component: stacks share nodes).
        self.manifest = on_node(args.root, f"{MANIFEST_DIR}/{pulumi.get_stack()}.{name}")
        spec = args.spec
        self.connection = {
            "node": spec.name, "host": spec.address, "port": spec.ssh_port, "user": spec.ssh_user,
            "private_key": args.private_key, "host_key": spec.host_key,
            "dial_error_limit": 3, "per_dial_timeout": 10,
            # Bounded waits (README, "ssh"): changing them runs nothing, they are stored.
            "command_timeout": spec.ssh.command_timeout, "keepalive_interval": spec.ssh.keepalive_interval,
            "keepalive_count_max": spec.ssh.keepalive_count_max,
        }
        after: list[pulumi.Resource] = list(args.depends_on)
        if args.files or args.units:
            self._manifest(manifest_entries(args.root, args.files, args.units), after)
        if args.install:
            after = [self._command("install", args.install, depends_on=after)]
        self.files = {f.path: self._file(f, after) for f in args.files}
        hashes = {f.path: content_hash(f.content) for f in args.files}
        after = after + list(self.files.values())
        self.steps: dict[str, Command] = {}
        for step in args.steps:
            cmd = self._command(step.name, step.command, stdin=step.stdin, triggers=list(step.triggers),
                                delete=step.delete, timeout=step.timeout, depends_on=after)
            self.steps[step.name] = cmd
            after = after + [cmd]
        self.units: dict[str, Command] = {}
        for u in units_in_start_order(args.units):
            needed = [self.units[n] for n in u.needs if n in self.units]
            self.units[u.name] = self._unit(u, [hashes[p] for p in u.files] + list(u.triggers), after + needed)
        # What callers depend on to know the node is configured and its services run.
        self.ready: list[pulumi.Resource] = after + list(self.units.values())
        self.register_outputs({"node": spec.name, "files": list(self.files)})

    def command(self, suffix: str, create: str, depends_on: Sequence[pulumi.Resource], **kw) -> Command:
        """One more command on this node, after what `depends_on` names (e.g. work that
        needs other nodes ready first)."""
        return self._command(suffix, create, depends_on, **kw)

    def _command(self, suffix: str, create: str, depends_on: Sequence[pulumi.Resource], **kw) -> Command:
        return Command(f"{self.resource_name}-{suffix}", connection=self.connection, create=create,
                       opts=pulumi.ResourceOptions(parent=self, depends_on=list(depends_on)), **kw)

    def _manifest(self, entries: str, after: Sequence[pulumi.Resource]) -> Command:
        return Command(f"{self.resource_name}-manifest", connection=self.connection,
                       create=_push_file_command(self.manifest, "0644", "root"), stdin=entries,
                       delete=f"rm -f {shlex.quote(self.manifest)}",
                       opts=pulumi.ResourceOptions(parent=self, depends_on=list(after)))

    def _file(self, f: NodeFile, after: Sequence[pulumi.Resource]) -> Command:
        root = self._args.root
        target = on_node(root, f.path)
        remove = unless_managed_elsewhere(root, self.manifest, f"file:{target}", f"rm -f {shlex.quote(target)}")
        return Command(f"{self.resource_name}-file-{f.path.strip('/').replace('/', '-')}", connection=self.connection,
                       create=_push_file_command(target, f.mode, f.group, f.owner), stdin=f.content, delete=remove,
                       opts=pulumi.ResourceOptions(parent=self, depends_on=list(after)))

    def _unit(self, unit: NodeUnit, triggers: list, after: Sequence[pulumi.Resource]) -> Command:
        root = self._args.root
        log = shlex.quote(on_node(root, RESTART_LOG))
        record = (f"mkdir -p $(dirname {log}); "
                  f"echo \"$(date -u +%Y-%m-%dT%H:%M:%S.%NZ) restart {unit.name}\" >> {log}")
        if self._args.service_manager == "systemd":
            name = shlex.quote(unit.name)
            restart = f"systemctl daemon-reload; systemctl enable -q {name}; systemctl restart {name}"
            stop = f"systemctl disable -q --now {name} || true"
        else:
            pidfile = supervised_pidfile(root, unit.name)
            stop = supervised_stop(root, unit.name)
            restart = f"{stop}; mkdir -p $(dirname {pidfile}); {unit.start.replace('{pidfile}', pidfile)}"
        wait = ""
        if unit.ready_command:
            wait = f"; {unit.ready_command}"
        elif unit.ready_url:
            url = shlex.quote(unit.ready_url)
            wait = (f"; for i in $(seq 1 240); do curl -s -o /dev/null {url} && exit 0; sleep 0.25; done; "
                    f"echo '{unit.name} did not answer at {unit.ready_url} within 60s' >&2; exit 1")
        stop = unless_managed_elsewhere(root, self.manifest, f"unit:{unit.name}", stop)
        return Command(f"{self.resource_name}-unit-{unit.name}", connection=self.connection,
                       create=f"set -e; {restart}; {record}{wait}", delete=stop, triggers=triggers,
                       opts=pulumi.ResourceOptions(parent=self, depends_on=list(after)))
