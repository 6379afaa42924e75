"""Node roles are data (components/registry/roles.py): what a role installs, when its
nodes start, and that an unknown role is a config error naming the key."""
from __future__ import annotations

import dataclasses

import pytest

from components import node_software
from components.registry import roles
from components.registry.roles import Role, start_order, start_role
from components.settings import ConfigError, parse
from tests.unit.test_settings import KEY, nodes, valid


def settings_with(*specs):
    return parse(valid(nodes=nodes(*({"name": n, "address": a, "roles": r, "hostKey": KEY} for n, a, r in specs))))


def test_a_roles_packages_reach_only_its_nodes():
    s = settings_with(("ctl", "192.168.80.85", ["controller"]), ("cmp", "192.168.80.86", ["compute"]))
    controller, compute = (node_software.apt_packages(s, s.node(n)) for n in ("ctl", "cmp"))
    for package in roles.ROLES_BY_NAME["controller"].apt:
        assert package in controller and package not in compute, package
    assert "sudo" in compute and "sudo" not in controller  # nova's, for its computes' rootwrap


def test_computes_start_after_controllers_and_a_combined_node_starts_as_a_controller():
    assert [r.name for r in start_order()] == ["controller", "compute"]
    assert start_role(("compute", "controller")).name == "controller"
    assert start_role(("compute",)).name == "compute"


def test_a_new_role_is_one_entry(monkeypatch):
    """A `gateway` role (the example of the README's "Adding a node role"): its Debian
    packages reach its nodes only, and its nodes start after the controllers."""
    gateway = Role("gateway", "OVN gateway chassis: routers' external ports", apt=("ovn-host",),
                   starts_after=("controller",))
    by_name = {**roles.ROLES_BY_NAME, "gateway": gateway}
    monkeypatch.setattr(roles, "ROLE_LIST", (*roles.ROLE_LIST, gateway))
    monkeypatch.setattr(node_software, "ROLES_BY_NAME", by_name)
    s = settings_with(("ctl", "192.168.80.85", ["controller"]), ("cmp", "192.168.80.86", ["compute"]))
    gateway_node = dataclasses.replace(s.node("cmp"), name="gw", roles=("gateway",))
    assert "ovn-host" in node_software.apt_packages(s, gateway_node)
    assert "ovn-host" not in node_software.apt_packages(s, s.node("ctl"))
    order = [r.name for r in start_order()]
    assert order.index("gateway") > order.index("controller")


def test_roles_that_start_after_each_other_are_refused(monkeypatch):
    a, b = Role("a", "", starts_after=("b",)), Role("b", "", starts_after=("a",))
    monkeypatch.setattr(roles, "ROLE_LIST", (a, b))
    monkeypatch.setattr(roles, "ROLES_BY_NAME", {"a": a, "b": b})
    with pytest.raises(ValueError, match="no start order"):
        start_order()


def test_an_unknown_role_names_the_key():
    with pytest.raises(ConfigError) as err:
        settings_with(("ctl", "192.168.80.85", ["controller"]), ("st", "192.168.80.87", ["storage"]))
    assert "nodes[1].roles" in str(err.value) and "controller, compute" in str(err.value)


def test_no_generic_component_decides_by_a_services_name():
    """The node, region and software components read the registry; none names a
    service (nova's cell mapping is its registry hook, its cell URLs its placeholders)."""
    import re
    from pathlib import Path

    generic = ("region_nodes.py", "node.py", "node_software.py", "systemd_units.py", "service_configs.py")
    pattern = re.compile(r"""(\.name\s*==\s*["'](glance|horizon|nova|keystone|neutron|cinder|placement)["'])"""
                         r"""|by_name\(["']|registry\.nova|from components\.registry import nova""")
    found = {}
    for module in generic:
        text = (Path(__file__).resolve().parents[2] / "components" / module).read_text()
        hits = [m.group(0) for m in pattern.finditer(text)]
        if hits:
            found[module] = hits
    assert found == {}, found
