"""The documentation names only configuration that exists: every FLEETAL_ variable, every table.

A user copies ``FLEETAL_SINK__SECURITY__SASL_PLAIN_PASSWORD`` from the docs and the agent stops
at start ("matches no configuration key"): the table is ``[kafka]``. These tests read every
document, example and docstring a user meets and check each name against the schema.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from edge_agent import cli as agent_cli
from edge_agent.config import AgentConfig
from ingest_service import cli as ingest_cli
from ingest_service.config import IngestConfig
from schemas.config import NOT_CONFIGURATION, describe

ROOT = Path(__file__).resolve().parents[3]

# schemas/config.py is the generic loader: its examples (FLEETAL_A__B) belong to no product.
SKIP = {ROOT / "schemas" / "config.py"}


def _documents() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    suffixes = {".md", ".toml", ".service"}
    files += sorted(p for p in (ROOT / "deploy").rglob("*") if p.suffix in suffixes)
    for package in ("edge_agent", "ingest_service", "schemas", "selector"):
        files += sorted((ROOT / package).rglob("*.py"))
    return [f for f in files if f.is_file() and f not in SKIP]


def _known() -> tuple[set[str], set[str]]:
    variables: set[str] = set()
    tables: set[str] = set()
    for cls in (AgentConfig, IngestConfig):
        for env, keys, _, _ in describe(cls):
            variables.add(env)
            tables.update(".".join(keys[:i]) for i in range(1, len(keys)))
    return variables, tables


# FLEETAL_ followed by a name (the bare prefix and FLEETAL_<TABLE>__<KEY> are prose)
VARIABLE_RE = re.compile(r"\bFLEETAL_[A-Z0-9][A-Z0-9_]*\b")
# `[kafka.security]` in Markdown, ``[kafka.security]`` in a docstring
TABLE_RE = re.compile(r"`\[([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)\]`")


def test_the_documents_are_found() -> None:
    names = {p.name for p in _documents()}
    assert {"README.md", "spool-and-sink.md", "ingest.md", "kafka_config.py"} <= names


def test_every_fleetal_variable_named_in_the_docs_is_a_configuration_key() -> None:
    """Or one of the tools' own (FLEETAL_KAFKA_CACHE), which the loader passes over: any other
    FLEETAL_ variable in a user's environment stops both programs at start."""
    variables, _ = _known()
    variables |= NOT_CONFIGURATION
    unknown = [
        f"{path.relative_to(ROOT)}:{n}: {name}"
        for path in _documents()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        for name in VARIABLE_RE.findall(line)
        if name not in variables
    ]
    assert not unknown, "variables that match no configuration key:\n" + "\n".join(unknown)


def test_every_table_named_in_the_docs_is_a_configuration_table() -> None:
    _, tables = _known()
    unknown = [
        f"{path.relative_to(ROOT)}:{n}: [{name}]"
        for path in _documents()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        for name in TABLE_RE.findall(line)
        if name not in tables
    ]
    assert not unknown, "tables that are in no configuration:\n" + "\n".join(unknown)


@pytest.mark.parametrize(
    ("main", "cls"), [(agent_cli.main, AgentConfig), (ingest_cli.main, IngestConfig)]
)
def test_config_help_lists_every_key_with_a_readable_type(
    main: Callable[[Sequence[str]], int], cls: type, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config-help"]) == 0
    out = capsys.readouterr().out
    for env, keys, tp, _ in describe(cls):
        assert f"{'.'.join(keys)} ({tp})" in out, env
        assert env in out
    for raw_repr in ("pathlib.", "Optional", "PosixPath", "(tuple)"):
        assert raw_repr not in out
    assert "environment values are read by the key's type" in out
