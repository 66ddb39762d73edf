"""The configuration-file contract shared by every process: TOML into frozen dataclasses.

One file per process, plus environment overrides, validated once at start (DESIGN decision 6):
an unknown key or a bad value stops the program with a message that names it.

* A configuration is a tree of frozen dataclasses; each nested dataclass is a TOML table.
* ``FLEETAL_<TABLE>__<KEY>=value`` overrides a key (``__`` separates nesting levels, names are
  upper-cased). The value is read by the type of the key it sets, never guessed: a ``str``,
  ``Path`` or ``Literal`` key takes it exactly as written (``123456`` stays the string
  ``"123456"``); ``int`` (``1_000``), ``float`` and ``bool`` (``true/false``, ``1/0``,
  ``yes/no``, ``on/off``) are parsed strictly; a list is a TOML array (``["a", "b"]``) or
  comma-separated (``a,b``; empty: no items); an empty value, or ``none`` for a key that is not
  a string, unsets an optional key. A value that does not fit names the variable and the key;
  a ``FLEETAL_`` variable that is no key is an error too (a typo), except the tools' own
  (:data:`NOT_CONFIGURATION`).
* Field types understood: ``bool``, ``int``, ``float`` (ints accepted; NaN and infinity
  refused, in files too), ``str``, ``Path``, ``Literal[...]``, ``tuple[X, ...]``, ``X | None``
  and nested dataclasses.
* A value of a ``repr=False`` field (a secret) is never echoed in an error.
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
import math
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar, get_args, get_origin

ENV_PREFIX = "FLEETAL_"

NOT_CONFIGURATION = frozenset({"FLEETAL_KAFKA_CACHE", "FLEETAL_PG_BIN", "FLEETAL_RETRAIN_JOB_DIR"})
"""``FLEETAL_`` variables of the tools (the test broker's jar cache, deploy/kafka/broker.py; the
PostgreSQL binaries, deploy/postgres/pg_local.py; the job directory the retrain worker gives its
trainer, ingest_service/retrain/worker.py): not configuration keys, ignored here."""

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

    Each value is parsed by the type of the key it sets (see the module docstring). Variables
    that match no key of ``cls`` are an error, so a typo cannot go unnoticed; only the tools'
    own variables (:data:`NOT_CONFIGURATION`) are passed over.
    """
    known = {leaf.env: leaf for leaf in _leaves(cls)}
    out: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name in NOT_CONFIGURATION:
            continue
        leaf = known.get(name)
        if leaf is None:
            meant = sorted(v for v in known if v.replace("__", "_") == name.replace("__", "_"))
            close = sorted(v for v in known if v.split("__")[0] == name.split("__")[0])
            if meant:
                hint = f"; did you mean {' or '.join(meant)}? (tables and keys are joined by __)"
            else:
                hint = f"; variables of that table: {', '.join(close)}" if close else ""
            raise ConfigError(f"environment variable {name} matches no configuration key{hint}")
        key = ".".join(leaf.keys)
        try:
            value = _from_env(leaf.tp, raw, key, leaf.secret)
            _coerce(leaf.tp, value, key, leaf.secret)  # type and finiteness, named here
        except ConfigError as exc:
            raise ConfigError(f"environment variable {name}: {exc}") from exc
        node = out
        for k in leaf.keys[:-1]:
            node = node.setdefault(k, {})
        node[leaf.keys[-1]] = value
    return out


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_INT_RE = re.compile(r"[+-]?[0-9]+(?:_[0-9]+)*")


def _from_env(tp: Any, raw: str, key: str, secret: bool = False) -> Any:
    """The value an environment variable gives a key of type ``tp``, read by that type."""
    shown = _show(raw, secret)
    if get_origin(tp) in (types.UnionType, typing.Union):
        args = [a for a in get_args(tp) if a is not type(None)]
        optional = len(args) < len(get_args(tp))
        if optional and (raw == "" or (raw.strip().lower() == "none" and str not in args)):
            return None
        if len(args) == 1:
            return _from_env(args[0], raw, key, secret)
        return _toml_or_string(raw)
    if tp is Path and not raw.strip():
        raise ConfigError(f"'{key}' must be a path, got an empty value")
    if tp is str or tp is Path:
        return raw
    if get_origin(tp) is Literal:
        choices = get_args(tp)
        return next((c for c in choices if str(c) == raw), raw)
    if tp is bool:
        word = raw.strip().lower()
        if word not in _TRUE | _FALSE:
            raise ConfigError(f"'{key}' must be true or false, got {shown}")
        return word in _TRUE
    if tp is int:
        if not _INT_RE.fullmatch(raw.strip()):
            raise ConfigError(f"'{key}' must be an integer, got {shown}")
        return int(raw.strip().replace("_", ""))
    if tp is float:
        try:
            return float(raw.strip())
        except ValueError:
            raise ConfigError(f"'{key}' must be a number, got {shown}") from None
    if get_origin(tp) is tuple:
        text = raw.strip()
        if text.startswith("["):
            return _toml_value(text, key, "a valid TOML array", secret)
        items = [item.strip() for item in text.split(",")] if text else []
        item_tps = _item_types(tp, len(items), key)
        return [
            _from_env(t, item, f"{key}[{i}]", secret)
            for i, (t, item) in enumerate(zip(item_tps, items, strict=True))
        ]
    if _dataclass_of(tp) is not None:
        return _toml_value(raw, key, "a TOML inline table ({key = value, ...})", secret)
    return _toml_or_string(raw)


def _toml_value(raw: str, key: str, what: str, secret: bool) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError as exc:
        detail = "" if secret else f": {exc}"
        raise ConfigError(f"'{key}': {_show(raw, secret)} is not {what}{detail}") from None


def _toml_or_string(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _show(value: Any, secret: bool) -> str:
    """``value`` for an error message: its repr, or a placeholder for a secret."""
    if secret:
        return f"a value of type {type(value).__name__} (not shown: a secret)"
    return repr(value)


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
            kwargs[name] = _coerce(hints[name], data[name], f"{prefix}{name}", not f.repr)
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


def _coerce(tp: Any, value: Any, key: str, secret: bool = False) -> Any:
    origin = get_origin(tp)
    shown = _show(value, secret)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _build(tp, value, f"{key}.")
    if origin in (types.UnionType, typing.Union):
        args = [a for a in get_args(tp) if a is not type(None)]
        optional = len(args) < len(get_args(tp))
        if optional and value is None:
            return None
        if optional and str not in args and isinstance(value, str) and value.lower() == "none":
            return None
        errors = []
        for arg in args:
            try:
                return _coerce(arg, value, key, secret)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"'{key}': {'; '.join(errors)}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"'{key}' = {shown} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"'{key}' must be a list, got {shown}")
        item_tps = _item_types(tp, len(value), key)
        return tuple(
            _coerce(t, v, f"{key}[{i}]", secret)
            for i, (t, v) in enumerate(zip(item_tps, value, strict=True))
        )
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{key}' must be true or false, got {shown}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{key}' must be an integer, got {shown}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"'{key}' must be a number, got {shown}")
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"'{key}' must be a finite number, got {shown}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{key}' must be a string, got {shown}{_QUOTE_HINT}")
        return value
    if tp is Path:
        if not isinstance(value, str | Path):
            raise ConfigError(f"'{key}' must be a path string, got {shown}{_QUOTE_HINT}")
        return Path(value)
    raise ConfigError(f"'{key}': unsupported configuration type {tp!r}")


def _item_types(tp: Any, n: int, key: str) -> list[Any]:
    """The types of the ``n`` items of a ``tuple[X, ...]`` or ``tuple[X, Y, Z]`` value."""
    args = get_args(tp)
    if not args:
        return [Any] * n
    if len(args) == 2 and args[1] is Ellipsis:
        return [args[0]] * n
    if n != len(args):
        raise ConfigError(f"'{key}' must be a list of {len(args)} items, got {n}")
    return list(args)


_QUOTE_HINT = " (in TOML, write it in quotes)"


class _Leaf(NamedTuple):
    """One settable key: its variable, key path, type hint, default and whether it is secret."""

    env: str
    keys: tuple[str, ...]
    tp: Any
    default: Any
    secret: bool
    owner: type[Any]  # the table (dataclass) that declares the key


def _leaves(cls: type[Any], prefix: tuple[str, ...] = (), base: Any = None) -> list[_Leaf]:
    """Every key of ``cls`` that a value sets (tables recursed into), defaults from ``base``."""
    rows: list[_Leaf] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        keys = (*prefix, f.name)
        default = getattr(base, f.name) if base is not None else _default_of(f)
        table_tp = _dataclass_of(tp)
        if table_tp is not None and (default is dataclasses.MISSING or default is not None):
            sub_base = default if isinstance(default, table_tp) else None
            rows.extend(_leaves(table_tp, keys, sub_base))
            continue
        env = ENV_PREFIX + "__".join(k.upper() for k in keys)
        rows.append(_Leaf(env, keys, tp, default, not f.repr, cls))
    return rows


def describe(cls: type[Any]) -> list[tuple[str, tuple[str, ...], str, Any]]:
    """Every key of ``cls`` as (environment variable, key path, type, default), for ``--help``.

    A nested table's default instance (e.g. a default budget with its target rate) gives the
    defaults of its keys, as they will be used; a required key's default is ``"(required)"``.
    """
    return [
        (
            leaf.env,
            leaf.keys,
            _type_name(leaf.tp),
            "(required)" if leaf.default is dataclasses.MISSING else leaf.default,
        )
        for leaf in _leaves(cls)
    ]


def config_help(cls: type[Any]) -> str:
    """``config-help`` text: every key with its environment variable, type and default."""
    rows = describe(cls)
    width = max(len(env) for env, _, _, _ in rows)
    lines = ["configuration keys (TOML table.key) and their environment overrides:"]
    for env, keys, tp, default in rows:
        lines.append(f"  {env:<{width}}  {'.'.join(keys)} ({tp}) = {_default_text(default)}")
    lines += [
        "",
        "environment values are read by the key's type: str, Path and choices as written",
        "(FLEETAL_..._PASSWORD=123456 is the string '123456'); int, float (finite) and bool",
        "(true/false, 1/0, yes/no, on/off) strictly; a list as a TOML array or a,b,c; an empty",
        "value (or none, for a key that is not a string) unsets a key whose default is none.",
    ]
    return "\n".join(lines)


def _default_text(default: Any) -> str:
    if isinstance(default, Path):
        return repr(str(default))
    if isinstance(default, tuple):
        return repr(list(default))
    return repr(default)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "|".join(map(str, get_args(tp)))
    if origin in (types.UnionType, typing.Union):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        if args and len(set(args)) == 1:
            return f"list of {len(args)} {_type_name(args[0])}"
        return f"list of {', '.join(map(_type_name, args))}" if args else "list"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
