"""One Keystone record and one command on a node: proves engine, providers, sandbox."""
import pulumi

from components.identity import Project
from components.remote import Command

cfg = pulumi.Config()
auth = pulumi.Output.secret({
    "authUrl": cfg.require("authUrl"), "username": "admin", "password": cfg.require_secret("adminPassword"),
    "projectName": "admin", "userDomainName": "Default", "projectDomainName": "Default",
})
project = Project("smoke-project", auth=auth, project_name=cfg.require("projectName"), domain_id="default")
connection = {
    "node": "node1", "host": cfg.require("host"), "port": cfg.require_int("port"), "user": "root",
    "private_key": cfg.require_secret("sshPrivateKey"), "host_key": cfg.require("hostKey"),
}
path = cfg.require("path")
marker = Command("smoke-file", connection=connection,
                 create=project.id.apply(lambda pid: f"mkdir -p $(dirname {path}) && echo {pid} > {path}"),
                 delete=f"rm -f {path}")
pulumi.export("projectId", project.id)
pulumi.export("path", path)
