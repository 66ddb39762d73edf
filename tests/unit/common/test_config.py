"""The configuration contract: TOML + environment into frozen dataclasses, errors name the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from schemas.config import ConfigError, describe, env_overrides, load_config


@dataclass(frozen=True)
class Kafka:
    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = "fleet.frames"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL"] = "PLAINTEXT"
    ssl_cafile: Path | None = None


@dataclass(frozen=True)
class Budget:
    target_rate: float = 0.05
    max_per_minute: int = 30
    methods: tuple[str, ...] = ("entropy",)
    explore: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.target_rate <= 1.0:
            raise ValueError(f"target_rate must be in (0, 1], got {self.target_rate}")


@dataclass(frozen=True)
class Cfg:
    vehicle_id: str
    kafka: Kafka = field(default_factory=Kafka)
    budget: Budget = field(default_factory=Budget)


def test_file_then_environment_override(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        'vehicle_id = "veh-7"\n[budget]\ntarget_rate = 0.1\nmethods = ["bald", "entropy"]\n'
    )
    env = {"FLEETAL_BUDGET__TARGET_RATE": "0.02", "FLEETAL_KAFKA__SSL_CAFILE": "/etc/ca.pem"}
    cfg = load_config(Cfg, path=path, env=env)
    assert cfg.vehicle_id == "veh-7"
    assert cfg.budget.target_rate == pytest.approx(0.02)
    assert cfg.budget.methods == ("bald", "entropy")
    assert cfg.kafka.ssl_cafile == Path("/etc/ca.pem")
    assert cfg.kafka.topic == "fleet.frames"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"vehicle_id": "v", "budget": {"target_rat": 0.1}}, r"unknown key 'budget\.target_rat'"),
        ({"vehicle_id": "v", "budget": {"target_rate": "high"}}, r"'budget\.target_rate' must be"),
        ({"vehicle_id": "v", "budget": {"target_rate": 1.5}}, r"\[budget\]: target_rate must be"),
        ({"vehicle_id": "v", "budget": {"max_per_minute": 2.5}}, r"must be an integer"),
        ({"vehicle_id": "v", "kafka": {"security_protocol": "TLS"}}, r"is not one of"),
        ({"budget": {}}, r"missing required key 'vehicle_id'"),
        ({"vehicle_id": "v", "kafka": 3}, r"\[kafka\] must be a table"),
    ],
)
def test_bad_values_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(Cfg, data)


def test_unknown_environment_variable_is_an_error() -> None:
    with pytest.raises(ConfigError, match="FLEETAL_BUDGET__TARGET matches no"):
        env_overrides(Cfg, {"FLEETAL_BUDGET__TARGET": "0.1", "HOME": "/root"})


def test_bad_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("vehicle_id = \n")
    with pytest.raises(ConfigError, match=r"bad\.toml is not valid TOML"):
        load_config(Cfg, path=bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Cfg, path=tmp_path / "missing.toml")


def test_describe_lists_every_variable() -> None:
    rows = {env: (keys, default) for env, keys, _, default in describe(Cfg)}
    assert rows["FLEETAL_BUDGET__TARGET_RATE"] == (("budget", "target_rate"), 0.05)
    assert rows["FLEETAL_VEHICLE_ID"][1] == "(required)"
    assert len(rows) == 9
