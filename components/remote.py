"""Commands run on nodes over SSH, as a Pulumi resource.

This is the stand-in for `pulumi_command.remote.Command` while the `command`
resource plugin cannot be built here (see README, "Toolchain"). It keeps that
resource's contract: `create`/`update`/`delete` command strings, `stdin`,
`triggers` that force a replacement, `stdout`/`stderr` outputs, and a connection
with a pinned host key, a dial error limit and a per-dial timeout.

Secrets never travel on a command line: callers put them on stdin, which is a
secret input. SSH connections are shared per node inside the provider process,
so a `pulumi up` opens one connection per node, not one per command.
"""
from __future__ import annotations

import base64
import io
import threading
import time
from typing import Any, Optional, Sequence

import paramiko
import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

_clients: dict[tuple, paramiko.SSHClient] = {}
_clients_lock = threading.Lock()
_KEY_TYPES = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)


class RemoteError(Exception):
    """A command failed or a node was unreachable; the message names the node."""


def _load_private_key(text: str) -> paramiko.PKey:
    for key_type in _KEY_TYPES:
        try:
            return key_type.from_private_key(io.StringIO(text))
        except paramiko.SSHException:
            continue
    raise RemoteError("sshPrivateKey is not an unencrypted ed25519, ecdsa or RSA private key")


def _host_entry(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def _where(conn: dict[str, Any]) -> str:
    return f"node {conn.get('node', '?')} ({conn['host']}:{int(conn['port'])})"


def _connect(conn: dict[str, Any]) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    key_type, key_data = conn["host_key"].split()[:2]
    port = int(conn["port"])  # numbers cross the provider boundary as floats
    client.get_host_keys().add(_host_entry(conn["host"], port), key_type,
                               paramiko.PKey.from_type_string(key_type, base64.b64decode(key_data)))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    limit = int(conn.get("dial_error_limit", 3))
    last: Exception | None = None
    for attempt in range(1, limit + 1):
        try:
            client.connect(conn["host"], port=port, username=conn["user"],
                           pkey=_load_private_key(conn["private_key"]), timeout=float(conn.get("per_dial_timeout", 10)),
                           banner_timeout=float(conn.get("per_dial_timeout", 10)),
                           look_for_keys=False, allow_agent=False)
            return client
        except paramiko.BadHostKeyException as err:
            raise RemoteError(f"{_where(conn)}: host key does not match the pinned hostKey ({err})") from None
        except (OSError, paramiko.SSHException) as err:
            last = err
            if attempt < limit:
                time.sleep(min(2.0 * attempt, 5.0))
    raise RemoteError(f"{_where(conn)}: cannot connect over SSH after {limit} attempts: {last}")


def _client(conn: dict[str, Any]) -> paramiko.SSHClient:
    key = (conn["host"], conn["port"], conn["user"], conn["host_key"])
    with _clients_lock:
        client = _clients.get(key)
        transport = client.get_transport() if client else None
        if transport is None or not transport.is_active():
            client = _connect(conn)
            _clients[key] = client
        return client


def run(conn: dict[str, Any], command: str, stdin: Optional[str] = None) -> tuple[str, str]:
    """Run one command on the node; raise RemoteError naming the node on failure."""
    try:
        chan = _client(conn).get_transport().open_session()
    except (OSError, paramiko.SSHException):
        with _clients_lock:  # a stale shared connection: drop it and dial again once
            _clients.pop((conn["host"], conn["port"], conn["user"], conn["host_key"]), None)
        chan = _client(conn).get_transport().open_session()
    with chan:
        chan.exec_command(command)
        if stdin:
            chan.sendall(stdin.encode())
        chan.shutdown_write()
        out, err = bytearray(), bytearray()
        while True:
            while chan.recv_ready():
                out += chan.recv(65536)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            time.sleep(0.005)
        status = chan.recv_exit_status()
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    if status != 0:
        first_line = command.strip().splitlines()[0] if command.strip() else command
        raise RemoteError(f"{_where(conn)}: command exited with {status}: {first_line[:120]}\n{stderr.strip()[-2000:]}")
    return stdout, stderr


class _CommandProvider(ResourceProvider):
    _run_keys = ("create", "update", "stdin")
    _target_keys = ("host", "port", "user")

    def create(self, props: dict[str, Any]) -> CreateResult:
        stdout, stderr = run(props["connection"], props["create"], props.get("stdin"))
        return CreateResult(f"{props['connection']['node']}:{time.time_ns()}",
                            dict(props, stdout=stdout, stderr=stderr))

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        if olds.get("triggers") != news.get("triggers"):
            return DiffResult(changes=True, replaces=["triggers"], delete_before_replace=True)
        changed = [k for k in self._run_keys + ("delete",) if olds.get(k) != news.get(k)]
        moved = [k for k in self._target_keys if olds["connection"].get(k) != news["connection"].get(k)]
        return DiffResult(changes=bool(changed or moved), replaces=[])

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        needs_run = any(olds.get(k) != news.get(k) for k in self._run_keys) or any(
            olds["connection"].get(k) != news["connection"].get(k) for k in self._target_keys)
        if not needs_run:  # only the delete command changed
            return UpdateResult(dict(news, stdout=olds.get("stdout", ""), stderr=olds.get("stderr", "")))
        stdout, stderr = run(news["connection"], news.get("update") or news["create"], news.get("stdin"))
        return UpdateResult(dict(news, stdout=stdout, stderr=stderr))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, props, {k: v for k, v in props.items() if k not in ("stdout", "stderr")})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        if props.get("delete"):
            run(props["connection"], props["delete"], None)


class Command(Resource, module="remote", name="Command"):
    """A command run on a node over SSH, re-run when its inputs change."""

    stdout: pulumi.Output[str]
    stderr: pulumi.Output[str]

    def __init__(self, name: str, connection: pulumi.Input[dict], create: pulumi.Input[str],
                 update: Optional[pulumi.Input[str]] = None, delete: Optional[pulumi.Input[str]] = None,
                 stdin: Optional[pulumi.Input[str]] = None, triggers: Optional[Sequence[pulumi.Input[Any]]] = None,
                 opts: Optional[pulumi.ResourceOptions] = None):
        # Delete before replace, also for forced replacements (`up --replace`): the old
        # command's delete (stop a unit, remove a file) must never undo the new create.
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            additional_secret_outputs=["stdin", "connection"], delete_before_replace=True))
        super().__init__(_CommandProvider(), name, {
            "connection": pulumi.Output.secret(connection), "create": create, "update": update,
            "delete": delete, "stdin": pulumi.Output.secret(stdin) if stdin is not None else None,
            "triggers": list(triggers or []), "stdout": None, "stderr": None,
        }, opts)
