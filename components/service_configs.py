"""Every configuration file a node of a region needs, rendered from templates/.

Pure Python (no Pulumi), so the rendered files are unit-tested directly. Which
files a node gets, and from which template with which values, is what the service
registry (components/registry) says; this module only walks it for one node, and
adds the files that belong to the operator rather than to a service: the admin
openrc and clouds.yaml (only where the config asks for them: they hold the cloud
admin's password) and the redirect page of a region without a dashboard.

A value a template needs but the context lacks is not passed at all, so Jinja2's
StrictUndefined fails the preview instead of writing an empty line to a node.
"""
from __future__ import annotations

import shlex
from typing import Any, Iterable, Mapping

from components import registry
from components.registry import ROLES
from components.registry.roles import is_variant_of
from components.registry.context import NodeContext, RegionContext, present
from components.registry.model import ConfigFile, Unit, Wsgi
from components.templates import render

__all__ = ["RegionContext", "NodeContext", "node_files", "units_for", "wsgi_entry", "ADMIN_OPENRC", "CLOUDS_YAML",
           "DASHBOARD_REDIRECT"]

ADMIN_OPENRC = "/root/admin-openrc"  # seed 000 step 3: in the admin's home on each controller
CLOUDS_YAML = "/etc/openstack/clouds.yaml"
DASHBOARD_REDIRECT = "/var/www/html/index.html"  # seed 000 step 9


def node_files(ctx: RegionContext, node_address: str, roles: tuple[str, ...],
               services: tuple[str, ...], host: str = "") -> dict[str, str]:
    """path on the node (e.g. "/etc/nova/nova.conf") -> rendered content, for a node
    with these roles in a region running these service types ("image", "compute",
    ..., and "dashboard" in the region that hosts Horizon)."""
    _check_roles(roles)
    node = NodeContext(node_address, tuple(roles), host or node_address)
    entries = registry.selected(tuple(services))
    files = {f.path: render_file(f, ctx, node) for entry in entries for f in entry.files_for(node.roles)}
    if node.controller:
        files.update(_operator_files(ctx, entries))
    return files


def node_file_modes(roles: tuple[str, ...], services: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """path -> (mode, group) of every service file a node with these roles gets."""
    return {f.path: (f.mode, f.group or entry.name)
            for entry in registry.selected(tuple(services)) for f in entry.files_for(tuple(roles))}


def units_for(path: str, roles: Iterable[str], services: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The units to restart on a node with these roles when `path` changes."""
    roles = tuple(roles)
    _check_roles(roles)
    entries = registry.selected(services) if services else registry.SERVICES
    return tuple(dict.fromkeys(u.name for e in entries for u in e.units_for(roles) if path in u.reads))


def render_file(f: ConfigFile, ctx: RegionContext, node: NodeContext) -> str:
    values = f.context(ctx, node)
    return render(f.template, **(oslo_escaped(present(values)) if f.oslo else present(values)))


def wsgi_entry(unit: Unit, config_dir: str) -> str:
    """The Python module a WSGI server imports to serve `unit` (wsgi_app.py.j2)."""
    wsgi: Wsgi = unit.wsgi
    return render("wsgi/wsgi-app.py.j2", service=unit.name, module=wsgi.module, factory=wsgi.factory or "",
                  environment=[(k, v.replace("{config_dir}", config_dir)) for k, v in wsgi.environment],
                  argv=[a.replace("{config_dir}", config_dir) for a in wsgi.argv])


# --- the operator's files ------------------------------------------------------------

def _operator_files(ctx: RegionContext, entries) -> dict[str, str]:
    files: dict[str, str] = {}
    if ctx.admin_password:
        files[ADMIN_OPENRC] = render("openrc/admin-openrc.j2", region=_shell(ctx.region),
                                     admin_password=_shell(ctx.admin_password), auth_url=_shell(ctx.keystone_v3),
                                     cacert=_shell(ctx.ca_file))
        files[CLOUDS_YAML] = render("openrc/clouds.yaml.j2", clouds=_clouds(ctx), auth_url=ctx.keystone_v3,
                                    admin_password=ctx.admin_password, cacert=ctx.ca_file)
    # The redirect page, unless a service of the node serves the web root itself (Horizon).
    serves_web_root = any(f.path == DASHBOARD_REDIRECT for e in entries for f in e.files)
    if ctx.dashboard_url and not serves_web_root:
        files[DASHBOARD_REDIRECT] = render("horizon/redirect.html.j2", region=ctx.region,
                                           dashboard_url=ctx.dashboard_url)
    return files


def _clouds(ctx: RegionContext) -> list[dict[str, str]]:
    """One cloud per region, named by the region in lower case."""
    regions = list(dict.fromkeys((*ctx.regions, ctx.region)))
    names = [r.lower() for r in regions]
    if len(set(names)) != len(names):
        raise ValueError(f"regions {regions} differ only by case: clouds.yaml needs distinct names")
    return [{"name": n, "region": r} for n, r in zip(names, regions)]


# --- escaping ----------------------------------------------------------------------------

def _check_roles(roles: Iterable[str]) -> None:
    unknown = sorted(r for r in set(roles) if not is_variant_of(r))
    if unknown:
        raise ValueError(f"unknown node role {unknown[0]!r}: expected one of {', '.join(ROLES)}")


def oslo_escaped(values: Any, name: str = "") -> Any:
    """oslo.config substitutes `$name` and reads one line per option: `$$` is a
    literal `$`, and a line break cannot be written at all. It also strips blanks
    around a value and one pair of quotes around it: such a value goes in quotes."""
    if isinstance(values, str):
        if "\n" in values or "\r" in values:
            raise ValueError(f"{name}: a configuration value cannot contain a line break")
        escaped = values.replace("$", "$$")
        if escaped != escaped.strip() or escaped[:1] in "\"'" and escaped:
            return f'"{escaped}"'
        return escaped
    if isinstance(values, Mapping):
        return {k: oslo_escaped(v, f"{name}.{k}" if name else k) for k, v in values.items()}
    if isinstance(values, (list, tuple)):
        return type(values)(oslo_escaped(v, name) for v in values)
    return values


def _shell(value: str) -> str:
    return shlex.quote(value) if value else ""
