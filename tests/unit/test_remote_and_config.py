"""SSH commands (credentials stored without running anything, sudo, withheld
stderr) and the config keys of ownership and SSH, without a node."""
from __future__ import annotations

import json

import pytest

from components import remote
from components.remote import _CommandProvider, _withhold, as_root
from components.settings import ConfigError, SshOptions, parse
from tests.unit.test_settings import valid

CONN = {"node": "ctl", "host": "192.168.80.85", "port": 22, "user": "root", "private_key": "KEY-CANARY-1",
        "host_key": "ssh-ed25519 AAAA", "dial_error_limit": 3, "per_dial_timeout": 10,
        "command_timeout": 1800, "keepalive_interval": 15, "keepalive_count_max": 4}
CMD = {"connection": CONN, "create": "systemctl restart glance-api", "update": None, "delete": "systemctl stop x",
       "stdin": None, "triggers": ["h1"], "timeout": None, "step": "nodes-ctl-unit-glance-api"}


@pytest.fixture
def ran(monkeypatch) -> list:
    calls = []
    monkeypatch.setattr(remote, "run", lambda conn, command, *a: calls.append((conn, command)) or ("out", ""))
    return calls


@pytest.mark.parametrize("change", [
    {"private_key": "KEY-CANARY-2"}, {"host_key": "ssh-ed25519 BBBB"}, {"command_timeout": 60},
    {"keepalive_interval": 5, "keepalive_count_max": 2},
])
def test_new_credentials_or_options_are_stored_and_run_nothing(ran, change):
    olds = dict(CMD, stdout="old out", stderr="")
    news = dict(CMD, connection=dict(CONN, **change))
    diff = _CommandProvider().diff("id", olds, news)
    assert diff.changes and not diff.replaces
    outs = _CommandProvider().update("id", olds, news).outs
    assert ran == [] and outs["connection"] == news["connection"] and outs["stdout"] == "old out"


def test_a_new_target_runs_the_command_again(ran):
    olds = dict(CMD, stdout="", stderr="")
    for change in ({"host": "192.168.80.86"}, {"user": "deploy"}, {"port": 2222}):
        news = dict(CMD, connection=dict(CONN, **change))
        _CommandProvider().update("id", olds, news)
    assert len(ran) == 3


def test_an_unchanged_command_is_no_change():
    assert not _CommandProvider().diff("id", dict(CMD, stdout="", stderr=""), dict(CMD)).changes


def test_commands_of_another_user_run_through_passwordless_sudo():
    assert as_root(CONN, "set -e; echo 'a b'") == "set -e; echo 'a b'"
    assert as_root(dict(CONN, user="deploy"), "set -e; echo 'a b'") == \
        "sudo -n -- sh -c 'set -e; echo '\"'\"'a b'\"'\"''"


def test_stderr_lines_that_repeat_the_secret_input_are_withheld():
    sql = "ALTER USER 'nova'@'%' IDENTIFIED BY 'S3cret-Pw';\n"
    stderr = ("ERROR 1064 (42000) at line 1: You have an error near 'IDENTIFIED BY 'S3cret-Pw'' at line 1\n"
              "mariadb: some unrelated warning")
    shown = _withhold(stderr, sql, "set -e; mariadb --batch")
    assert "S3cret-Pw" not in shown and "unrelated warning" in shown
    assert _withhold(stderr, None) == stderr


def test_stderr_that_names_what_the_command_names_stays_visible():
    command = "set -e; d=$(dirname /etc/nova/nova.conf); tmp=$(mktemp \"$d/.omr.XXXXXX\"); cat > \"$tmp\""
    content = "[DEFAULT]\nstate_path = /var/lib/nova\napi_paste_config = /etc/nova/api-paste.ini\n" \
              "transport_url = rabbit://openstack:S3cret-Pw@ctl:5672/\n"
    stderr = "mktemp: failed to create file via template '/etc/nova/.omr.XXXXXX': Permission denied"
    assert _withhold(stderr, content, command) == stderr
    assert "S3cret-Pw" not in _withhold("bad value rabbit://openstack:S3cret-Pw@ctl", content, command)


def test_errors_name_the_node_and_step_and_never_the_key():
    err = remote._step("set -e; apt-get install -y keystone\nsecond line", "admin-ctl1-install")
    assert err == "step admin-ctl1-install (set -e; apt-get install -y keystone)"
    assert "KEY-CANARY" not in remote._where(CONN)


# --- config ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["Default", "default", "DEFAULT"])
def test_the_default_domain_is_refused_in_config(name):
    raw = valid(identity=json.dumps({"domains": [{"name": name, "projects": ["x"]}]}))
    with pytest.raises(ConfigError) as err:
        parse(raw)
    assert str(err.value) == (f"config openstack-multiregion:identity.domains[0].name = {name}: expected a domain "
                              f"this stack creates, not Keystone's Default domain (it holds admin and the service "
                              f"users)")


def test_adopt_untagged_defaults_to_false():
    assert parse(valid()).adopt_untagged is False
    assert parse(valid(adoptUntagged="true")).adopt_untagged is True
    assert parse(valid(adoptUntagged=True)).adopt_untagged is True
    with pytest.raises(ConfigError, match="adoptUntagged = yes: expected true or false"):
        parse(valid(adoptUntagged="yes"))


def test_ssh_options_reach_every_node():
    assert parse(valid()).nodes[0].ssh == SshOptions(command_timeout=1800, keepalive_interval=15,
                                                     keepalive_count_max=4)
    s = parse(valid(ssh=json.dumps({"commandTimeout": 7200, "keepaliveInterval": 5, "keepaliveCountMax": 2})))
    assert {n.ssh for n in s.nodes} == {SshOptions(7200, 5, 2)}


@pytest.mark.parametrize("ssh,key", [
    ({"commandTimeout": 0}, "ssh.commandTimeout"), ({"keepaliveInterval": "10"}, "ssh.keepaliveInterval"),
    ({"timeout": 5}, "ssh.timeout"), (["x"], "ssh"),
])
def test_bad_ssh_options_name_the_key(ssh, key):
    with pytest.raises(ConfigError, match=f"config openstack-multiregion:{key} = "):
        parse(valid(ssh=json.dumps(ssh)))


def test_connection_errors_carry_no_secret():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

    key = Ed25519PrivateKey.generate()
    host_key = key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    real_key = key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()).decode()
    bad_key = "-----BEGIN OPENSSH PRIVATE KEY-----\nKEY-CANARY-3\n-----END OPENSSH PRIVATE KEY-----\n"
    base = dict(CONN, host="127.0.0.1", port=1, dial_error_limit=1, per_dial_timeout=1, host_key=host_key)
    for conn, expected in ((dict(base, private_key=bad_key), "sshPrivateKey is not an unencrypted"),
                           (dict(base, private_key=real_key), "cannot connect over SSH after 1 attempts"),
                           (dict(base, private_key=real_key, host_key="ssh-ed25519 AAAA"), "hostKey is not a valid")):
        with pytest.raises(remote.RemoteError) as err:
            remote.run(conn, "true", stdin="STDIN-CANARY")
        text = str(err.value)
        assert text.startswith("node ctl (127.0.0.1:1): ") and expected in text
        assert "CANARY" not in text and "PRIVATE KEY" not in text
        assert all(line not in text for line in real_key.splitlines()[1:-1])
