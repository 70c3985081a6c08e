"""MkDocs hook: the configuration reference's field tables, generated from the dataclasses themselves.

A page line ``<!-- fields: memalign_graph.context.Context -->`` becomes a table of that dataclass's fields
(name, default, description from the field's ``metadata["description"]``), so the reference says what
the code accepts, never what it accepted when the page was written.
"""

from __future__ import annotations

import dataclasses
import importlib
import re

MARKER = re.compile(r"^<!-- fields: ([\w.]+) -->$", re.M)


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        return f"`{field.default!r}`"
    # Fields read from the environment are built by `context._env(name, default)`: name the variable.
    factory = field.default_factory
    cells = dict(zip(factory.__code__.co_freevars, (c.cell_contents for c in factory.__closure__ or ())))
    if isinstance(cells.get("name"), str):
        fallback = f", else `{cells['default']!r}`" if cells.get("default") is not None else ""
        return f"`${cells['name']}`{fallback}"
    return "computed"


def _table(path: str) -> str:
    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    rows = ["| field | default | what |", "|---|---|---|"]
    for field in dataclasses.fields(cls):
        description = field.metadata.get("description", "").replace("|", "\\|")
        rows.append(f"| `{field.name}` | {_default(field)} | {description} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, **_: object) -> str:
    """Replace every field marker on a page with its table."""
    return MARKER.sub(lambda m: _table(m.group(1)), markdown)
