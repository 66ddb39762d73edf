"""Which onnxruntime execution provider runs a model, and how inputs reach it.

Three pure decisions, unit-tested without a GPU, and one reporting step:

``choose_providers(available, preference)``
    the preference (default TensorRT -> CUDA -> CPU) filtered by what this onnxruntime
    build offers, CPU always last as the floor; names not available are reported with
    the reason.
``effective_fallbacks(plan, effective)``
    after the session exists: onnxruntime silently drops a provider whose libraries fail
    to load (no CUDA / cuDNN / TensorRT on the machine) and runs on CPU; this compares
    what was asked with ``session.get_providers()`` and says what was lost.
``uses_io_binding(provider)``
    inputs are bound as device ``OrtValue``s (one host-to-device copy, outputs bound to
    the CPU) only when the provider in effect runs on a GPU; the CPU path uses the plain
    ``session.run``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from edge_agent.models.errors import ModelConfigError

__all__ = [
    "CPU",
    "CUDA",
    "DEFAULT_PREFERENCE",
    "GPU_PROVIDERS",
    "TENSORRT",
    "ProviderPlan",
    "choose_providers",
    "effective_fallbacks",
    "normalise_provider",
    "report_providers",
    "uses_io_binding",
]

_log = logging.getLogger(__name__)

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
DEFAULT_PREFERENCE = (TENSORRT, CUDA, CPU)
GPU_PROVIDERS = frozenset({TENSORRT, CUDA})

_ALIASES = {"tensorrt": TENSORRT, "trt": TENSORRT, "cuda": CUDA, "cpu": CPU}


def normalise_provider(name: str) -> str:
    """``"cuda"`` -> ``"CUDAExecutionProvider"``; full names pass through unchanged.

    >>> normalise_provider("TRT")
    'TensorrtExecutionProvider'
    """
    key = name.strip()
    if key.lower() in _ALIASES:
        return _ALIASES[key.lower()]
    if key.endswith("ExecutionProvider"):
        return key
    raise ModelConfigError(
        f"unknown execution provider {name!r}; use one of {sorted(_ALIASES)} "
        "or a full onnxruntime name such as 'CUDAExecutionProvider'"
    )


@dataclass(frozen=True, slots=True)
class ProviderPlan:
    """The providers handed to the session, in order, and those left out with the reason."""

    requested: tuple[str, ...]
    chosen: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]


def choose_providers(
    available: Iterable[str], preference: Sequence[str] = DEFAULT_PREFERENCE
) -> ProviderPlan:
    """Filter ``preference`` by ``available``; the CPU provider is always the last resort.

    >>> choose_providers(["CPUExecutionProvider"], ["cuda", "cpu"]).chosen
    ('CPUExecutionProvider',)
    """
    if not preference:
        raise ModelConfigError("the provider preference list is empty; give at least 'cpu'")
    offered = set(available)
    requested = tuple(dict.fromkeys(normalise_provider(p) for p in preference))
    chosen: list[str] = []
    skipped: list[tuple[str, str]] = []
    for name in requested:
        if name in offered:
            chosen.append(name)
        else:
            skipped.append(
                (name, f"not offered by this onnxruntime build (it has {sorted(offered)})")
            )
    if CPU not in chosen:
        chosen.append(CPU)  # every onnxruntime build has it; the floor under everything
    return ProviderPlan(requested=requested, chosen=tuple(chosen), skipped=tuple(skipped))


def effective_fallbacks(
    plan: ProviderPlan, effective: Sequence[str]
) -> tuple[tuple[str, str], ...]:
    """Providers requested but not in effect, each with the reason, for WARNING logs.

    >>> plan = choose_providers(["CUDAExecutionProvider", "CPUExecutionProvider"], ["cuda", "cpu"])
    >>> effective_fallbacks(plan, ["CPUExecutionProvider"])[0][0]
    'CUDAExecutionProvider'
    """
    lost = list(plan.skipped)
    for name in plan.chosen:
        if name not in effective and name != CPU:
            lost.append(
                (
                    name,
                    "offered by onnxruntime but failed to load at session creation (missing "
                    "CUDA / cuDNN / TensorRT libraries or no usable GPU); onnxruntime fell back",
                )
            )
    return tuple(p for p in lost if p[0] in plan.requested)


def uses_io_binding(provider: str) -> bool:
    """True when the provider in effect runs on a GPU, so inputs are bound as device values.

    >>> uses_io_binding("CUDAExecutionProvider"), uses_io_binding("CPUExecutionProvider")
    (True, False)
    """
    return provider in GPU_PROVIDERS


def report_providers(model: str, plan: ProviderPlan, effective: Sequence[str]) -> str:
    """Log the provider in effect once at INFO and every lost preference at WARNING."""
    primary = effective[0] if effective else CPU
    for name, reason in effective_fallbacks(plan, effective):
        _log.warning("model %s: provider %s requested but not in effect: %s", model, name, reason)
    _log.info(
        "model %s: running on %s (requested %s, session has %s, io binding %s)",
        model,
        primary,
        list(plan.requested),
        list(effective),
        "on" if uses_io_binding(primary) else "off",
    )
    return primary
