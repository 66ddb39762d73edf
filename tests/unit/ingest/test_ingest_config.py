"""The ingest service's configuration: defaults, TOML, environment overrides, validation."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from ingest_service.config import IngestConfig, load_ingest_config, load_tokens
from schemas.config import ConfigError, describe

EXAMPLE = Path(__file__).resolve().parents[3] / "deploy" / "ingest-service.example.toml"


def test_defaults() -> None:
    cfg = load_ingest_config()
    assert cfg.kafka.topic == "fleet.frames"
    assert cfg.kafka.group_id == "fleet-ingest"
    assert cfg.kafka.dlq == "fleet.frames.dlq"
    assert cfg.reassembly.max_frame_bytes == 64 * 1024 * 1024
    assert cfg.reassembly.max_inflight_bytes == 512 * 1024 * 1024
    assert cfg.reassembly.timeout_s == 120.0
    assert cfg.api.port == 8080
    assert cfg.metrics.port == 9465


def test_toml_and_environment_overrides(tmp_path: Path) -> None:
    path = tmp_path / "ingest.toml"
    path.write_text(
        '[kafka]\nbootstrap_servers = ["k1:9092", "k2:9092"]\ndlq_topic = "dead"\n'
        '[kafka.security]\nsecurity_protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "PLAIN"\n'
        'sasl_plain_username = "ingest"\n'
        '[queue]\ndatabase = "postgresql://ingest@db/fleet"\n'
    )
    env = {
        "FLEETAL_KAFKA__SECURITY__SASL_PLAIN_PASSWORD": "pw",
        "FLEETAL_REASSEMBLY__TIMEOUT_S": "30",
        "FLEETAL_API__ENABLED": "false",
    }
    cfg = load_ingest_config(path, env=env)
    assert cfg.kafka.bootstrap_servers == ("k1:9092", "k2:9092")
    assert cfg.kafka.dlq == "dead"
    assert cfg.kafka.security.kafka_kwargs()["sasl_plain_password"] == "pw"
    assert cfg.reassembly.timeout_s == 30.0
    assert cfg.api.enabled is False
    assert cfg.queue.database.startswith("postgresql://")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kafka": {"topik": "x"}}, "unknown key 'kafka.topik'"),
        ({"kafka": {"dlq_topic": "fleet.frames"}}, "dlq_topic"),
        ({"reassembly": {"max_inflight_bytes": 10}}, "max_inflight_bytes"),
        ({"reassembly": {"timeout_s": 0}}, "timeout_s"),
        ({"queue": {"max_attempts": 0}}, "max_attempts"),
        ({"kafka": {"heartbeat_interval_ms": 5000}}, "heartbeat_interval_ms"),
        ({"consumer": {"retry_initial_s": 60}}, "retry_initial_s"),
        ({"metrics": {"port": 70000}}, "port"),
        ({"api": {"port": "eighty"}}, "api.port"),
    ],
)
def test_bad_values_are_refused_with_a_message_naming_them(
    data: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_ingest_config(data=data)


def test_an_unknown_environment_variable_is_an_error() -> None:
    with pytest.raises(ConfigError, match="FLEETAL_KAFKA__TOPICS"):
        load_ingest_config(env={"FLEETAL_KAFKA__TOPICS": "x"})


def test_the_example_file_loads_and_documents_every_key() -> None:
    cfg = load_ingest_config(EXAMPLE, data={"api": {"tokens_file": None}})
    assert isinstance(cfg, IngestConfig)
    text = EXAMPLE.read_text()
    data = tomllib.loads(text)
    for _, keys, _, _ in describe(IngestConfig):
        node: object = data
        for key in keys[:-1]:
            assert isinstance(node, dict)
            node = node.get(key, {})
        assert isinstance(node, dict)
        # every key appears in the example, set or commented out
        assert keys[-1] in node or f"# {keys[-1]} =" in text, f"{'.'.join(keys)} undocumented"


def test_tokens_files_in_toml_and_json(tmp_path: Path) -> None:
    toml_file = tmp_path / "tokens.toml"
    toml_file.write_text('"0123456789abcdef0123" = "alice"\n')
    assert load_tokens(toml_file) == {"0123456789abcdef0123": "alice"}
    json_file = tmp_path / "tokens.json"
    json_file.write_text('{"fedcba9876543210fedc": "bob"}')
    assert load_tokens(json_file) == {"fedcba9876543210fedc": "bob"}
    short = tmp_path / "short.toml"
    short.write_text('"abc" = "eve"\n')
    with pytest.raises(ConfigError, match="16 characters"):
        load_tokens(short)
    with pytest.raises(ConfigError, match="cannot read"):
        load_tokens(tmp_path / "missing.toml")
