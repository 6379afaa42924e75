"""The committed stack files are valid but for the host keys an operator must fill in."""
from __future__ import annotations

import json

import pytest
import yaml

from components.settings import ConfigError, parse
from tests.sandbox import REPO
from tests.unit.test_settings import KEY

SECRETS = {"adminPassword": "a", "servicePassword": "s", "sshPrivateKey": "k"}


def raw_config(stack: str, host_key: str | None = None) -> dict:
    config = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())["config"]
    raw = {k.split(":", 1)[1]: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}
    if host_key:
        nodes = json.loads(raw["nodes"])
        raw["nodes"] = json.dumps([dict(n, hostKey=host_key) for n in nodes])
    return {**raw, **SECRETS}


@pytest.mark.parametrize("stack", ["region-one", "region-two"])
def test_committed_stack_asks_for_host_keys(stack):
    with pytest.raises(ConfigError) as err:
        parse(raw_config(stack))
    assert err.value.key == "nodes[0].hostKey"
    assert "ssh-keyscan" in str(err.value)


def test_committed_stacks_follow_seed_000_once_filled():
    one, two = parse(raw_config("region-one", KEY)), parse(raw_config("region-two", KEY))
    assert (one.region, one.keystone.node, one.service_address) == ("RegionOne", "ctl1", "192.168.80.83")
    assert (two.region, two.keystone.stack, two.service_address) == ("RegionTwo", "region-one", "192.168.80.85")
    assert [d.name for d in one.domains] == ["nhanhoa", "cloud365"]
