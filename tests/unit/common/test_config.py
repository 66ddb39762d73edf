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


# --- environment values take their type from the field (issue 8, item 8) -----------------------


@dataclass(frozen=True)
class Typed:
    name: str = "veh-local"
    count: int = 3
    rate: float = 0.5
    limit: float | None = None
    on: bool = False
    where: Path | None = None
    root: Path = Path("var")
    secret: str | None = field(default=None, repr=False)
    names: tuple[str, ...] = ("a",)
    weights: tuple[float, ...] = (0.5, 0.5)
    mode: Literal["fast", "slow"] = "fast"


@pytest.mark.parametrize("raw", ["123456", "007", "0.05", "true", "[1, 2]", '"quoted"', "1e3"])
def test_a_string_key_takes_the_environment_value_as_written(raw: str) -> None:
    cfg = load_config(Typed, env={"FLEETAL_NAME": raw, "FLEETAL_SECRET": raw})
    assert cfg.name == raw
    assert cfg.secret == raw


def test_numbers_booleans_paths_and_lists_are_parsed_by_the_fields_type() -> None:
    env = {
        "FLEETAL_COUNT": "1_000",
        "FLEETAL_RATE": "2",
        "FLEETAL_LIMIT": "12.5",
        "FLEETAL_ON": "TRUE",
        "FLEETAL_WHERE": "/var/lib/fleetal",
        "FLEETAL_NAMES": "k1:9092, k2:9092",
        "FLEETAL_WEIGHTS": "[0.25, 0.75]",
        "FLEETAL_MODE": "slow",
    }
    cfg = load_config(Typed, env=env)
    assert (cfg.count, cfg.on, cfg.mode) == (1000, True, "slow")
    assert cfg.rate == pytest.approx(2.0)
    assert cfg.limit == pytest.approx(12.5)
    assert cfg.where == Path("/var/lib/fleetal")
    assert cfg.names == ("k1:9092", "k2:9092")
    assert cfg.weights == pytest.approx((0.25, 0.75))
    assert load_config(Typed, env={"FLEETAL_NAMES": '["x", "y"]'}).names == ("x", "y")
    assert load_config(Typed, env={"FLEETAL_NAMES": ""}).names == ()
    for off in ("false", "0", "no", "off"):
        assert load_config(Typed, env={"FLEETAL_ON": off}).on is False


def test_an_empty_or_none_value_unsets_an_optional_key_but_a_string_stays_a_string() -> None:
    cfg = load_config(Typed, {"where": "/x", "limit": 3.0}, env={"FLEETAL_WHERE": ""})
    assert cfg.where is None
    assert load_config(Typed, {"limit": 3.0}, env={"FLEETAL_LIMIT": "none"}).limit is None
    assert load_config(Typed, env={"FLEETAL_SECRET": "none"}).secret == "none"
    assert load_config(Typed, env={"FLEETAL_SECRET": ""}).secret is None


@pytest.mark.parametrize(
    ("var", "raw", "message"),
    [
        ("FLEETAL_COUNT", "2.5", r"FLEETAL_COUNT: 'count' must be an integer, got '2\.5'"),
        ("FLEETAL_COUNT", "1e3", r"FLEETAL_COUNT: 'count' must be an integer"),
        ("FLEETAL_COUNT", "true", r"FLEETAL_COUNT: 'count' must be an integer"),
        ("FLEETAL_RATE", "fast", r"FLEETAL_RATE: 'rate' must be a number, got 'fast'"),
        ("FLEETAL_ON", "maybe", r"FLEETAL_ON: 'on' must be true or false, got 'maybe'"),
        ("FLEETAL_MODE", "medium", r"FLEETAL_MODE: 'mode' = 'medium' is not one of"),
        ("FLEETAL_WEIGHTS", "[0.5, x]", r"FLEETAL_WEIGHTS: .*not a valid TOML array"),
        ("FLEETAL_WEIGHTS", "0.5,x", r"FLEETAL_WEIGHTS: 'weights\[1\]' must be a number"),
        ("FLEETAL_ROOT", " ", r"FLEETAL_ROOT: 'root' must be a path, got an empty value"),
    ],
)
def test_a_bad_environment_value_names_the_variable_and_the_key(
    var: str, raw: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(Typed, env={var: raw})


@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999"])
def test_nan_and_infinity_are_refused_naming_the_key(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"FLEETAL_RATE: 'rate' must be a finite number"):
        load_config(Typed, env={"FLEETAL_RATE": raw})
    with pytest.raises(ConfigError, match=r"FLEETAL_LIMIT: 'limit' must be a finite number"):
        load_config(Typed, env={"FLEETAL_LIMIT": raw})
    with pytest.raises(ConfigError, match=r"FLEETAL_WEIGHTS: 'weights\[0\]' must be a finite"):
        load_config(Typed, env={"FLEETAL_WEIGHTS": f"{raw},0.5"})


def test_nan_and_infinity_in_a_file_are_refused_naming_the_key(tmp_path: Path) -> None:
    for literal in ("nan", "+inf", "-inf", "1e999"):
        path = tmp_path / "cfg.toml"
        path.write_text(f"rate = {literal}\n")
        with pytest.raises(ConfigError, match=r"'rate' must be a finite number"):
            load_config(Typed, path=path)
        path.write_text(f"weights = [0.5, {literal}]\n")
        with pytest.raises(ConfigError, match=r"'weights\[1\]' must be a finite number"):
            load_config(Typed, path=path)


def test_a_file_value_of_the_wrong_type_is_refused_without_echoing_a_secret() -> None:
    with pytest.raises(ConfigError, match=r"'name' must be a string, got 42") as info:
        load_config(Typed, {"name": 42})
    assert "quotes" in str(info.value)
    with pytest.raises(ConfigError, match=r"'secret' must be a string") as info:
        load_config(Typed, {"secret": 987654})
    assert "987654" not in str(info.value)


@dataclass(frozen=True)
class Fixed:
    weights: tuple[float, float, float] = (0.25, 0.25, 0.5)


def test_a_fixed_length_list_takes_its_item_types_and_length() -> None:
    cfg = load_config(Fixed, env={"FLEETAL_WEIGHTS": "0.2,0.3,0.5"})
    assert cfg.weights == pytest.approx((0.2, 0.3, 0.5))
    with pytest.raises(ConfigError, match=r"FLEETAL_WEIGHTS: 'weights' must be a list of 3"):
        load_config(Fixed, env={"FLEETAL_WEIGHTS": "0.5,0.5"})
    with pytest.raises(ConfigError, match=r"'weights\[2\]' must be a finite number"):
        load_config(Fixed, {"weights": [0.5, 0.5, float("nan")]})
    with pytest.raises(ConfigError, match=r"'weights\[1\]' must be a number"):
        load_config(Fixed, {"weights": [0.5, "x", 0.5]})


def test_the_tools_own_fleetal_variables_are_not_configuration() -> None:
    from deploy.kafka.broker import CACHE_ENV
    from deploy.postgres.pg_local import BIN_ENV

    env = {CACHE_ENV: "/srv/cache/kafka", BIN_ENV: "/usr/lib/postgresql/16/bin"}
    assert load_config(Typed, env=env) == Typed()


def test_a_single_underscore_typo_is_refused_with_the_variable_meant() -> None:
    meant = r"FLEETAL_KAFKA_TOPIC .*did you mean FLEETAL_KAFKA__TOPIC"
    with pytest.raises(ConfigError, match=meant):
        load_config(Cfg, {"vehicle_id": "v"}, env={"FLEETAL_KAFKA_TOPIC": "x"})
