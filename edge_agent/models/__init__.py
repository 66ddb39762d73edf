"""ONNX model layer of the edge agent: metadata, providers, runner, hot swap.

Public API::

    from edge_agent.models import load_model, ModelSlot, ModelError

    model = load_model(Path("models/camera.onnx"), sha256=expected)   # CameraModel
    slot = ModelSlot(model)
    out = slot.score(image)            # ModelOutput(probs, embedding, seconds, ...)
    slot.swap(Path("models/camera-2.onnx"), new_sha256)   # from a worker thread

Callers catch ``ModelError`` around each frame; see ``edge_agent.models.errors``.
The reference models and their training live in ``ingest_service.training.reference`` (torch
is imported only there).
"""

from edge_agent.models.errors import (
    ChecksumMismatchError,
    ModelConfigError,
    ModelError,
    ModelInputError,
    ModelLoadError,
    ModelMetadataError,
    ModelOutputError,
    ModelRunError,
    SwapError,
)
from edge_agent.models.hotswap import ModelSlot, SwapReport
from edge_agent.models.metadata import ModelMetadata, metadata_from_mapping, read_metadata
from edge_agent.models.providers import (
    DEFAULT_PREFERENCE,
    ProviderPlan,
    choose_providers,
    uses_io_binding,
)
from edge_agent.models.runner import (
    CameraModel,
    LidarModel,
    ModelOutput,
    ModelRunner,
    RunnerConfig,
    ScoringModel,
    load_model,
    sha256_file,
)

__all__ = [
    "DEFAULT_PREFERENCE",
    "CameraModel",
    "ChecksumMismatchError",
    "LidarModel",
    "ModelConfigError",
    "ModelError",
    "ModelInputError",
    "ModelLoadError",
    "ModelMetadata",
    "ModelMetadataError",
    "ModelOutput",
    "ModelOutputError",
    "ModelRunError",
    "ModelRunner",
    "ModelSlot",
    "ProviderPlan",
    "RunnerConfig",
    "ScoringModel",
    "SwapError",
    "SwapReport",
    "choose_providers",
    "load_model",
    "metadata_from_mapping",
    "read_metadata",
    "sha256_file",
    "uses_io_binding",
]
