"""docs/configuration.md, generated from the configuration schema so that it cannot drift.

Every key of the edge agent's and the ingest service's configuration, from the dataclasses the
loaders read (:mod:`schemas.config`): its TOML key, its ``FLEETAL_`` variable, type, default
and the attribute docstring written under it. ``tests/unit/common/test_config_reference.py``
fails when the committed file differs from what this prints.

Run: ``python -m deploy.config_reference > docs/configuration.md``
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
from functools import cache
from pathlib import Path
from typing import Any

from edge_agent.config import AgentConfig
from ingest_service.config import IngestConfig
from schemas.config import _default_text, _leaves, _type_name

__all__ = ["example_docs", "field_docs", "reference"]

DEPLOY = Path(__file__).resolve().parent
_TABLE = re.compile(r"^\[([a-z0-9_.]+)\]\s*$")
_TYPE_ONLY = re.compile(r"[\s|]*((str|int|float|bool|Path|None|list|of|dict)[\s|,]*)*")
_KEY = re.compile(r"^#?\s*([a-z][a-z0-9_]*)\s*=([^#]*)(?:#\s*(.*))?$")


@cache
def field_docs(cls: type[Any]) -> dict[str, str]:
    """What the source says of each field of a dataclass: its attribute docstring, else the
    comment lines right above it; ``{field: text}`` (one line each)."""
    source = inspect.cleandoc("\n" + inspect.getsource(cls))
    lines = source.splitlines()
    tree = ast.parse(source)
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, after in zip(body, [*body[1:], None], strict=True):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        if (
            isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(inspect.cleandoc(after.value.value).split())
            continue
        above: list[str] = []
        for line in reversed(lines[: node.lineno - 1]):
            if not line.strip().startswith("#"):
                break
            above.insert(0, line.strip().lstrip("#").strip())
        if above:
            docs[node.target.id] = " ".join(above)
    return docs


@cache
def example_docs(path: Path) -> dict[str, str]:
    """``{table.key: text}`` from an example file: the comment after the key (its type
    prefix, ``float:``, dropped) or the comment lines right above it."""
    docs: dict[str, str] = {}
    table = ""
    above: list[str] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if (found := _TABLE.match(line)) is not None:
            table, above = found.group(1), []
            continue
        key = _KEY.match(line)
        if key is not None and (key.group(3) or above):
            after = re.sub(r"^[A-Za-z_| .\[\]]+?(:|\()\s*", "", key.group(3) or "").rstrip(")")
            if _TYPE_ONLY.fullmatch(after):
                after = ""  # "# float": a type, not a description
            text = after or " ".join(above)
            docs.setdefault(f"{table}.{key.group(1)}" if table else key.group(1), text)
            above = []
        elif line.startswith("#"):
            above.append(line.lstrip("# ").strip())
        else:
            above = []
    return docs


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _summary(cls: type[Any]) -> str:
    """The first paragraph of a table's class docstring, on one line."""
    doc = inspect.getdoc(cls) or ""
    if doc.startswith(f"{cls.__name__}("):  # dataclass's generated signature: no docstring
        return ""
    return " ".join(doc.split("\n\n")[0].split())


def reference(title: str, cls: type[Any], example: Path) -> str:
    """One section: a table of keys per configuration table, with the table's summary."""
    out = [f"## {title}", ""]
    groups: dict[tuple[str, ...], list[Any]] = {}
    for leaf in _leaves(cls):
        groups.setdefault(leaf.keys[:-1], []).append(leaf)
    for table, leaves in groups.items():
        out.append(f"### `[{'.'.join(table)}]`" if table else "### top level")
        out.append("")
        summary = _summary(leaves[0].owner)
        if summary:
            out += [_cell(summary), ""]
        out += [
            "| key | variable | type | default | what it does |",
            "| --- | --- | --- | --- | --- |",
        ]
        for leaf in leaves:
            doc = field_docs(leaf.owner).get(leaf.keys[-1]) or example_docs(example).get(
                ".".join(leaf.keys), ""
            )
            default = "(secret)" if leaf.secret and leaf.default else _default_text(leaf.default)
            out.append(
                f"| `{leaf.keys[-1]}` | `{leaf.env}` | {_cell(_type_name(leaf.tp))} | "
                f"`{_cell(default)}` | {_cell(doc)} |"
            )
        out.append("")
    return "\n".join(out)


def render() -> str:
    head = (
        "# Configuration reference\n\n"
        "Generated from the configuration schema by `python -m deploy.config_reference`; do "
        "not edit by hand (`tests/unit/common/test_config_reference.py` fails when this file "
        "and the schema differ). One TOML file per process; every key can be set by its "
        '`FLEETAL_` variable instead, read by the key\'s type (README, "Using it"). Example '
        "files with every key: `deploy/edge-agent.example.toml`, "
        "`deploy/ingest-service.example.toml`.\n\n"
    )
    return (
        head
        + reference("Edge agent (`edge-agent`)", AgentConfig, DEPLOY / "edge-agent.example.toml")
        + reference(
            "Ingest service (`ingest-service`)",
            IngestConfig,
            DEPLOY / "ingest-service.example.toml",
        )
    )


if __name__ == "__main__":
    sys.stdout.write(render())
