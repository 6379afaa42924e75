"""Real engine end to end on the smallest stack: preview, up, verify with real
clients, up again (no changes), destroy, verify gone."""
from __future__ import annotations

import uuid

import pytest
from pulumi import automation as auto

from tests.sandbox import REPO, stack

pytestmark = pytest.mark.engine


def test_preview_up_destroy_smoke_stack(sandbox):
    node = sandbox.nodes[0]
    project_name = f"smoke-{uuid.uuid4().hex[:8]}"
    path = f"/srv/smoke/{project_name}.txt"
    s = stack(sandbox, REPO / "tests" / "projects" / "smoke", "smoke")
    s.set_all_config({
        "authUrl": auto.ConfigValue(sandbox.keystone_url),
        "adminPassword": auto.ConfigValue(sandbox.admin_password, secret=True),
        "projectName": auto.ConfigValue(project_name),
        "host": auto.ConfigValue(node["address"]),
        "port": auto.ConfigValue(str(node["port"])),
        "hostKey": auto.ConfigValue(node["host_key"]),
        "sshPrivateKey": auto.ConfigValue(sandbox.private_key, secret=True),
        "path": auto.ConfigValue(node["root"] + path),
    })
    try:
        preview = s.preview()
        assert preview.change_summary.get("create") == 3  # stack + project + command

        up = s.up()
        assert up.summary.result == "succeeded"
        project_id = up.outputs["projectId"].value

        # Verified with openstacksdk's CLI and by reading the node's file, not our state.
        shown = sandbox.openstack_json("project", "show", project_name)
        assert shown["id"] == project_id
        assert sandbox.node_file("node1", path).read_text().strip() == project_id

        again = s.up()
        assert again.summary.resource_changes == {"same": 3}

        state = sandbox.state_text()  # the backend's files, as they lie on disk
        assert project_id in state
        assert sandbox.admin_password not in state
        assert "PRIVATE KEY" not in state

        s.destroy()
        assert sandbox.openstack("project", "show", project_name, check=False).returncode != 0
        assert not sandbox.node_file("node1", path).exists()
    finally:
        s.destroy()
        s.workspace.remove_stack("smoke")
