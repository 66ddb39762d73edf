"""Replace the active model while frames keep being scored: ``ModelSlot``.

The agent scores through the slot (``slot.score(x)``) from its pipeline thread and calls
``slot.swap(path, sha256)`` from a worker thread when a new model is rolled out.
``swap`` is synchronous and does all the slow work (read, checksum, session creation,
smoke inference) before it takes the lock for the one reference assignment; a ``score``
call already running on the old model finishes on the old model, the next one uses the
new model, and no call ever waits on a session being built. On any failure the old model
stays active and ``SwapError`` says why; ``rollback()`` re-activates the previous one.
"""

from __future__ import annotations

import logging
import threading
import time
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

__all__ = ["ModelSlot", "SwapReport"]

_log = logging.getLogger(__name__)

Loader = Callable[[Path, str | None], ScoringModel]


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
        """Score with whichever model is active at the moment of the call."""
        return self.current.score(data)

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
        """Re-activate the previous model (the one the last swap replaced)."""
        with self._swap_lock:
            start = self._clock()
            with self._lock:
                previous = self._previous
                if previous is None:
                    raise SwapError(
                        f"no previous model to roll back to; running {_describe(self._current)}"
                    )
                old = self._current
                self._previous, self._current = old, previous
            self._reference = self._smoke(previous, "rolled-back model")
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
