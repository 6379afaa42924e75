"""A random secret made once by the program and kept as a Pulumi secret.

The stand-in for pulumi_random.RandomPassword (whose plugin cannot be built here,
see README "Toolchain"). The value is made in `create`, stored encrypted in the
stack's state and never changes on later runs; `pulumi up --replace <urn>` makes a
new one (rotation of exactly that secret), and everything that uses it follows.
"""
from __future__ import annotations

import secrets
import string
import uuid
from typing import Optional

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider

# Letters and digits: valid in every file format and URL the program writes,
# without relying on escaping (which is done anyway, for secrets operators give).
ALPHABET = string.ascii_letters + string.digits


def new_secret(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


class _GeneratedSecretProvider(ResourceProvider):
    def create(self, props):
        return CreateResult(f"secret-{uuid.uuid4()}", {"length": props["length"],
                                                       "value": new_secret(int(props["length"]))})

    def diff(self, id_, olds, news):
        changed = int(olds.get("length", 0)) != int(news.get("length", 0))
        return DiffResult(changes=changed, replaces=["length"] if changed else [])


class GeneratedSecret(Resource, module="secrets", name="GeneratedSecret"):
    """`length` random letters and digits, made once."""

    value: pulumi.Output[str]

    def __init__(self, name: str, length: int = 32, opts: Optional[pulumi.ResourceOptions] = None):
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["value"]))
        super().__init__(_GeneratedSecretProvider(), name, {"length": length, "value": None}, opts)
