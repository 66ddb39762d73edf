"""The ingest service's configuration: defaults, TOML, environment overrides, validation."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from ingest_service.blobstore import BlobRef, LocalBlobStore, S3BlobStore, open_blob_store
from ingest_service.config import (
    IngestConfig,
    apply_aws_environment,
    load_ingest_config,
    load_tokens,
)
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
        ({"retrain": {"runner": "slurm"}}, "runner"),
        ({"retrain": {"runner": "ray"}}, "ray_address"),
        ({"rollout": {"canary_vehicles": ["veh-a"]}}, "prometheus_url"),
        ({"rollout": {"canary_fraction": 1.0}}, "canary_fraction"),
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


# --- [blobs]: backend and [blobs.s3] ----------------------------------------------------------


def test_blobs_default_to_the_local_backend() -> None:
    cfg = load_ingest_config()
    assert cfg.blobs.backend == "local"
    assert cfg.blobs.s3.bucket == ""
    assert cfg.blobs.s3.addressing_style == "path"


def test_open_blob_store_builds_the_configured_backend(tmp_path: Path) -> None:
    local = load_ingest_config(data={"blobs": {"root": str(tmp_path / "b"), "fsync": False}})
    store = open_blob_store(local)
    assert isinstance(store, LocalBlobStore)
    assert store.root == tmp_path / "b"
    assert store.fsync is False
    s3_cfg = load_ingest_config(
        data={
            "blobs": {
                "backend": "s3",
                "s3": {
                    "endpoint_url": "http://127.0.0.1:9",
                    "bucket": "fleet-blobs",
                    "prefix": "prod/blobs",
                    "access_key_id": "AKIDEXAMPLE",
                    "secret_access_key": "very-secret-value",
                },
            }
        }
    )
    s3 = open_blob_store(s3_cfg)  # no request is made until the store is used
    assert isinstance(s3, S3BlobStore)
    ref = BlobRef.of(b"x")
    assert s3.key_for(ref) == f"prod/blobs/{ref.sha256[:2]}/{ref.sha256[2:4]}/{ref.sha256}"
    for text in (repr(s3), repr(s3_cfg), repr(s3_cfg.blobs.s3)):
        assert "very-secret-value" not in text
        assert "AKIDEXAMPLE" not in text
    s3.close()


def test_s3_keys_from_toml_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "ingest.toml"
    path.write_text(
        '[blobs]\nbackend = "s3"\n'
        '[blobs.s3]\nendpoint_url = "https://minio.internal:9000"\nbucket = "fleet-blobs"\n'
        'addressing_style = "virtual"\n'
    )
    env = {
        "FLEETAL_BLOBS__S3__ACCESS_KEY_ID": "id",
        "FLEETAL_BLOBS__S3__SECRET_ACCESS_KEY": "secret",
        "FLEETAL_BLOBS__S3__MAX_ATTEMPTS": "5",
    }
    s3 = load_ingest_config(path, env=env).blobs.s3
    assert (s3.endpoint_url, s3.bucket, s3.addressing_style) == (
        "https://minio.internal:9000",
        "fleet-blobs",
        "virtual",
    )
    assert (s3.access_key_id, s3.secret_access_key, s3.max_attempts) == ("id", "secret", 5)
    assert s3.connect_timeout_s == 5.0


@pytest.mark.parametrize(
    ("blobs", "message"),
    [
        ({"backend": "s3"}, r"\[blobs\]: s3.bucket: required when backend = \"s3\""),
        ({"backend": "gcs"}, "'blobs.backend' = 'gcs' is not one of 'local', 's3'"),
        ({"s3": {"bucket": "Fleet_Blobs"}}, "not a valid S3 bucket name"),
        ({"s3": {"bucket": "ab"}}, "not a valid S3 bucket name"),
        ({"s3": {"endpoint_url": "minio:9000"}}, "endpoint_url"),
        ({"s3": {"prefix": "/blobs"}}, "prefix"),
        ({"s3": {"prefix": "blobs/"}}, "prefix"),
        ({"s3": {"access_key_id": "id"}}, "set both or neither"),
        ({"s3": {"secret_access_key": "s"}}, "set both or neither"),
        ({"s3": {"session_token": "t"}}, "session_token"),
        ({"s3": {"read_timeout_s": 0}}, "read_timeout_s"),
        ({"s3": {"connect_timeout_s": -1}}, "connect_timeout_s"),
        ({"s3": {"max_attempts": 0}}, "max_attempts"),
        ({"s3": {"addressing_style": "auto"}}, "addressing_style"),
        ({"s3": {"buckett": "x"}}, "unknown key 'blobs.s3.buckett'"),
    ],
)
def test_bad_blob_store_settings_are_refused(blobs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_ingest_config(data={"blobs": blobs})


def test_a_bad_value_never_echoes_the_secret() -> None:
    with pytest.raises(ConfigError) as info:
        load_ingest_config(data={"blobs": {"s3": {"secret_access_key": "hunter2-secret"}}})
    assert "hunter2-secret" not in str(info.value)


def test_the_standard_aws_variables_fill_only_what_the_file_leaves_empty() -> None:
    env = {
        "AWS_ACCESS_KEY_ID": "env-id",
        "AWS_SECRET_ACCESS_KEY": "env-secret",
        "AWS_SESSION_TOKEN": "env-token",
        "AWS_DEFAULT_REGION": "eu-central-1",
        "AWS_ENDPOINT_URL": "http://ceph.internal:7480",
    }
    bare = load_ingest_config(data={"blobs": {"backend": "s3", "s3": {"bucket": "fleet-blobs"}}})
    s3 = apply_aws_environment(bare, env).blobs.s3
    assert (s3.access_key_id, s3.secret_access_key, s3.session_token) == (
        "env-id",
        "env-secret",
        "env-token",
    )
    assert (s3.region, s3.endpoint_url) == ("eu-central-1", "http://ceph.internal:7480")
    assert apply_aws_environment(bare, {}) is bare

    explicit = load_ingest_config(
        data={
            "blobs": {
                "backend": "s3",
                "s3": {
                    "bucket": "fleet-blobs",
                    "access_key_id": "file-id",
                    "secret_access_key": "file-secret",
                    "region": "us-west-2",
                    "endpoint_url": "http://minio:9000",
                },
            }
        }
    )
    s3 = apply_aws_environment(explicit, {**env, "AWS_REGION": "ap-south-1"}).blobs.s3
    assert (s3.access_key_id, s3.secret_access_key, s3.session_token) == (
        "file-id",
        "file-secret",
        "",
    )
    assert (s3.region, s3.endpoint_url) == ("us-west-2", "http://minio:9000")
    with pytest.raises(ConfigError, match="AWS_"):
        apply_aws_environment(bare, {"AWS_ENDPOINT_URL": "ceph:7480"})


def test_a_numeric_password_from_the_environment_is_a_string() -> None:
    cfg = load_ingest_config(
        data={
            "kafka": {
                "security": {
                    "security_protocol": "SASL_PLAINTEXT",
                    "sasl_mechanism": "PLAIN",
                    "sasl_plain_username": "ingest",
                }
            }
        },
        env={
            "FLEETAL_KAFKA__SECURITY__SASL_PLAIN_PASSWORD": "123456",
            "FLEETAL_KAFKA__GROUP_ID": "2024",
        },
    )
    assert cfg.kafka.security.kafka_kwargs()["sasl_plain_password"] == "123456"
    assert cfg.kafka.group_id == "2024"


def test_a_password_of_the_wrong_type_in_the_file_is_not_echoed() -> None:
    with pytest.raises(ConfigError, match="sasl_plain_password") as info:
        load_ingest_config(data={"kafka": {"security": {"sasl_plain_password": 123456}}})
    assert "123456" not in str(info.value)


@pytest.mark.parametrize("raw", ["nan", "inf"])
def test_every_float_key_refuses_nan_and_infinity_naming_it(raw: str) -> None:
    floats = [(env, keys) for env, keys, tp, _ in describe(IngestConfig) if "float" in tp]
    assert len(floats) > 8
    for env, keys in floats:
        with pytest.raises(ConfigError, match=rf"{env}: '{re.escape('.'.join(keys))}"):
            load_ingest_config(env={env: raw})
        data: dict[str, object] = {keys[-1]: float(raw)}
        for key in reversed(keys[:-1]):
            data = {key: data}
        with pytest.raises(ConfigError, match=re.escape(".".join(keys))):
            load_ingest_config(data=data)


def test_the_cli_loads_its_config_with_the_test_tools_variables_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from ingest_service import cli

    monkeypatch.setenv("FLEETAL_PG_BIN", "/usr/lib/postgresql/16/bin")
    monkeypatch.setenv("FLEETAL_KAFKA_CACHE", str(tmp_path / "kafka-cache"))
    monkeypatch.setenv("FLEETAL_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    config = tmp_path / "ingest.toml"
    config.write_text("[api]\nenabled = false\n")
    cfg = cli._load(config)
    assert cfg.kafka.bootstrap_servers == ("k1:9092", "k2:9092")
    assert cfg.api.enabled is False
