"""Exceptions of the model layer, one tree.

::

    ModelError                     base: callers of ``score`` / ``run`` catch this one
     +-- ModelConfigError          a bad runner setting (unknown provider name, threads < 1)
     +-- ModelLoadError            the model file is missing, unreadable or not valid ONNX
     |    +-- ChecksumMismatchError     its sha256 is not the expected one
     +-- ModelMetadataError        a metadata key is missing or has a bad value
     +-- ModelInputError           the frame handed to ``score`` cannot be fed to the model
     +-- ModelRunError             onnxruntime failed while running the session
     +-- ModelOutputError          the outputs are non-finite or have an unexpected shape
     +-- SwapError                 a hot swap was refused; the old model stays active

onnxruntime and onnx exceptions are caught where they happen and re-raised as one of
these (``raise ModelLoadError(...) from exc``) with the model path in the message.
A per-frame failure (``ModelInputError``, ``ModelRunError``, ``ModelOutputError``) is
meant to be caught by the caller's loop, counted, and the loop carries on: the model
layer never lets a single bad frame crash the agent.
"""

from __future__ import annotations

__all__ = [
    "ChecksumMismatchError",
    "ModelConfigError",
    "ModelError",
    "ModelInputError",
    "ModelLoadError",
    "ModelMetadataError",
    "ModelOutputError",
    "ModelRunError",
    "SwapError",
]


class ModelError(Exception):
    """Base of every exception the model layer raises on purpose."""


class ModelConfigError(ModelError, ValueError):
    """A runner setting is invalid; the message names the setting and the valid values."""


class ModelLoadError(ModelError):
    """The model file cannot be loaded; the message names the path and what to do."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class ChecksumMismatchError(ModelLoadError):
    """The file's sha256 differs from the expected one (truncated or wrong download)."""


class ModelMetadataError(ModelError):
    """A metadata key is missing or invalid; the message names the key, the file and the fix."""

    def __init__(self, source: str, key: str, message: str) -> None:
        super().__init__(f"{source}: metadata key {key!r}: {message}")
        self.source = source
        self.key = key


class ModelInputError(ModelError):
    """The input cannot be fed to the model (wrong dtype, shape, or nothing left after crop)."""


class ModelRunError(ModelError):
    """onnxruntime raised while running the session."""


class ModelOutputError(ModelError):
    """The model produced non-finite values or outputs of an unexpected shape."""


class SwapError(ModelError):
    """A hot swap was refused or failed; the previously active model is still in use."""
