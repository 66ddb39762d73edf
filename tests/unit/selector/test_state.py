"""Saved selector state: round trip, and every kind of bad input rejected with StateError."""

from __future__ import annotations

import contextlib
import io
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import selector.state as state_mod
from selector.baseline import RandomSelector
from selector.budget import BudgetConfig
from selector.errors import StateError
from selector.state import pack, unpack
from selector.stream import DiversityConfig, SelectorConfig, StreamSelector
from tests.unit.selector.streams import video_stream

CFG = SelectorConfig(
    budget=BudgetConfig(
        target_rate=0.1, window=50, cold_start_frames=20, max_frames_per_minute=30.0
    ),
    diversity=DiversityConfig(capacity=30, dim=16, eviction="reservoir"),
)


def _warm_state() -> bytes:
    sel = StreamSelector(CFG, seed=5)
    for f in video_stream(300, seed=5):
        sel.update(sel.decide(f), f)
    return sel.state_bytes()


STATE = _warm_state()


def test_state_is_an_npz_without_pickle() -> None:
    with np.load(io.BytesIO(STATE), allow_pickle=False) as npz:
        assert "header" in npz.files
        assert all(npz[name].dtype != object for name in npz.files)
    header, _ = unpack(STATE, "stream_selector")
    assert header["format_version"] == state_mod.FORMAT_VERSION


def test_wrong_format_version_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_mod, "FORMAT_VERSION", state_mod.FORMAT_VERSION + 1)
    newer = StreamSelector(CFG, seed=0).state_bytes()
    monkeypatch.undo()
    with pytest.raises(StateError, match="format_version"):
        StreamSelector.from_state(CFG, newer)


def test_wrong_kind_rejected() -> None:
    random_state = RandomSelector(CFG.budget, seed=0).state_bytes()
    with pytest.raises(StateError, match="random_selector"):
        StreamSelector.from_state(CFG, random_state)


@pytest.mark.parametrize("data", [b"", b"not a state", STATE[: len(STATE) // 2], STATE[:-1]])
def test_truncated_or_garbage_rejected(data: bytes) -> None:
    with pytest.raises(StateError):
        StreamSelector.from_state(CFG, data)


def test_non_bytes_rejected() -> None:
    with pytest.raises(StateError, match="bytes"):
        StreamSelector.from_state(CFG, "state")  # type: ignore[arg-type]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(position=st.integers(0, len(STATE) - 1), xor=st.integers(1, 255))
@example(position=3007, xor=87)  # once made numpy's header parser raise tokenize.TokenError
def test_corrupted_byte_is_state_error_or_harmless(position: int, xor: int) -> None:
    data = bytearray(STATE)
    data[position] ^= xor
    with contextlib.suppress(StateError):
        StreamSelector.from_state(CFG, bytes(data))


def _rewrite(
    data: bytes, kind: str, edit_header: object = None, edit_arrays: object = None
) -> bytes:
    header, arrays = unpack(data, kind)
    if callable(edit_header):
        edit_header(header)
    if callable(edit_arrays):
        edit_arrays(arrays)
    for key in ("format_version", "kind"):
        header.pop(key)
    return pack(kind, header, arrays)


@pytest.mark.parametrize(
    ("edit_header", "edit_arrays", "match"),
    [
        (lambda h: h["memory"].__setitem__("n", 999), None, "memory size"),
        (lambda h: h["budget"].__setitem__("seen", "many"), None, "seen"),
        (lambda h: h["budget"].pop("deficit"), None, "deficit"),
        (lambda h: h["budget"].pop("backlog"), None, "backlog"),
        (lambda h: h["budget"].__setitem__("backlog", -1.0), None, "rate controller"),
        (lambda h: h["budget"].__setitem__("backlog", 1e6), None, "rate controller"),
        (lambda h: h["budget"]["frames_bucket"].__setitem__("tokens", 1e9), None, "bucket"),
        (
            lambda h: h["budget"]["draws"]["rng"].__setitem__("bit_generator", "MT19937"),
            None,
            "bit generator",
        ),
        (None, lambda a: a.__setitem__("memory.e", a["memory.e"][:, :3]), "memory.e|array 'e'"),
        (None, lambda a: a.__setitem__("budget.ring", a["budget.ring"] + 5.0), "window"),
        (None, lambda a: a.__setitem__("memory.ss", np.zeros_like(a["memory.ss"])), "permutation"),
        (lambda h: h.pop("budget"), None, "budget"),
    ],
)
def test_inconsistent_state_rejected(edit_header: object, edit_arrays: object, match: str) -> None:
    bad = _rewrite(STATE, "stream_selector", edit_header, edit_arrays)
    with pytest.raises(StateError, match=match):
        StreamSelector.from_state(CFG, bad)


def test_object_arrays_never_loaded() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        obj = io.BytesIO()
        np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        zf.writestr("header.npy", obj.getvalue())
    with pytest.raises(StateError):
        StreamSelector.from_state(CFG, buf.getvalue())
