"""Rendering of the per-service templates in templates/<service>/.

StrictUndefined: a value the template needs but the caller forgot fails the
preview, instead of writing an empty line to a node.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,
)


def render(template: str, **values: Any) -> str:
    """Render `templates/<template>` (e.g. 'keystone/keystone.conf.j2')."""
    return _env.get_template(template).render(**values)
