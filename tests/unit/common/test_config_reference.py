"""docs/configuration.md is generated from the configuration schema and cannot drift: it is
what ``python -m deploy.config_reference`` prints now, it lists every key of both programs,
and every key there says what it does."""

from __future__ import annotations

from pathlib import Path

from deploy.config_reference import field_docs, render
from edge_agent.config import AgentConfig
from ingest_service.config import IngestConfig
from schemas.config import describe

DOC = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"


def test_the_committed_reference_is_what_the_schema_gives() -> None:
    assert DOC.read_text() == render(), (
        "docs/configuration.md is stale: python -m deploy.config_reference > docs/configuration.md"
    )


def test_every_key_is_listed_and_described() -> None:
    text = DOC.read_text()
    rows = [line.split("|") for line in text.splitlines() if line.startswith("| `")]
    variables = {cells[2].strip().strip("`") for cells in rows}
    for cls in (AgentConfig, IngestConfig):
        for env, _keys, _tp, _default in describe(cls):
            assert env in variables, f"{env} is not in docs/configuration.md"
    undescribed = [cells[2].strip() for cells in rows if not cells[5].strip()]
    assert undescribed == []


def test_a_field_is_described_by_its_docstring_or_the_comment_above() -> None:
    from dataclasses import dataclass

    @dataclass
    class Table:
        # said above
        first: int = 1
        second: str = ""
        """said below"""
        third: float = 0.0

    assert field_docs(Table) == {"first": "said above", "second": "said below"}
