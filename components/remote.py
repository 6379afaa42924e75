"""Commands run on nodes over SSH, as a Pulumi resource.

This is the stand-in for `pulumi_command.remote.Command` while the `command`
resource plugin cannot be built here (see README, "Toolchain"). It keeps that
resource's contract: `create`/`update`/`delete` command strings, `stdin`,
`triggers` that force a replacement, `stdout`/`stderr` outputs, and a connection
with a pinned host key, a dial error limit and a per-dial timeout.

Secrets never travel on a command line: callers put them on stdin, which is a
secret input. SSH connections are shared per node inside the provider process,
so a `pulumi up` opens one connection per node, not one per command.

Bounded waits: every command has a timeout (`command_timeout` in the connection,
or the resource's own `timeout`), and every connection is watched like OpenSSH's
ServerAliveInterval/ServerAliveCountMax: a keepalive the node must answer every
`keepalive_interval` seconds; after `keepalive_count_max` intervals without an
answer the connection is closed and every command on it fails, naming the node
and the step. paramiko's own keepalive (`set_keepalive`) keeps idle connections
open through NAT; it expects no answer, so it cannot see a dead node by itself.

A user other than root runs every command through `sudo -n sh -c` (passwordless
sudo; stdin still carries the secrets, never the command line).

A change of only the credentials or these options (private key, host key, the
timeouts) is an update that stores them and runs nothing.
"""
from __future__ import annotations

import base64
import io
import shlex
import socket
import threading
import time
from typing import Any, Optional, Sequence

import paramiko
import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

_KEY_TYPES = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)
# Defaults when a connection does not say (the program's come from the `ssh` config key).
COMMAND_TIMEOUT = 1800
KEEPALIVE_INTERVAL = 15
KEEPALIVE_COUNT_MAX = 4
# The request OpenSSH's own ServerAlive probe sends; sshd answers it (with "failure").
_PROBE = "keepalive@openssh.com"


class RemoteError(Exception):
    """A command failed or a node was unreachable; the message names the node (and never a secret)."""


class _TimedOut(Exception):
    pass


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


def _first_line(command: str) -> str:
    stripped = command.strip()
    return (stripped.splitlines()[0] if stripped else command)[:120]


def _step(command: str, step: Optional[str]) -> str:
    return f"step {step} ({_first_line(command)})" if step else f"command {_first_line(command)}"


def _keepalive(conn: dict[str, Any]) -> tuple[float, int]:
    return (float(conn.get("keepalive_interval") or KEEPALIVE_INTERVAL),
            int(conn.get("keepalive_count_max") or KEEPALIVE_COUNT_MAX))


class _Liveness:
    """Dead-peer detection for one connection (OpenSSH's ServerAlive*): a probe that
    needs an answer goes out `interval` seconds after the last answer; when none has
    come for `interval * count_max` seconds the connection is closed, which ends every
    command waiting on it. Only this thread sends requests that want an answer."""

    def __init__(self, transport: paramiko.Transport, interval: float, count_max: int):
        self.transport = transport
        self.interval, self.count_max = interval, count_max
        self.dead_after = interval * count_max
        self.last_answer = time.monotonic()
        self.dead: Optional[str] = None
        threading.Thread(target=self._watch, name="ssh-liveness", daemon=True).start()

    def _ask(self) -> None:
        self.transport.global_request(_PROBE, wait=True)  # returns on any answer, or once closed
        if self.transport.is_active():
            self.last_answer = time.monotonic()

    def _watch(self) -> None:
        asking: Optional[threading.Thread] = None
        while self.transport.is_active():
            silent = time.monotonic() - self.last_answer
            if silent > self.dead_after:
                self.dead = (f"stopped answering: no answer to SSH keepalives for {silent:.0f} s "
                             f"(ssh.keepaliveInterval {self.interval:g} s x ssh.keepaliveCountMax {self.count_max})")
                self.transport.close()
                return
            if silent >= self.interval and (asking is None or not asking.is_alive()):
                asking = threading.Thread(target=self._ask, name="ssh-keepalive", daemon=True)
                asking.start()
            time.sleep(min(0.5, self.interval / 4))


def _connect(conn: dict[str, Any]) -> tuple[paramiko.SSHClient, _Liveness]:
    client = paramiko.SSHClient()
    key_type, key_data = conn["host_key"].split()[:2]
    port = int(conn["port"])  # numbers cross the provider boundary as floats
    try:
        pinned = paramiko.PKey.from_type_string(key_type, base64.b64decode(key_data))
    except (ValueError, paramiko.SSHException):
        raise RemoteError(f"{_where(conn)}: hostKey is not a valid {key_type} public key") from None
    client.get_host_keys().add(_host_entry(conn["host"], port), key_type, pinned)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        pkey = _load_private_key(conn["private_key"])
    except RemoteError as err:
        raise RemoteError(f"{_where(conn)}: {err}") from None
    limit = int(conn.get("dial_error_limit", 3))
    dial_timeout = float(conn.get("per_dial_timeout", 10))
    last: Exception | None = None
    for attempt in range(1, limit + 1):
        try:
            client.connect(conn["host"], port=port, username=conn["user"], pkey=pkey, timeout=dial_timeout,
                           banner_timeout=dial_timeout, auth_timeout=dial_timeout,
                           look_for_keys=False, allow_agent=False)
            interval, count_max = _keepalive(conn)
            transport = client.get_transport()
            transport.set_keepalive(max(1, int(interval)))
            return client, _Liveness(transport, interval, count_max)
        except paramiko.BadHostKeyException:
            raise RemoteError(f"{_where(conn)}: host key does not match the pinned hostKey "
                              f"(ssh-keyscan -t {key_type} shows the node's current key)") from None
        except (OSError, paramiko.SSHException) as err:
            last = err
            if attempt < limit:
                time.sleep(min(2.0 * attempt, 5.0))
    raise RemoteError(f"{_where(conn)}: cannot connect over SSH after {limit} attempts: {last}")


_clients: dict[tuple, tuple[paramiko.SSHClient, _Liveness]] = {}
_locks: dict[tuple, threading.Lock] = {}
_locks_lock = threading.Lock()


def _key(conn: dict[str, Any]) -> tuple:
    return (conn["host"], int(conn["port"]), conn["user"], conn["host_key"])


def _client(conn: dict[str, Any]) -> tuple[paramiko.SSHClient, _Liveness]:
    key = _key(conn)
    with _locks_lock:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:  # one dial per node at a time; other nodes are not held up
        entry = _clients.get(key)
        if entry is None or not entry[0].get_transport() or not entry[0].get_transport().is_active():
            entry = _connect(conn)
            _clients[key] = entry
        return entry


def _forget(conn: dict[str, Any], entry: tuple[paramiko.SSHClient, _Liveness]) -> None:
    with _locks_lock:
        if _clients.get(_key(conn)) is entry:
            del _clients[_key(conn)]


def as_root(conn: dict[str, Any], command: str) -> str:
    """The command as the node runs it: as is for root, else through passwordless sudo."""
    if conn.get("user", "root") == "root":
        return command
    return f"sudo -n -- sh -c {shlex.quote(command)}"


def _withhold(stderr: str, stdin: Optional[str], command: str = "", n: int = 6) -> str:
    """stderr without the lines that repeat part of the (secret) stdin: a failing
    `mysql` prints the statement near its error, passwords included. Text that the
    command itself holds (paths, names) is no secret and keeps a line visible."""
    if not stdin:
        return stderr
    grams = {stdin[i:i + n] for i in range(len(stdin) - n + 1)}
    grams -= {command[i:i + n] for i in range(len(command) - n + 1)}
    kept = []
    for line in stderr.splitlines():
        if any(line[i:i + n] in grams for i in range(len(line) - n + 1)):
            kept.append("[line withheld: it repeats part of the command's secret input]")
        else:
            kept.append(line)
    return "\n".join(kept)


def run(conn: dict[str, Any], command: str, stdin: Optional[str] = None, timeout: Optional[float] = None,
        step: Optional[str] = None) -> tuple[str, str]:
    """Run one command on the node; raise RemoteError naming the node and the step on
    failure, after `timeout` seconds, or when the node stops answering."""
    limit = float(timeout or conn.get("command_timeout") or COMMAND_TIMEOUT)
    what = _step(command, step)
    entry = _client(conn)
    try:
        chan = entry[0].get_transport().open_session(timeout=entry[1].dead_after)
    except (OSError, paramiko.SSHException):
        _forget(conn, entry)  # a stale shared connection: dial again once
        entry = _client(conn)
        try:
            chan = entry[0].get_transport().open_session(timeout=entry[1].dead_after)
        except (OSError, paramiko.SSHException) as error:
            _forget(conn, entry)
            raise RemoteError(f"{_where(conn)}: cannot open an SSH session for {what}: {error}") from None
    liveness = entry[1]
    started = time.monotonic()
    out, err = bytearray(), bytearray()
    try:
        with chan:
            # A write to a node that stopped reading must not block for ever either.
            chan.settimeout(liveness.dead_after)
            chan.exec_command(as_root(conn, command))
            if stdin:
                chan.sendall(stdin.encode())
            chan.shutdown_write()
            while True:
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if chan.closed or not liveness.transport.is_active():
                    raise EOFError("the SSH channel closed before the command finished")
                if time.monotonic() - started > limit:
                    raise _TimedOut()
                time.sleep(0.01)
            status = chan.recv_exit_status()
            if status == -1:  # closed without an exit status: the connection went away
                raise EOFError("the SSH channel closed before the command finished")
    except _TimedOut:
        raise RemoteError(f"{_where(conn)}: {what} did not finish within {limit:g} s (ssh.commandTimeout); "
                          f"its SSH session was closed") from None
    except (EOFError, OSError, socket.timeout, paramiko.SSHException) as error:
        _forget(conn, entry)
        if liveness.dead:
            raise RemoteError(f"{_where(conn)}: {liveness.dead}, during {what}") from None
        raise RemoteError(f"{_where(conn)}: SSH failed during {what}: {error or type(error).__name__}") from None
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    if status != 0:
        shown = _withhold(stderr.strip()[-2000:], stdin, command)
        raise RemoteError(f"{_where(conn)}: {what} exited with {status}\n{shown}")
    return stdout, stderr


class _CommandProvider(ResourceProvider):
    _run_keys = ("create", "update", "stdin")
    _target_keys = ("host", "port", "user")
    # Stored on change, never a reason to run anything: credentials and options.
    _stored_keys = ("connection", "timeout")

    def create(self, props: dict[str, Any]) -> CreateResult:
        stdout, stderr = run(props["connection"], props["create"], props.get("stdin"), props.get("timeout"),
                             props.get("step"))
        return CreateResult(f"{props['connection']['node']}:{time.time_ns()}",
                            dict(props, stdout=stdout, stderr=stderr))

    def _needs_run(self, olds: dict[str, Any], news: dict[str, Any]) -> bool:
        return any(olds.get(k) != news.get(k) for k in self._run_keys) or any(
            olds["connection"].get(k) != news["connection"].get(k) for k in self._target_keys)

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        if olds.get("triggers") != news.get("triggers"):
            return DiffResult(changes=True, replaces=["triggers"], delete_before_replace=True)
        changed = self._needs_run(olds, news) or olds.get("delete") != news.get("delete") or any(
            olds.get(k) != news.get(k) for k in self._stored_keys)
        return DiffResult(changes=changed, replaces=[])

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        if not self._needs_run(olds, news):  # the delete command, credentials or options changed
            return UpdateResult(dict(news, stdout=olds.get("stdout", ""), stderr=olds.get("stderr", "")))
        stdout, stderr = run(news["connection"], news.get("update") or news["create"], news.get("stdin"),
                             news.get("timeout"), news.get("step"))
        return UpdateResult(dict(news, stdout=stdout, stderr=stderr))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, props, {k: v for k, v in props.items() if k not in ("stdout", "stderr")})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        if props.get("delete"):
            run(props["connection"], props["delete"], None, props.get("timeout"), props.get("step"))


class Command(Resource, module="remote", name="Command"):
    """A command run on a node over SSH, re-run when its inputs change.

    `timeout`: seconds this command may run (default: the connection's
    `command_timeout`)."""

    stdout: pulumi.Output[str]
    stderr: pulumi.Output[str]

    def __init__(self, name: str, connection: pulumi.Input[dict], create: pulumi.Input[str],
                 update: Optional[pulumi.Input[str]] = None, delete: Optional[pulumi.Input[str]] = None,
                 stdin: Optional[pulumi.Input[str]] = None, triggers: Optional[Sequence[pulumi.Input[Any]]] = None,
                 timeout: Optional[int] = None, opts: Optional[pulumi.ResourceOptions] = None):
        # Delete before replace, also for forced replacements (`up --replace`): the old
        # command's delete (stop a unit, remove a file) must never undo the new create.
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            additional_secret_outputs=["stdin", "connection"], delete_before_replace=True))
        super().__init__(_CommandProvider(), name, {
            "connection": pulumi.Output.secret(connection), "create": create, "update": update,
            "delete": delete, "stdin": pulumi.Output.secret(stdin) if stdin is not None else None,
            "triggers": list(triggers or []), "timeout": timeout, "step": name, "stdout": None, "stderr": None,
        }, opts)
