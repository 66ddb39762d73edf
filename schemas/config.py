"""The configuration-file contract shared by every process: TOML into frozen dataclasses.

One file per process, plus environment overrides, validated once at start (DESIGN decision 6):
an unknown key or a bad value stops the program with a message that names it.

* A configuration is a tree of frozen dataclasses; each nested dataclass is a TOML table.
* ``FLEETAL_<TABLE>__<KEY>=value`` overrides a key (``__`` separates nesting levels, names are
  upper-cased); the value is read as a TOML literal when it is one (``0.05``, ``true``,
  ``["a", "b"]``) and as a plain string otherwise.
* Field types understood: ``bool``, ``int``, ``float`` (ints accepted), ``str``, ``Path``,
  ``Literal[...]``, ``tuple[X, ...]``, ``X | None`` and nested dataclasses.
* A dataclass may validate itself in ``__post_init__`` by raising ``ValueError``; the message is
  re-raised as :class:`ConfigError` with the table's name in front.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Budget:
...     target_rate: float = 0.05
>>> load_config(Budget, {"target_rate": 0.1}).target_rate
0.1
>>> load_config(Budget, {"target_rat": 0.1})
Traceback (most recent call last):
...
schemas.config.ConfigError: unknown key 'target_rat' (valid keys in [top level]: target_rate)
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

ENV_PREFIX = "FLEETAL_"

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or override that cannot be used; the message names the key."""


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file, with errors that name the file."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from exc


def env_overrides(cls: type[Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Turn ``FLEETAL_A__B=v`` variables into a nested mapping ``{"a": {"b": v}}``.

    Variables that match no key of ``cls`` are an error, so a typo cannot go unnoticed.
    """
    known = {var: keys for var, keys, _, _ in describe(cls)}
    out: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        keys = known.get(name)
        if keys is None:
            close = sorted(v for v in known if v.split("__")[0] == name.split("__")[0])
            hint = f"; variables of that table: {', '.join(close)}" if close else ""
            raise ConfigError(f"environment variable {name} matches no configuration key{hint}")
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = _parse_env_value(raw)
    return out


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge two nested mappings; ``override`` wins."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    cls: type[T],
    data: Mapping[str, Any] | None = None,
    *,
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> T:
    """Build ``cls`` from a TOML file and/or a mapping, then environment overrides."""
    merged: dict[str, Any] = read_toml(path) if path is not None else {}
    if data is not None:
        merged = merge(merged, data)
    if env is not None:
        merged = merge(merged, env_overrides(cls, env))
    return _build(cls, merged, "")


def _build(cls: type[T], data: Mapping[str, Any], prefix: str, base: Any = None) -> T:
    """Build ``cls`` from ``data``; keys ``data`` lacks come from ``base`` or the defaults."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"[{prefix.rstrip('.')}] must be a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        table = prefix.rstrip(".") or "top level"
        raise ConfigError(
            f"unknown key '{prefix}{unknown[0]}' (valid keys in [{table}]: "
            f"{', '.join(sorted(fields))})"
        )
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        default = getattr(base, name) if base is not None else _default_of(f)
        if name not in data:
            if default is dataclasses.MISSING:
                raise ConfigError(f"missing required key '{prefix}{name}'")
            if base is not None:
                kwargs[name] = default
            continue
        table_tp = _dataclass_of(hints[name])
        if table_tp is not None and isinstance(data[name], Mapping):
            # a partial table keeps the defaults of the keys it does not name
            sub_base = default if isinstance(default, table_tp) else None
            kwargs[name] = _build(table_tp, data[name], f"{prefix}{name}.", sub_base)
        else:
            kwargs[name] = _coerce(hints[name], data[name], f"{prefix}{name}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        where = prefix.rstrip(".") or "top level"
        raise ConfigError(f"[{where}]: {exc}") from exc


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _dataclass_of(tp: Any) -> type[Any] | None:
    """The dataclass in ``tp`` (``X`` or ``X | None``), if there is one."""
    candidates = get_args(tp) if get_origin(tp) in (types.UnionType, typing.Union) else (tp,)
    for c in candidates:
        if dataclasses.is_dataclass(c) and isinstance(c, type):
            return c
    return None


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _build(tp, value, f"{key}.")
    if origin in (types.UnionType, typing.Union):
        args = [a for a in get_args(tp) if a is not type(None)]
        optional = len(args) < len(get_args(tp))
        if optional and (value is None or (isinstance(value, str) and value.lower() == "none")):
            return None
        errors = []
        for arg in args:
            try:
                return _coerce(arg, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"'{key}': {'; '.join(errors)}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"'{key}' = {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"'{key}' must be a list, got {value!r}")
        item_args = get_args(tp)
        item_tp = item_args[0] if len(item_args) == 2 and item_args[1] is Ellipsis else Any
        return tuple(_coerce(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"'{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{key}' must be a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, str | Path):
            raise ConfigError(f"'{key}' must be a path string, got {value!r}")
        return Path(value)
    raise ConfigError(f"'{key}': unsupported configuration type {tp!r}")


def describe(
    cls: type[Any], prefix: str = "", base: Any = None
) -> list[tuple[str, tuple[str, ...], str, Any]]:
    """Every key of ``cls`` as (environment variable, key path, type, default), for ``--help``.

    Defaults come from ``base`` (an instance) where given, so a nested table's default
    instance (e.g. a default budget with its target rate) is reported as it will be used.
    """
    rows: list[tuple[str, tuple[str, ...], str, Any]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        keys = (*prefix.split(".")[:-1], f.name) if prefix else (f.name,)
        default = getattr(base, f.name) if base is not None else _default_of(f)
        table_tp = _dataclass_of(tp)
        if table_tp is not None and (default is dataclasses.MISSING or default is not None):
            sub_base = default if isinstance(default, table_tp) else None
            rows.extend(describe(table_tp, prefix=f"{prefix}{f.name}.", base=sub_base))
            continue
        if default is dataclasses.MISSING:
            default = "(required)"
        env = ENV_PREFIX + "__".join(k.upper() for k in keys)
        rows.append((env, tuple(keys), _type_name(tp), default))
    return rows


def config_help(cls: type[Any]) -> str:
    """``config-help`` text: every key with its environment variable, type and default."""
    rows = describe(cls)
    width = max(len(env) for env, _, _, _ in rows)
    lines = ["configuration keys (TOML table.key) and their environment overrides:"]
    for env, keys, tp, default in rows:
        lines.append(f"  {env:<{width}}  {'.'.join(keys)} ({tp}) = {default!r}")
    return "\n".join(lines)


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "|".join(map(str, get_args(tp)))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
