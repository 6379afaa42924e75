"""Fernet key repositories generated once and kept as Pulumi secrets.

Keystone nodes behind a VIP must share their fernet (token) and credential keys,
or a token issued by one node is refused by the next. `keystone-manage
fernet_setup` on each node would give each its own keys, so the keys are made
here once and pushed to every Keystone node as files. Rotation is not automated:
`pulumi up --replace <urn>` makes a new set (every issued token then ends).
"""
from __future__ import annotations

import base64
import os
import uuid
from typing import Optional

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider


def new_fernet_key() -> str:
    """The format `keystone-manage fernet_setup` writes: 32 random bytes, urlsafe base64."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


class _KeyRepositoryProvider(ResourceProvider):
    def create(self, props):
        keys = [new_fernet_key() for _ in range(int(props["count"]))]
        return CreateResult(f"keys-{uuid.uuid4()}", {"count": props["count"], "keys": keys})

    def diff(self, id_, olds, news):
        changed = int(olds.get("count", 0)) != int(news.get("count", 0))
        return DiffResult(changes=changed, replaces=["count"] if changed else [])


class KeyRepository(Resource, module="keystone", name="KeyRepository"):
    """`count` keys; file `i` of the repository holds keys[i] (0 is the staged key,
    the highest index the primary one)."""

    keys: pulumi.Output[list]

    def __init__(self, name: str, count: int = 2, opts: Optional[pulumi.ResourceOptions] = None):
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["keys"]))
        super().__init__(_KeyRepositoryProvider(), name, {"count": count, "keys": None}, opts)
