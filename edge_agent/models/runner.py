"""``ModelRunner``: one onnxruntime session for one model file, and its typed wrappers.

::

    runner = ModelRunner(Path("models/camera.onnx"), sha256=expected)
    camera = CameraModel(runner)
    try:
        out = camera.score(frame.cameras["CAM_FRONT"].image)   # ModelOutput
    except ModelError:
        ...  # count it and carry on with the next frame

Every failure is a ``ModelError`` (``edge_agent.models.errors``): a file that cannot be
loaded raises ``ModelLoadError`` from the constructor (the agent then does not start, or
a hot swap is refused); a frame that cannot be scored raises ``ModelInputError``,
``ModelRunError`` or ``ModelOutputError`` (non-finite values) from ``run`` / ``score``.
Callers catch ``ModelError`` around each frame, count it, and keep going.

``run`` and ``score`` are thread-safe (an onnxruntime session may be run from several
threads at once); the runner holds no per-call state.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from edge_agent.models.errors import (
    ChecksumMismatchError,
    ModelConfigError,
    ModelInputError,
    ModelLoadError,
    ModelOutputError,
    ModelRunError,
)
from edge_agent.models.metadata import (
    LIDAR_FIELDS,
    ModelMetadata,
    merged_mapping,
    metadata_from_mapping,
)
from edge_agent.models.preprocess import DEFAULT_POINT_SEED, prepare_image, prepare_points
from edge_agent.models.providers import (
    CUDA,
    DEFAULT_PREFERENCE,
    GPU_PROVIDERS,
    TENSORRT,
    ProviderPlan,
    choose_providers,
    is_auto,
    normalise_provider,
    report_providers,
    uses_io_binding,
)

__all__ = [
    "CameraModel",
    "LidarModel",
    "ModelOutput",
    "ModelRunner",
    "RunnerConfig",
    "ScoringModel",
    "load_model",
    "sha256_file",
    "softmax",
]

_log = logging.getLogger(__name__)
_PROVIDERS_LOGGER = "edge_agent.models.providers"  # where report_providers writes

_TRAIN_HINT = (
    "check the path, or build the reference models with "
    "`python -m ingest_service.training.reference.train --out models/`"
)
# A model that claims to output probabilities must sum to 1 within this.
_PROBS_SUM_TOLERANCE = 1e-3


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    """How a session is built. Few threads by default: the autonomy stack comes first."""

    providers: tuple[str, ...] = DEFAULT_PREFERENCE
    intra_op_threads: int = 1
    """onnxruntime's threads per inference (few: the autonomy stack comes first)."""
    # A spinning onnxruntime worker burns a core between runs; on the vehicle it must not.
    allow_spinning: bool = False
    device_id: int = 0
    """The GPU the CUDA and TensorRT providers use."""

    def __post_init__(self) -> None:
        if not self.providers:
            raise ModelConfigError("providers is empty; give at least ('cpu',)")
        for name in self.providers:
            normalise_provider(name)  # an unknown name fails here, at config load
        if self.intra_op_threads < 1:
            raise ModelConfigError(f"intra_op_threads must be >= 1, got {self.intra_op_threads}")
        if self.device_id < 0:
            raise ModelConfigError(f"device_id must be >= 0, got {self.device_id}")


@dataclass(frozen=True, slots=True, eq=False)
class ModelOutput:
    """What one frame scored to.

    ``probs`` are probabilities (softmax already applied when the model emits logits):
    ``(n, K)``, or ``(T, n, K)`` when the model has a committee axis (``T`` ensemble
    members or stochastic passes); ``n`` is 1 for a per-frame classifier, the number of
    patches or points for a dense model. ``embedding`` is ``(d,)`` float32. ``seconds`` is
    the wall time of the call (preprocessing included for ``score``). ``index``: for a
    LiDAR model, the sweep rows the ``n`` points were taken from.
    """

    probs: NDArray[np.float32]
    embedding: NDArray[np.float32]
    seconds: float
    model_name: str
    model_version: str
    index: NDArray[np.int64] | None = None


def softmax(logits: NDArray[np.float32], axis: int = -1) -> NDArray[np.float32]:
    """Numerically stable softmax in float32."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exp: NDArray[np.float32] = np.exp(shifted, dtype=np.float32)
    result: NDArray[np.float32] = exp / exp.sum(axis=axis, keepdims=True)
    return result


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_failures(plan: ProviderPlan, effective: Sequence[str]) -> dict[str, str]:
    """Why each GPU provider that was tried did not load, for the DEBUG log: the dynamic
    loader's own message for its library (e.g. ``libcublasLt.so.13: cannot open shared
    object file``). Only asked when DEBUG is on; never used to decide anything."""
    lost = [p for p in plan.chosen if p in GPU_PROVIDERS and p not in effective]
    if not lost or not logging.getLogger(_PROVIDERS_LOGGER).isEnabledFor(logging.DEBUG):
        return {}
    capi = Path(ort.__file__).parent / "capi"
    libs = {
        TENSORRT: "libonnxruntime_providers_tensorrt.so",
        CUDA: "libonnxruntime_providers_cuda.so",
    }
    out: dict[str, str] = {}
    for name in lost:
        lib = capi / libs.get(name, "")
        if name not in libs or not lib.is_file():
            continue
        try:
            ctypes.CDLL(str(lib))
        except OSError as exc:
            out[name] = str(exc)
    return out


def _squeeze_leading(array: NDArray[Any], rank: int) -> NDArray[Any]:
    while array.ndim > rank and array.shape[0] == 1:
        array = array[0]
    return array


class ModelRunner:
    """Loads one ONNX model and runs it one frame at a time."""

    def __init__(
        self,
        path: Path,
        *,
        sha256: str | None = None,
        config: RunnerConfig | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._path = Path(path)
        self._config = config or RunnerConfig()
        self._clock = clock
        model_bytes = self._read(sha256)
        self._sha256 = hashlib.sha256(model_bytes).hexdigest()
        self._plan: ProviderPlan = choose_providers(
            ort.get_available_providers(), self._config.providers
        )
        self._session = self._create_session(model_bytes)
        self._effective: tuple[str, ...] = tuple(self._session.get_providers())
        props = self._session.get_modelmeta().custom_metadata_map
        mapping, source = merged_mapping(dict(props), self._path)
        self._meta = metadata_from_mapping(mapping, source)
        self._check_signature()
        self._outputs = [self._meta.probs_output, self._meta.embedding_output]
        self._provider = report_providers(
            f"{self._meta.name} {self._meta.version}",
            self._plan,
            self._effective,
            _load_failures(self._plan, self._effective),
        )
        self._io_binding = uses_io_binding(self._provider)

    # -- loading -----------------------------------------------------------------------------
    def _read(self, expected: str | None) -> bytes:
        path = self._path
        if not path.is_file():
            raise ModelLoadError(str(path), f"no such model file; {_TRAIN_HINT}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelLoadError(str(path), f"cannot read the model file ({exc})") from exc
        if expected is not None:
            actual = hashlib.sha256(data).hexdigest()
            if actual != expected.strip().lower():
                raise ChecksumMismatchError(
                    str(path),
                    f"sha256 {actual} differs from the expected {expected.strip().lower()}; "
                    "the file is truncated, corrupt or not the announced version: "
                    "download it again, or correct the expected checksum",
                )
        return data

    def _create_session(self, model_bytes: bytes) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._config.intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only; our own log says which provider runs
        spinning = "1" if self._config.allow_spinning else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
        providers: list[str | tuple[str, dict[str, str]]] = []
        for name in self._plan.chosen:
            if name in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
                providers.append((name, {"device_id": str(self._config.device_id)}))
            else:
                providers.append(name)
        # onnxruntime's Python wrapper print()s an "EP Error ... Falling back" block to stdout
        # when a GPU provider fails to load; keep it out of the daemon's stdout and in the log
        # (the provider actually in effect is checked and reported after this). The redirect is
        # process-wide for that instant; the agent writes nothing else to stdout meanwhile.
        # Under ``auto`` a GPU provider that fails to load is expected on a CPU-only machine:
        # onnxruntime's own logger (the process-wide default one, not the session's) prints
        # ~6 red lines per session for it, at ERROR. Silence it for the attempt; what was
        # lost is reported by ``report_providers``, once at INFO, the detail at DEBUG.
        quiet = is_auto(self._plan.requested) and any(p in GPU_PROVIDERS for p in self._plan.chosen)
        printed = io.StringIO()
        try:
            if quiet:
                ort.set_default_logger_severity(4)  # fatal only
            with contextlib.redirect_stdout(printed):
                return ort.InferenceSession(model_bytes, sess_options=options, providers=providers)
        except (
            Exception
        ) as exc:  # onnxruntime raises its own pybind classes (InvalidProtobuf, Fail...)
            raise ModelLoadError(
                str(self._path),
                f"onnxruntime cannot load it ({type(exc).__name__}: {exc}); the file is "
                "corrupt or not an ONNX model this onnxruntime supports: "
                "re-export or re-download it",
            ) from exc
        finally:
            if quiet:
                ort.set_default_logger_severity(2)  # onnxruntime's default, warnings
            if printed.getvalue().strip():
                _log.debug("onnxruntime at session creation: %s", printed.getvalue().strip())

    def _check_signature(self) -> None:
        meta = self._meta
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        if meta.input_name not in inputs:
            raise ModelLoadError(
                str(self._path),
                f"metadata input_name {meta.input_name!r} is not a graph input {sorted(inputs)}; "
                "fix the metadata",
            )
        if len(inputs) != 1:
            raise ModelLoadError(
                str(self._path), f"expected one graph input, the graph has {sorted(inputs)}"
            )
        graph_shape = list(inputs[meta.input_name].shape)  # ints, or names for dynamic axes
        if len(graph_shape) != len(meta.input_shape) or any(
            isinstance(g, int) and g != m
            for g, m in zip(graph_shape, meta.input_shape, strict=True)
        ):
            raise ModelLoadError(
                str(self._path),
                f"metadata input_shape {list(meta.input_shape)} does not match the graph's "
                f"{graph_shape}; fix the metadata",
            )
        for key, name in (
            ("probs_output", meta.probs_output),
            ("embedding_output", meta.embedding_output),
        ):
            if name not in outputs:
                raise ModelLoadError(
                    str(self._path),
                    f"metadata {key} {name!r} is not a graph output {sorted(outputs)}; "
                    "fix the metadata",
                )

    # -- properties --------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._path

    @property
    def metadata(self) -> ModelMetadata:
        return self._meta

    @property
    def sha256(self) -> str:
        """sha256 of the bytes the session was built from."""
        return self._sha256

    @property
    def provider(self) -> str:
        """The execution provider actually in effect (first of ``session.get_providers()``)."""
        return self._provider

    @property
    def providers(self) -> tuple[str, ...]:
        return self._effective

    @property
    def provider_plan(self) -> ProviderPlan:
        return self._plan

    @property
    def io_binding(self) -> bool:
        """Whether ``run`` binds inputs on the GPU (only for a CUDA / TensorRT session)."""
        return self._io_binding

    @property
    def intra_op_threads(self) -> int:
        return self._config.intra_op_threads

    # -- running -----------------------------------------------------------------------------
    def zero_batch(self) -> dict[str, NDArray[np.float32]]:
        """An all-zero input of the model's shape (a smoke test that needs no frame)."""
        return {self._meta.input_name: np.zeros(self._meta.input_shape, dtype=np.float32)}

    def run(self, batch: Mapping[str, NDArray[Any]]) -> ModelOutput:
        """Run one prepared input; returns probabilities, the embedding and the wall time."""
        start = self._clock()
        feeds = self._check_batch(batch)
        try:
            if self._io_binding:
                raw = self._run_bound(feeds)
            else:
                raw = self._session.run(self._outputs, feeds)
        except Exception as exc:  # onnxruntime's pybind exception classes
            raise ModelRunError(
                f"model {self._meta.name} {self._meta.version} ({self._path}) failed to run: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        probs, embedding = self._check_outputs(raw[0], raw[1])
        return ModelOutput(
            probs=probs,
            embedding=embedding,
            seconds=self._clock() - start,
            model_name=self._meta.name,
            model_version=self._meta.version,
        )

    def _check_batch(self, batch: Mapping[str, NDArray[Any]]) -> dict[str, NDArray[np.float32]]:
        meta = self._meta
        if set(batch) != {meta.input_name}:
            raise ModelInputError(
                f"model {meta.name} takes one input {meta.input_name!r}, got {sorted(batch)}"
            )
        array = batch[meta.input_name]
        if tuple(array.shape) != meta.input_shape:
            raise ModelInputError(
                f"model {meta.name}: input {meta.input_name!r} must be {list(meta.input_shape)}, "
                f"got {list(array.shape)}"
            )
        if array.dtype != np.float32:
            raise ModelInputError(f"model {meta.name}: input must be float32, got {array.dtype}")
        return {meta.input_name: np.ascontiguousarray(array)}

    def _run_bound(self, feeds: Mapping[str, NDArray[np.float32]]) -> list[NDArray[Any]]:
        """GPU path: one host-to-device copy per input, outputs bound to host memory."""
        binding = self._session.io_binding()
        device_values = []  # keep the device buffers alive until the run has finished
        for name, array in feeds.items():
            value = ort.OrtValue.ortvalue_from_numpy(array, "cuda", self._config.device_id)
            device_values.append(value)
            binding.bind_ortvalue_input(name, value)
        for name in self._outputs:
            binding.bind_output(name, "cpu")
        self._session.run_with_iobinding(binding)
        outputs: list[NDArray[Any]] = binding.copy_outputs_to_cpu()
        del device_values
        return outputs

    def _check_outputs(
        self, probs_raw: NDArray[Any], embedding_raw: NDArray[Any]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        meta = self._meta
        where = f"model {meta.name} {meta.version}"
        rank = 3 if meta.committee_axis else 2
        probs = _squeeze_leading(np.asarray(probs_raw, dtype=np.float32), rank)
        if probs.ndim == rank - 1 and not meta.dense:
            probs = probs[..., np.newaxis, :]  # a per-frame classifier may drop the item axis
        if probs.ndim != rank or probs.shape[-1] != meta.num_classes:
            want = "(T, n, K)" if meta.committee_axis else "(n, K)"
            raise ModelOutputError(
                f"{where}: output {meta.probs_output!r} has shape {list(probs_raw.shape)}, "
                f"expected {want} with K={meta.num_classes}"
            )
        if not meta.dense and probs.shape[-2] != 1:
            raise ModelOutputError(
                f"{where}: output {meta.probs_output!r} has {probs.shape[-2]} items but the "
                "metadata says dense=false"
            )
        embedding = np.asarray(embedding_raw, dtype=np.float32).reshape(-1)
        if embedding.size == 0:
            raise ModelOutputError(f"{where}: empty embedding output {meta.embedding_output!r}")
        if not np.isfinite(probs).all():
            raise ModelOutputError(f"{where}: non-finite values in output {meta.probs_output!r}")
        if not np.isfinite(embedding).all():
            raise ModelOutputError(
                f"{where}: non-finite values in output {meta.embedding_output!r}"
            )
        if meta.probs_are_logits:
            probs = softmax(probs)
        else:
            sums = probs.sum(axis=-1)
            if probs.min() < 0 or np.abs(sums - 1).max() > _PROBS_SUM_TOLERANCE:
                raise ModelOutputError(
                    f"{where}: output {meta.probs_output!r} is not a probability distribution "
                    "(negative or not summing to 1); if the model emits logits, set "
                    "probs_are_logits=true in its metadata"
                )
        return probs, embedding


class CameraModel:
    """A camera model: ``score(image)`` resizes and normalises per the metadata, then runs."""

    def __init__(self, runner: ModelRunner) -> None:
        if runner.metadata.kind != "camera":
            raise ModelConfigError(
                f"{runner.path} is a {runner.metadata.kind} model, not a camera model"
            )
        self.runner = runner

    @property
    def metadata(self) -> ModelMetadata:
        return self.runner.metadata

    def prepare(self, image: NDArray[np.uint8]) -> dict[str, NDArray[np.float32]]:
        return {self.runner.metadata.input_name: prepare_image(image, self.runner.metadata)}

    def score(self, image: NDArray[np.uint8]) -> ModelOutput:
        """``(H, W, 3)`` uint8 RGB -> ``ModelOutput``; raises ``ModelError`` on a bad frame."""
        start = self.runner._clock()
        out = self.runner.run(self.prepare(image))
        return replace(out, seconds=self.runner._clock() - start)

    def sample_input(self) -> NDArray[np.uint8]:
        """A mid-grey frame of the model's size, for smoke tests."""
        height, width = self.metadata.image_size
        return np.full((height, width, 3), 128, dtype=np.uint8)


class LidarModel:
    """A LiDAR model: ``score(points)`` crops, subsamples (seeded) and normalises, then runs."""

    def __init__(
        self,
        runner: ModelRunner,
        *,
        fields: tuple[str, ...] = LIDAR_FIELDS,
        seed: int = DEFAULT_POINT_SEED,
    ) -> None:
        if runner.metadata.kind != "lidar":
            raise ModelConfigError(
                f"{runner.path} is a {runner.metadata.kind} model, not a lidar model"
            )
        self.runner = runner
        self.fields = fields
        self.seed = seed

    @property
    def metadata(self) -> ModelMetadata:
        return self.runner.metadata

    def score(
        self, points: NDArray[np.float32], fields: tuple[str, ...] | None = None
    ) -> ModelOutput:
        """``(N, C)`` float32 sweep -> ``ModelOutput`` with ``index`` = the rows scored.

        ``fields`` names the columns (``LidarSweep.fields``); default x, y, z, intensity, ring.
        """
        start = self.runner._clock()
        tensor, index = prepare_points(points, self.metadata, fields or self.fields, self.seed)
        out = self.runner.run({self.metadata.input_name: tensor})
        return replace(out, seconds=self.runner._clock() - start, index=index)

    def sample_input(self) -> NDArray[np.float32]:
        """A flat ring of points in range, for smoke tests."""
        count = self.metadata.point_count
        angle = np.linspace(0, 2 * np.pi, count, endpoint=False, dtype=np.float32)
        radius = np.float32(0.5 * self.metadata.range_m)
        z = np.float32(0.5 * (self.metadata.z_min + self.metadata.z_max))
        columns = [radius * np.cos(angle), radius * np.sin(angle), np.full_like(angle, z)]
        columns += [np.zeros_like(angle)] * (len(self.fields) - 3)
        return np.stack(columns, axis=1).astype(np.float32)


ScoringModel = CameraModel | LidarModel


def load_model(
    path: Path, *, sha256: str | None = None, config: RunnerConfig | None = None
) -> ScoringModel:
    """Load a model file and wrap it by its metadata ``kind``."""
    runner = ModelRunner(path, sha256=sha256, config=config)
    if runner.metadata.kind == "camera":
        return CameraModel(runner)
    return LidarModel(runner)
