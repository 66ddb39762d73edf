"""The edge agent's configuration: the shipped example is complete and loads to the defaults."""

from __future__ import annotations

import re
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


def test_a_numeric_vehicle_id_and_password_from_the_environment_stay_strings() -> None:
    sasl = {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_plain_username": "v"}
    cfg = load_agent_config(
        data={"kafka": {"security": sasl}},
        env={
            "FLEETAL_AGENT__VEHICLE_ID": "1042",
            "FLEETAL_KAFKA__SECURITY__SASL_PLAIN_PASSWORD": "123456",
            "FLEETAL_KAFKA__BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
        },
    )
    assert cfg.agent.vehicle_id == "1042"
    assert cfg.kafka.security.sasl_plain_password == "123456"
    assert cfg.kafka.bootstrap_servers == ("k1:9092", "k2:9092")


@pytest.mark.parametrize("raw", ["nan", "inf"])
def test_every_float_key_refuses_nan_and_infinity_naming_it(raw: str) -> None:
    floats = [(env, keys) for env, keys, tp, _ in describe(AgentConfig) if "float" in tp]
    assert len(floats) > 10
    for env, keys in floats:
        with pytest.raises(ConfigError, match=rf"{env}: '{re.escape('.'.join(keys))}"):
            load_agent_config(env={env: raw})
        data: dict[str, object] = {keys[-1]: float(raw)}
        for key in reversed(keys[:-1]):
            data = {key: data}
        with pytest.raises(ConfigError, match=re.escape(".".join(keys))):
            load_agent_config(data=data)


def test_the_cli_loads_its_config_with_the_test_tools_variables_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from edge_agent import cli

    monkeypatch.setenv("FLEETAL_KAFKA_CACHE", str(tmp_path / "kafka-cache"))
    monkeypatch.setenv("FLEETAL_PG_BIN", "/usr/lib/postgresql/16/bin")
    monkeypatch.setenv("FLEETAL_AGENT__VEHICLE_ID", "0042")
    assert cli._load(None).agent.vehicle_id == "0042"
