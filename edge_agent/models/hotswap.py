"""Replace the active model while frames keep being scored: ``ModelSlot``.

The agent scores through the slot (``slot.score(x)``) from its pipeline thread and calls
``slot.swap(path, sha256)`` from a worker thread when a new model is rolled out.
``swap`` is synchronous and does all the slow work (read, checksum, session creation,
smoke inference) before it takes the lock for the one reference assignment; a ``score``
call already running on the old model finishes on the old model, the next one uses the
new model, and no call ever waits on a session being built. On any failure the old model
stays active and ``SwapError`` says why; ``rollback()`` smoke-tests the previous model and
only then re-activates it.

**Watching a swap.** ``watch(window, max_error_rate, on_rollback)`` arms an automatic
rollback: after every swap, the first ``window`` calls of ``score`` on the new model are
watched, and as soon as more than ``window * (baseline + max_error_rate)`` of them raised a
``ModelError`` (``baseline``: the error rate of the previous model over its last ``window``
calls), the slot rolls back to the previous model (smoke-tested first) in the calling
thread and calls ``on_rollback(report, reason)``. A swap that survives its window is kept.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from numpy.typing import NDArray

from edge_agent.models.errors import ModelError, SwapError
from edge_agent.models.runner import (
    CameraModel,
    LidarModel,
    ModelOutput,
    RunnerConfig,
    ScoringModel,
    load_model,
)

__all__ = ["ModelSlot", "SwapReport", "SwapWatch"]

_log = logging.getLogger(__name__)

Loader = Callable[[Path, str | None], ScoringModel]
RollbackHook = Callable[["SwapReport", str], None]


class SwapWatch:
    """Error counting for one slot: a rolling window of the active model's outcomes, and the
    watch over a freshly swapped-in model (see the module docstring). Not thread-safe on its
    own: :class:`ModelSlot` holds a lock around it."""

    def __init__(self, window: int, max_error_rate: float) -> None:
        if window < 1:
            raise ValueError(f"rollback window must be >= 1 call, got {window}")
        if not 0.0 <= max_error_rate < 1.0:
            raise ValueError(f"rollback error rate must be in [0, 1), got {max_error_rate}")
        self.window = window
        self.max_error_rate = max_error_rate
        self._recent: deque[bool] = deque(maxlen=window)  # True: that call failed
        self._baseline = 0.0
        self._watching: object | None = None  # the model under watch, by identity
        self._calls = 0
        self._errors = 0

    def swapped(self, model: object) -> None:
        """A new model became active: its first ``window`` calls are watched."""
        self._baseline = sum(self._recent) / len(self._recent) if self._recent else 0.0
        self._recent.clear()
        self._watching = model
        self._calls = self._errors = 0

    def unwatched(self) -> None:
        """After a rollback: the restored model is not watched, its history starts afresh."""
        self._recent.clear()
        self._watching = None

    def record(self, model: object, failed: bool) -> str | None:
        """Count one call on ``model``; a reason string when the watched model must go."""
        self._recent.append(failed)
        if model is not self._watching:
            return None
        self._calls += 1
        self._errors += failed
        allowed = self.window * min(1.0, self._baseline + self.max_error_rate)
        if self._errors > allowed:
            self._watching = None
            return (
                f"{self._errors} of its first {self._calls} calls failed (allowed: "
                f"{self.max_error_rate:.0%} over the previous model's {self._baseline:.0%} in a "
                f"window of {self.window})"
            )
        if self._calls >= self.window:
            self._watching = None  # survived its window
        return None


@dataclass(frozen=True, slots=True)
class SwapReport:
    """A completed swap or rollback: which version left, which one is active, how long it took."""

    previous_version: str
    active_version: str
    active_sha256: str
    provider: str
    seconds: float


class ModelSlot:
    """Holds the active model; ``score`` through it, ``swap`` / ``rollback`` to change it.

    ``sample`` is a real frame input (an image or a sweep) the smoke test scores with
    each candidate model; without it, the candidate's own synthetic sample input is used
    (a grey image, a ring of points). ``allow_shape_change`` lets a candidate change its
    output shapes (another class list or embedding size); off by default because the
    diversity memory holds embeddings of the current size.
    """

    def __init__(
        self,
        model: ScoringModel,
        *,
        sample: NDArray[Any] | None = None,
        config: RunnerConfig | None = None,
        loader: Loader | None = None,
        allow_shape_change: bool = False,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._config = config
        self._loader: Loader = loader or self._default_loader
        self._sample = sample
        self._allow_shape_change = allow_shape_change
        self._clock = clock
        self._lock = threading.Lock()  # guards the two references below
        self._swap_lock = threading.Lock()  # one swap or rollback at a time
        self._current: ScoringModel = model
        self._previous: ScoringModel | None = None
        self._reference = self._smoke(model, "active model")
        self._watch: SwapWatch | None = None
        self._watch_lock = threading.Lock()
        self._on_rollback: RollbackHook | None = None

    def watch(self, window: int, max_error_rate: float, on_rollback: RollbackHook | None) -> None:
        """Arm the automatic rollback after swaps (module docstring); replaces an earlier one."""
        with self._watch_lock:
            self._watch = SwapWatch(window, max_error_rate)
            self._on_rollback = on_rollback

    def _default_loader(self, path: Path, sha256: str | None) -> ScoringModel:
        return load_model(path, sha256=sha256, config=self._config)

    @property
    def current(self) -> ScoringModel:
        with self._lock:
            return self._current

    @property
    def previous(self) -> ScoringModel | None:
        with self._lock:
            return self._previous

    @property
    def output_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(probs shape, embedding shape) of the active model, from its smoke inference."""
        with self._lock:
            return self._reference

    def score(self, data: NDArray[Any]) -> ModelOutput:
        """Score with whichever model is active at the moment of the call.

        With a watch armed, a call that trips it rolls back before its ``ModelError`` is
        re-raised: the next call scores on the previous model.
        """
        model = self.current
        if self._watch is None:
            return model.score(data)
        try:
            out = model.score(data)
        except ModelError:
            self._record(model, failed=True)
            raise
        self._record(model, failed=False)
        return out

    def _record(self, model: ScoringModel, *, failed: bool) -> None:
        with self._watch_lock:
            watch = self._watch
            reason = None if watch is None else watch.record(model, failed)
            hook = self._on_rollback
        if reason is None:
            return
        if not self._swap_lock.acquire(blocking=False):
            _log.warning(
                "model %s: %s, but a swap is under way: not rolled back", _describe(model), reason
            )
            return
        try:
            if self.current is not model:
                return  # someone swapped meanwhile
            try:
                report = self._rollback_locked()
            except SwapError as exc:
                _log.error(
                    "model %s: %s; automatic rollback failed: %s", _describe(model), reason, exc
                )
                return
        finally:
            self._swap_lock.release()
        _log.error("model %s rolled back automatically: %s", report.previous_version, reason)
        if hook is not None:
            hook(report, reason)

    def _smoke(self, model: ScoringModel, what: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        sample: NDArray[Any] = self._sample if self._sample is not None else model.sample_input()
        try:
            out = model.score(sample)
        except ModelError as exc:
            raise SwapError(f"{what} {model.runner.path}: smoke inference failed: {exc}") from exc
        return tuple(out.probs.shape), tuple(out.embedding.shape)

    def swap(self, new_path: Path, expected_sha256: str | None) -> SwapReport:
        """Load, verify and smoke-test ``new_path``, then make it the active model.

        Raises ``SwapError`` (the old model stays active) when the file fails to load or
        its checksum, its kind differs, the smoke inference fails or gives non-finite
        values, or its output shapes differ from the active model's.
        """
        with self._swap_lock:
            start = self._clock()
            old = self.current
            try:
                candidate = self._loader(Path(new_path), expected_sha256)
            except ModelError as exc:
                raise SwapError(
                    f"refused {new_path}: {exc}; still running {_describe(old)}"
                ) from exc
            if type(candidate) is not type(old):
                raise SwapError(
                    f"refused {new_path}: it is a {candidate.metadata.kind} model, the slot holds "
                    f"a {old.metadata.kind} model; still running {_describe(old)}"
                )
            shapes = self._smoke(candidate, "candidate")
            if shapes != self._reference and not self._allow_shape_change:
                raise SwapError(
                    f"refused {new_path}: output shapes (probs, embedding) {shapes} differ from "
                    f"the active model's {self._reference}; still running {_describe(old)}"
                )
            with self._lock:
                self._previous, self._current = self._current, candidate
                self._reference = shapes
            with self._watch_lock:
                if self._watch is not None:
                    self._watch.swapped(candidate)
            report = self._report(old, candidate, start)
            _log.info(
                "hot swap: %s -> %s (%s) in %.2f s",
                report.previous_version,
                report.active_version,
                report.provider,
                report.seconds,
            )
            return report

    def rollback(self) -> SwapReport:
        """Re-activate the previous model (the one the last swap replaced).

        The previous model is smoke-tested (and its output shapes checked) first; if that
        fails, ``SwapError`` is raised and the active model stays.
        """
        with self._swap_lock:
            return self._rollback_locked()

    def _rollback_locked(self) -> SwapReport:
        start = self._clock()
        with self._lock:
            previous, old = self._previous, self._current
        if previous is None:
            raise SwapError(f"no previous model to roll back to; running {_describe(old)}")
        try:
            shapes = self._smoke(previous, "rolled-back model")
        except SwapError as exc:
            raise SwapError(f"rollback refused: {exc}; still running {_describe(old)}") from exc
        if shapes != self._reference and not self._allow_shape_change:
            raise SwapError(
                f"rollback refused: {_describe(previous)} gives output shapes {shapes}, the "
                f"active model {self._reference}; still running {_describe(old)}"
            )
        with self._lock:
            self._previous, self._current = old, previous
            self._reference = shapes
        with self._watch_lock:
            if self._watch is not None:
                self._watch.unwatched()
        report = self._report(old, previous, start)
        _log.warning("model rollback: %s -> %s", report.previous_version, report.active_version)
        return report

    def _report(self, old: ScoringModel, new: ScoringModel, start: float) -> SwapReport:
        return SwapReport(
            previous_version=old.metadata.version,
            active_version=new.metadata.version,
            active_sha256=new.runner.sha256,
            provider=new.runner.provider,
            seconds=self._clock() - start,
        )


def _describe(model: CameraModel | LidarModel) -> str:
    return f"{model.metadata.name} {model.metadata.version} ({model.runner.path})"
