"""One command on one sandbox node through components/remote.py, with the stack's
own keepalive and timeout settings (tests/engine/test_ssh.py)."""
import pulumi

from components.remote import Command

cfg = pulumi.Config()
connection = {
    "node": cfg.require("node"), "host": cfg.require("host"), "port": cfg.require_int("port"),
    "user": cfg.get("user") or "root", "private_key": cfg.require_secret("sshPrivateKey"),
    "host_key": cfg.require("hostKey"), "dial_error_limit": 1, "per_dial_timeout": 5,
    "keepalive_interval": cfg.require_int("keepaliveInterval"),
    "keepalive_count_max": cfg.require_int("keepaliveCountMax"),
}
step = Command("slow-step", connection=connection, create=cfg.require("command"), timeout=cfg.get_int("timeout"))
pulumi.export("stdout", step.stdout)
