"""Selector state to bytes and back, without pickle.

The format is an ``.npz`` archive (``numpy.savez`` into memory, loaded with
``allow_pickle=False``) holding numeric arrays plus one ``header`` member: UTF-8 JSON with the
format version, the kind of object, and its scalar state. Anything that cannot be restored
raises :class:`~selector.errors.StateError`.

>>> data = pack("demo", {"n": 3}, {"x": np.arange(3.0)})
>>> header, arrays = unpack(data, "demo")
>>> header["n"], arrays["x"].tolist()
(3, [0.0, 1.0, 2.0])
>>> unpack(data[:-7], "demo")
Traceback (most recent call last):
...
selector.errors.StateError: corrupt selector state: ...
"""

from __future__ import annotations

import io
import json
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from selector.errors import StateError

FORMAT_VERSION = 2
"""Bumped whenever the layout of saved state changes; older or newer versions are rejected.

2: the budget controller saves its ``backlog`` (selections owed beyond the integral clamp)."""

_HEADER = "header"

# What numpy's npz/npy readers raise on damaged bytes (the .npy header is parsed as a Python
# literal, the archive as a zip): all mapped to StateError.
_LOAD_ERRORS = (
    OSError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    EOFError,
    OverflowError,
    NotImplementedError,
    SyntaxError,
    tokenize.TokenError,
    struct.error,
    zipfile.BadZipFile,
    zlib.error,
)


def pack(kind: str, header: Mapping[str, Any], arrays: Mapping[str, NDArray[Any]]) -> bytes:
    """Serialise a JSON-able ``header`` and named numeric ``arrays`` to bytes."""
    if _HEADER in arrays:
        raise ValueError(f"array name {_HEADER!r} is reserved")
    full = {"format_version": FORMAT_VERSION, "kind": kind, **header}
    text = json.dumps(full, sort_keys=True, allow_nan=True).encode("utf-8")
    buf = io.BytesIO()
    members: dict[str, NDArray[Any]] = {_HEADER: np.frombuffer(text, dtype=np.uint8)}
    for name, arr in arrays.items():
        if arr.dtype == object:
            raise ValueError(f"array {name!r} has dtype object; only numeric arrays are saved")
        members[name] = arr
    np.savez(buf, allow_pickle=False, **members)
    return buf.getvalue()


def unpack(data: bytes, kind: str) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
    """Inverse of :func:`pack`; checks the format version and the kind."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise StateError(f"selector state must be bytes, got {type(data).__name__}")
    try:
        with np.load(io.BytesIO(bytes(data)), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        raw = arrays.pop(_HEADER)
        header = json.loads(raw.tobytes().decode("utf-8"))
    except _LOAD_ERRORS as exc:
        raise StateError(f"corrupt selector state: {type(exc).__name__}: {exc}") from exc
    if not isinstance(header, dict):
        raise StateError("corrupt selector state: header is not a JSON object")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise StateError(
            f"selector state format_version {version!r} is not supported "
            f"(this build reads version {FORMAT_VERSION})"
        )
    if header.get("kind") != kind:
        raise StateError(f"selector state is for {header.get('kind')!r}, expected {kind!r}")
    return header, arrays


def field(header: Mapping[str, Any], name: str, typ: type | tuple[type, ...]) -> Any:
    """``header[name]``, checked to be of type ``typ``; :class:`StateError` otherwise."""
    if name not in header:
        raise StateError(f"corrupt selector state: missing field {name!r}")
    value = header[name]
    if not isinstance(value, typ) or (isinstance(value, bool) and typ in (int, float)):
        raise StateError(f"corrupt selector state: field {name!r} has type {type(value).__name__}")
    return value


def array(
    arrays: Mapping[str, NDArray[Any]], name: str, dtype: type, shape: tuple[int | None, ...]
) -> NDArray[Any]:
    """``arrays[name]`` checked for dtype and shape (``None`` matches any length)."""
    if name not in arrays:
        raise StateError(f"corrupt selector state: missing array {name!r}")
    arr = arrays[name]
    if arr.dtype != np.dtype(dtype) or arr.ndim != len(shape):
        raise StateError(f"corrupt selector state: array {name!r} has dtype/shape {arr.dtype}")
    for got, want in zip(arr.shape, shape, strict=True):
        if want is not None and got != want:
            raise StateError(f"corrupt selector state: array {name!r} has shape {arr.shape}")
    return arr


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """The JSON-able state of a generator's bit generator."""
    return dict(rng.bit_generator.state)


def rng_from_state(state: Any) -> np.random.Generator:
    """A generator restored from :func:`rng_state` output."""
    try:
        name = state["bit_generator"]
        if name != "PCG64":
            raise StateError(f"unsupported bit generator {name!r}")
        bitgen = np.random.PCG64()
        bitgen.state = state
    except (TypeError, KeyError, ValueError) as exc:
        raise StateError(f"corrupt selector state: rng: {exc}") from exc
    return np.random.Generator(bitgen)


class UniformStream:
    """One uniform draw in [0, 1) per frame, readable without consuming it.

    ``peek()`` is pure (what ``decide`` uses); ``advance()`` moves to the next draw (what
    ``update`` calls). Draws come from a seeded :class:`numpy.random.Generator` in blocks.

    >>> a, b = UniformStream(7), UniformStream(7)
    >>> a.peek() == a.peek() == b.peek()
    True
    >>> first = a.peek(); a.advance(); a.peek() != first
    True
    """

    __slots__ = ("_block", "_buf", "_idx", "_rng")

    def __init__(self, seed: int, block: int = 1024) -> None:
        self._rng = np.random.default_rng(seed)
        self._block = block
        self._buf: list[float] = self._rng.random(block).tolist()
        self._idx = 0

    def peek(self) -> float:
        """The current draw."""
        return self._buf[self._idx]

    def advance(self) -> None:
        """Consume the current draw."""
        self._idx += 1
        if self._idx == self._block:
            self._buf = self._rng.random(self._block).tolist()
            self._idx = 0

    def get_state(self) -> tuple[dict[str, Any], NDArray[np.float64]]:
        """JSON-able scalars and the current block of draws."""
        return (
            {"rng": rng_state(self._rng), "idx": self._idx, "block": self._block},
            np.asarray(self._buf, dtype=np.float64),
        )

    @classmethod
    def from_state(cls, header: Mapping[str, Any], buf: NDArray[np.float64]) -> UniformStream:
        """Inverse of :meth:`get_state`."""
        block = field(header, "block", int)
        idx = field(header, "idx", int)
        if block < 1 or not 0 <= idx < block or buf.shape != (block,):
            raise StateError("corrupt selector state: uniform stream block/index out of range")
        obj = cls.__new__(cls)
        obj._rng = rng_from_state(header.get("rng"))
        obj._block = block
        obj._buf = buf.tolist()
        obj._idx = idx
        return obj
