"""The edge agent's configuration: the shipped example is complete and loads to the defaults."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from edge_agent.config import AgentConfig, load_agent_config
from schemas.config import ConfigError, describe

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "deploy" / "edge-agent.example.toml"


def test_the_example_documents_every_key_and_loads_to_the_defaults() -> None:
    text = EXAMPLE.read_text()
    data = tomllib.loads(text)
    for _, keys, _, _ in describe(AgentConfig):
        node: object = data
        for key in keys[:-1]:
            assert isinstance(node, dict)
            node = node.get(key, {})
        assert isinstance(node, dict)
        assert keys[-1] in node or f"# {keys[-1]} =" in text, f"{'.'.join(keys)} undocumented"
    assert load_agent_config(EXAMPLE) == AgentConfig()


def test_the_demo_config_loads() -> None:
    cfg = load_agent_config(ROOT / "deploy" / "demo" / "agent.toml")
    assert cfg.selector.budget.target_rate == pytest.approx(0.10)
    assert cfg.models.camera == Path("models/camera.onnx")


def test_environment_overrides_and_errors_name_the_key() -> None:
    cfg = load_agent_config(
        env={"FLEETAL_SELECTOR__BUDGET__TARGET_RATE": "0.02", "FLEETAL_ROLLOUT__ENABLED": "true"}
    )
    assert cfg.selector.budget.target_rate == pytest.approx(0.02)
    assert cfg.rollout.enabled
    with pytest.raises(ConfigError, match=r"selector\.budget"):
        load_agent_config(data={"selector": {"budget": {"target_rate": 0}}})
    with pytest.raises(ConfigError, match=r"unknown key 'spool\.max_byte'"):
        load_agent_config(data={"spool": {"max_byte": 1}})
    with pytest.raises(ConfigError, match="vehicle_id"):
        load_agent_config(data={"agent": {"vehicle_id": "a/b"}})
