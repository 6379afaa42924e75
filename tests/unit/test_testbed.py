"""The machines test bed's pure parts: subnet validation, the address plan, the files
the sandbox writes into a node, the nspawn command, and stack-config per kind."""
from __future__ import annotations

import stat
import sys

import pytest

from tests.sandbox import REPO

sys.path.insert(0, str(REPO / "scripts"))  # the sandbox's modules run as scripts, not a package
import sandbox as sandbox_cli  # noqa: E402
import testbed  # noqa: E402

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHxDVG9o8V3l9pQ3B3p1p0y3Jb3q7b8z9q3J6yq3Jb3q"


@pytest.mark.parametrize("text, expected", [
    ("198.18.1", "198.18.1"), ("198.18.77", "198.18.77"), ("198.19.255", "198.19.255"), ("198.18.001", "198.18.1"),
])
def test_subnets_inside_the_test_range_are_accepted(text, expected):
    assert testbed.parse_subnet(text) == expected


@pytest.mark.parametrize("text", [
    "198.20.0", "198.17.255", "127.0.1", "10.0.0", "192.168.80", "198.18", "198.18.1.0", "198.18.1.0/24",
    "198.18.256", "a.b.c", "",
])
def test_subnets_outside_the_test_range_are_refused_with_the_range(text):
    with pytest.raises(testbed.TestbedError, match=r"inside 198\.18\.0\.0/15"):
        testbed.parse_subnet(text)


def test_a_bad_subnet_is_one_line_and_creates_nothing(tmp_path, capsys):
    target = tmp_path / "sb"
    with pytest.raises(SystemExit) as exit_:
        sandbox_cli.main(["--dir", str(target), "up", "--subnet", "10.0.0"])
    assert str(exit_.value).startswith("[sandbox] --subnet '10.0.0': expected") and "\n" not in str(exit_.value)
    assert not target.exists()


def test_a_loopback_subnet_is_still_checked_for_the_loopback_kind(tmp_path):
    with pytest.raises(SystemExit, match=r"inside 127\.0\.0\.0/8"):
        sandbox_cli.main(["--dir", str(tmp_path / "sb"), "up", "--kind", "loopback", "--subnet", "198.18.1"])


def test_node_count_is_bounded_by_the_address_plan(tmp_path):
    testbed.check_node_count(1)
    testbed.check_node_count(testbed.MAX_NODES)
    assert testbed.node_address("198.18.1", testbed.MAX_NODES) == "198.18.1.254"
    for bad in (0, testbed.MAX_NODES + 1):
        with pytest.raises(testbed.TestbedError, match="--nodes"):
            testbed.check_node_count(bad)
    with pytest.raises(SystemExit, match="--nodes 300"):
        sandbox_cli.main(["--dir", str(tmp_path / "sb"), "up", "--nodes", "300"])


def test_address_plan():
    assert testbed.bridge_address("198.18.1") == "198.18.1.1"
    assert [testbed.node_address("198.18.1", i) for i in (1, 2, 9)] == ["198.18.1.11", "198.18.1.12", "198.18.1.19"]
    assert testbed.proxy_url("198.18.77") == "http://198.18.77.1:3142"


def test_bridge_name_is_short_stable_and_per_sandbox(tmp_path):
    name = testbed.bridge_name(tmp_path / "a")
    assert name.startswith("omr-") and len(name) <= 15  # Linux's interface name limit
    assert name == testbed.bridge_name(tmp_path / "a")
    assert name != testbed.bridge_name(tmp_path / "b")
    assert testbed.machine_name(name, "node1") == f"{name}-node1"


def test_network_config_gives_host0_its_address_and_no_gateway():
    text = testbed.networkd_config("198.18.1.11")
    assert "Name=host0" in text and "Address=198.18.1.11/24" in text
    assert "Gateway" not in text  # nodes reach only their bridge


def test_sshd_accepts_the_pinned_host_key_and_root_by_key_only():
    lines = testbed.SSHD_CONFIG.splitlines()
    assert [line for line in lines if line.startswith("HostKey")] == ["HostKey /etc/ssh/ssh_host_ed25519_key"]
    assert "PermitRootLogin prohibit-password" in lines
    assert "PasswordAuthentication no" in lines and "KbdInteractiveAuthentication no" in lines


def test_apt_and_pip_go_through_the_sandbox():
    assert testbed.apt_proxy_config("http://198.18.1.1:3142").splitlines()[-1] == \
        'Acquire::http::Proxy "http://198.18.1.1:3142";'
    pip = testbed.pip_config("/var/cache/wheelhouse/abc")
    assert "no-index = true" in pip and "find-links = /var/cache/wheelhouse/abc" in pip


INDEX_TARGETS = "\n".join([
    "http://mirror.example/debian-security/\tbookworm-security\tmain",
    "http://mirror.example/debian/\tbookworm\tmain",
    "http://mirror.example/debian/\tbookworm\tcontrib",
    "http://mirror.example/debian/\tbookworm\tmain",  # one line per index target type
    "http://mirror.example/debian/\tbookworm-updates\tmain",
    "http://other.example/repo/\tnodistro\tmain",  # not Debian 12
    "garbage",
])


def test_the_nodes_use_the_hosts_debian_12_repositories():
    repositories = testbed.parse_index_targets(INDEX_TARGETS)
    assert repositories == [
        ("http://mirror.example/debian-security/", "bookworm-security", ["main"]),
        ("http://mirror.example/debian/", "bookworm", ["main", "contrib"]),
        ("http://mirror.example/debian/", "bookworm-updates", ["main"]),
    ]
    assert testbed.debootstrap_mirror(repositories) == "http://mirror.example/debian/"
    sources = testbed.apt_sources(repositories).splitlines()
    assert "deb http://mirror.example/debian/ bookworm main contrib" in sources


def test_proxy_config_binds_the_bridge_and_owns_its_socket(tmp_path):
    text = testbed.proxy_config(tmp_path / "cache", tmp_path / "log", tmp_path / "socket", "198.18.1.1")
    assert "BindAddress: 198.18.1.1" in text and f"Port: {testbed.PROXY_PORT}" in text
    assert f"CacheDir: {tmp_path / 'cache'}" in text
    # Never the package's default socket, which another apt-cacher-ng on the host may own.
    assert f"SocketPath: {tmp_path / 'socket'}" in text


def test_nspawn_boots_the_node_on_the_bridge_with_the_extra_options(tmp_path):
    cmd = testbed.nspawn_command(tmp_path / "rootfs", "omr-x-node1", "node1", "omr-x", tmp_path / "wheels")
    assert cmd[0] == "systemd-nspawn"
    for option in ("--register=no", "--keep-unit", "--boot", "--network-bridge=omr-x", "--hostname=node1",
                   f"--directory={tmp_path / 'rootfs'}", f"--bind-ro={tmp_path / 'wheels'}:/var/cache/wheelhouse",
                   *testbed.NODE_NSPAWN_OPTIONS):
        assert option in cmd
    assert "--bind=/dev/net/tun" in testbed.NODE_NSPAWN_OPTIONS


def fake_node(tmp_path):
    """A node directory with a host key pair and a root with what the rootfs template holds."""
    node_dir = tmp_path / "node1"
    node_dir.mkdir()
    (node_dir / "ssh_host_ed25519_key").write_text("PRIVATE\n")
    (node_dir / "ssh_host_ed25519_key.pub").write_text(KEY + " node1\n")
    root = node_dir / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "root").mkdir()
    (root / "etc" / "machine-id").write_text("")
    return node_dir, root


SETUP = testbed.NodeSetup(subnet="198.18.1", authorized_key="ssh-ed25519 CLIENT\n", wheelhouse="k1",
                          repositories=[("http://mirror.example/debian/", "bookworm", ["main"])],
                          peers=[("node1", "198.18.1.11"), ("node2", "198.18.1.12")])


def configure(node_dir, root):
    testbed.configure_node(root, node_dir, "node1", "198.18.1.11", SETUP)


HYBRID = "9:name=systemd:/\n8:pids:/\n4:memory:/job/7b8d\n0::/\n"


def test_a_node_gets_its_own_cgroup_in_the_hierarchies_of_a_hybrid_host(tmp_path):
    for d in ("systemd", "unified", "memory"):
        (tmp_path / d).mkdir()
    assert testbed.own_cgroups(HYBRID, tmp_path) == [tmp_path / "systemd", tmp_path / "unified"]
    nested = "1:name=systemd:/ci/job\n0::/ci/job\n"
    assert testbed.own_cgroups(nested, tmp_path) == [tmp_path / "systemd/ci/job", tmp_path / "unified/ci/job"]


def test_a_node_gets_its_own_cgroup_on_a_cgroup2_host(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    assert testbed.own_cgroups("0::/user.slice/session-1.scope\n", tmp_path) == [
        tmp_path / "user.slice/session-1.scope"]


def test_the_cgroups_of_two_nodes_differ(monkeypatch, tmp_path):
    monkeypatch.setattr(testbed, "own_cgroups", lambda text: [tmp_path / "unified"])
    assert testbed.node_cgroups("omr-1-node1") != testbed.node_cgroups("omr-1-node2")


def test_node_files_written_by_the_sandbox(tmp_path):
    node_dir, root = fake_node(tmp_path)
    configure(node_dir, root)
    etc = root / "etc"
    assert (etc / "hostname").read_text() == "node1\n"
    hosts = (etc / "hosts").read_text().splitlines()
    assert "198.18.1.11 node1" in hosts and "198.18.1.12 node2" in hosts
    assert len((etc / "machine-id").read_text().strip()) == 32
    assert "Address=198.18.1.11/24" in (etc / "systemd" / "network" / "10-host0.network").read_text()
    assert (etc / "ssh" / "ssh_host_ed25519_key.pub").read_text().startswith(KEY)
    assert stat.S_IMODE((etc / "ssh" / "ssh_host_ed25519_key").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "root" / ".ssh" / "authorized_keys").stat().st_mode) == 0o600
    assert "198.18.1.1:3142" in (etc / "apt" / "apt.conf.d" / "01sandbox-proxy").read_text()
    assert "deb http://mirror.example/debian/ bookworm main" in (etc / "apt" / "sources.list").read_text()
    assert "find-links = /var/cache/wheelhouse/k1" in (etc / "pip.conf").read_text()


def test_configuring_a_node_again_changes_nothing(tmp_path):
    node_dir, root = fake_node(tmp_path)
    configure(node_dir, root)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}
    configure(node_dir, root)
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()} == before


def test_wheelhouse_key_follows_the_requirements_and_the_python(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("nova==34.0.0\n")
    key = testbed.wheelhouse_key([req], "3.11.2")
    assert key == testbed.wheelhouse_key([req], "3.11.2")
    assert key != testbed.wheelhouse_key([req], "3.11.7")
    req.write_text("nova==34.0.1\n")
    assert key != testbed.wheelhouse_key([req], "3.11.2")


def test_remove_tree_removes_a_plain_tree(tmp_path):
    (tmp_path / "t" / "a").mkdir(parents=True)
    assert testbed.mounts_below(tmp_path) == []
    testbed.remove_tree(tmp_path / "t")
    assert not (tmp_path / "t").exists()


def machines_sandbox(tmp_path, kind):
    nodes = [sandbox_cli.Node(name=f"node{i}", address=f"198.18.1.{10 + i}", port=22,
                              root=str(tmp_path / f"node{i}"), host_key=KEY) for i in (1, 2)]
    return sandbox_cli.Sandbox(dir=str(tmp_path), subnet="198.18.1", nodes=nodes, kind=kind)


def test_stack_config_for_machines_uses_the_containers_and_systemd(tmp_path):
    config = sandbox_cli.stack_config(machines_sandbox(tmp_path, "machines"), "region-one")
    ns = "openstack-multiregion"
    assert config[f"{ns}:serviceManager"] == "systemd"
    assert f"{ns}:nodeRoot" not in config and f"{ns}:virtualenv" not in config
    assert config[f"{ns}:nodes"] == [
        # Names unlike the machines' hostnames (node1, node2), as an operator's may be.
        {"name": "r1-ctl", "address": "198.18.1.11", "sshPort": 22, "hostKey": KEY, "roles": ["controller"]},
        {"name": "r1-cmp", "address": "198.18.1.12", "sshPort": 22, "hostKey": KEY, "roles": ["compute"]},
    ]
    assert config[f"{ns}:keystone"] == {"node": "r1-ctl"}


def test_stack_config_for_loopback_is_unchanged(tmp_path):
    config = sandbox_cli.stack_config(machines_sandbox(tmp_path, "loopback"), "region-one")
    ns = "openstack-multiregion"
    assert config[f"{ns}:serviceManager"] == "none"
    assert config[f"{ns}:nodeRoot"] == str(tmp_path / "nodes" / "{node}" / "root")
    assert config[f"{ns}:virtualenv"] == sys.prefix


def test_a_sandbox_from_before_the_kinds_is_loopback(tmp_path):
    (tmp_path / "sandbox.json").write_text('{"dir": "%s", "subnet": "127.0.1", "nodes": []}' % tmp_path)
    assert sandbox_cli.Sandbox.load(tmp_path).kind == "loopback"
