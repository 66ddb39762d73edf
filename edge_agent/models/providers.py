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
``is_auto(preference)``
    the preference is the default (nobody asked for a particular provider): a machine
    without a usable GPU is then normal, not a fault. ``report_providers`` says so once per
    process at INFO and gives the detail at DEBUG; a provider asked for by name and lost is a
    WARNING, every time.
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
    "is_auto",
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


def is_auto(preference: Sequence[str]) -> bool:
    """True when ``preference`` is the default TensorRT -> CUDA -> CPU (``auto``).

    >>> is_auto(["trt", "cuda", "cpu"]), is_auto(["cuda", "cpu"])
    (True, False)
    """
    return tuple(dict.fromkeys(normalise_provider(p) for p in preference)) == DEFAULT_PREFERENCE


# Models whose CPU fallback under ``auto`` was already said at INFO in this process (the
# machine does not grow a GPU between two model loads: once is enough).
_CPU_FALLBACK_SAID: set[str] = set()


def uses_io_binding(provider: str) -> bool:
    """True when the provider in effect runs on a GPU, so inputs are bound as device values.

    >>> uses_io_binding("CUDAExecutionProvider"), uses_io_binding("CPUExecutionProvider")
    (True, False)
    """
    return provider in GPU_PROVIDERS


def report_providers(
    model: str,
    plan: ProviderPlan,
    effective: Sequence[str],
    details: dict[str, str] | None = None,
) -> str:
    """Log the provider in effect and what was lost; return the provider in effect.

    Under ``auto`` with no usable GPU: one INFO line per process ("no usable GPU ... CPU"),
    the per-model line and each lost provider at DEBUG (``details``: why each failed to
    load, e.g. the missing CUDA library). Otherwise: the provider in effect at INFO and
    every lost preference at WARNING.
    """
    primary = effective[0] if effective else CPU
    lost = effective_fallbacks(plan, effective)
    details = details or {}
    if is_auto(plan.requested) and primary == CPU:
        for name, reason in lost:
            _log.debug(
                "model %s: %s not in effect: %s%s",
                model,
                name,
                reason,
                f" ({details[name]})" if name in details else "",
            )
        if not _CPU_FALLBACK_SAID:
            _log.info(
                "no usable GPU (TensorRT / CUDA libraries or device not found): models run on "
                "%s; providers = ['cpu'] in [models.runner] skips the GPU attempt, "
                "--log-level DEBUG says what was missing",
                CPU,
            )
        _CPU_FALLBACK_SAID.add(model)
        level = logging.DEBUG
    else:
        for name, reason in lost:
            _log.warning(
                "model %s: provider %s requested but not in effect: %s%s",
                model,
                name,
                reason,
                f" ({details[name]})" if name in details else "",
            )
        level = logging.INFO
    _log.log(
        level,
        "model %s: running on %s (requested %s, session has %s, io binding %s)",
        model,
        primary,
        list(plan.requested),
        list(effective),
        "on" if uses_io_binding(primary) else "off",
    )
    return primary
