"""Staged rollout: a new model goes to canary vehicles first, and to the whole fleet only after
the canaries ran it long enough without a rise in model errors; otherwise back it goes.

With ``[rollout] canary_vehicles`` and/or ``canary_fraction`` set, publishing a model
(``ingest-service publish-model``, or ``auto_publish`` after a retrain) starts a rollout:

1. **canary**: the update is signed for its stage (``ModelUpdate.target_vehicles`` /
   ``target_fraction``, wire v1.2) and sent on the models topic; every vehicle reads it, and
   only those in the stage swap (the others count ``not_in_stage``). The registry version is
   tagged ``rollout_stage = canary`` with the time;
2. every ``canary_tick_s`` the centre asks the Prometheus that scrapes the fleet
   (``prometheus_url``) which vehicles report, which model each runs
   (``fleetal_edge_model_info``), and how many frames each scored and failed on a model error
   (``fleetal_edge_frames_scored_total``, ``fleetal_edge_frames_dropped_total{reason=
   "model_error"}``) and rolled back by itself (``fleetal_edge_model_swaps_total{result=
   "rolled_back"}``). The canaries are the reporting vehicles in the stage; the rest of the
   fleet, still on the old model over the same window, is the baseline;
3. **rollback** as soon as a canary rolled the model back by itself, or the canaries scored at
   least ``canary_min_frames`` frames and their model error rate exceeds the baseline's by
   more than ``canary_max_error_rise``: production goes back to the previous version, which is
   sent, signed, to the same stage; the version is tagged ``rolled_back`` with the reason;
4. **widen** once every canary has run the model for ``canary_observe_s`` (from the first
   check that saw them all on it), with enough frames and no rise: the update is sent for the
   whole fleet and the version tagged ``rollout_stage = fleet``;
5. otherwise **wait**, saying for what (no canary reports yet; 2 of 3 canaries run it; 40 of
   500 frames).

The state lives in the registry's version tags, so a restarted service carries on where it
was. Decisions are logged and counted (``fleetal_ingest_rollout_decisions_total``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ingest_service.config import IngestConfig
from ingest_service.errors import IngestError
from ingest_service.registry import ModelRegistry, RegisteredModel, RegistryError
from schemas.messages import ModelUpdate, stage_includes

__all__ = [
    "CanaryReport",
    "Decision",
    "FleetMetrics",
    "PrometheusFleet",
    "StagedRollout",
]

log = logging.getLogger(__name__)

KINDS = ("camera", "lidar")
STAGE = "rollout_stage"
STARTED_NS = "rollout_started_ns"
READY_NS = "rollout_canaries_ready_ns"
MODEL = "rollout_model"  # json [name, version] as the vehicles see it
DETAIL = "rollout_detail"

Action = Literal["wait", "widen", "rollback"]


class FleetMetricsError(IngestError):
    """The fleet's metrics could not be read (Prometheus down, a bad answer)."""


@dataclass(frozen=True, slots=True)
class CanaryReport:
    """What the fleet's metrics say about a staged model over a window."""

    canaries: tuple[str, ...]
    """Reporting vehicles in the stage."""
    running: tuple[str, ...]
    """Of the canaries, those running the model."""
    frames: float
    """Frames the canaries scored or failed on a model error in the window."""
    errors: float
    baseline_frames: float
    baseline_errors: float
    local_rollbacks: float

    @property
    def error_rate(self) -> float:
        return self.errors / self.frames if self.frames > 0 else 0.0

    @property
    def baseline_error_rate(self) -> float:
        return self.baseline_errors / self.baseline_frames if self.baseline_frames > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Decision:
    kind: str
    version: int
    action: Action
    reason: str


class FleetMetrics(Protocol):
    def report(
        self,
        kind: str,
        model: tuple[str, str],
        in_stage: Callable[[str], bool],
        window_s: float,
    ) -> CanaryReport: ...


class PrometheusFleet:
    """:class:`FleetMetrics` from the Prometheus that scrapes the agents (its HTTP API)."""

    def __init__(self, url: str, *, vehicle_label: str = "vehicle", timeout_s: float = 10.0):
        self.url = url.rstrip("/")
        self.label = vehicle_label
        self.timeout_s = timeout_s

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        q = urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(
                f"{self.url}/api/v1/query?{q}", timeout=self.timeout_s
            ) as resp:
                body = json.loads(resp.read())
        except (OSError, ValueError) as exc:
            raise FleetMetricsError(
                f"Prometheus at {self.url} did not answer {expr!r}: {exc}; check "
                "[rollout] prometheus_url and that Prometheus is up"
            ) from exc
        if body.get("status") != "success":
            raise FleetMetricsError(f"Prometheus refused {expr!r}: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def _by_vehicle(self, expr: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for row in self.query(f"sum by ({self.label}) ({expr})"):
            vehicle = row["metric"].get(self.label)
            if vehicle:
                out[vehicle] = float(row["value"][1])
        return out

    def report(
        self,
        kind: str,
        model: tuple[str, str],
        in_stage: Callable[[str], bool],
        window_s: float,
    ) -> CanaryReport:
        running: dict[str, set[tuple[str, str]]] = {}
        for row in self.query(f'fleetal_edge_model_info{{kind="{kind}"}}'):
            labels = row["metric"]
            vehicle = labels.get(self.label)
            if vehicle:
                running.setdefault(vehicle, set()).add((labels["model"], labels["version"]))
        w = f"[{max(1, round(window_s))}s]"
        scored = self._by_vehicle(f"increase(fleetal_edge_frames_scored_total{w})")
        errors = self._by_vehicle(
            f'increase(fleetal_edge_frames_dropped_total{{reason="model_error"}}{w})'
        )
        rolled = self._by_vehicle(
            f'increase(fleetal_edge_model_swaps_total{{result="rolled_back"}}{w})'
        )
        canaries = sorted(v for v in running if in_stage(v))
        rest = [v for v in running if v not in canaries]

        def total(values: dict[str, float], who: Iterable[str]) -> float:
            return sum(values.get(v, 0.0) for v in who)

        return CanaryReport(
            canaries=tuple(canaries),
            running=tuple(v for v in canaries if model in running[v]),
            frames=total(scored, canaries) + total(errors, canaries),
            errors=total(errors, canaries),
            baseline_frames=total(scored, rest) + total(errors, rest),
            baseline_errors=total(errors, rest),
            local_rollbacks=total(rolled, canaries),
        )


Send = Callable[[ModelUpdate], object]


class StagedRollout:
    """Starts staged rollouts and moves them on (module docstring)."""

    def __init__(
        self,
        cfg: IngestConfig,
        registry: ModelRegistry,
        fleet: FleetMetrics,
        send: Send,
        *,
        on_decision: Callable[[Decision], None] | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.ingest = cfg
        self.cfg = cfg.rollout
        self.registry = registry
        self.fleet = fleet
        self.send = send
        self.on_decision = on_decision
        self.clock_ns = clock_ns

    def _update(self, kind: str, version: int, *, staged: bool) -> ModelUpdate:
        from ingest_service.rollout import build_update

        return build_update(
            self.ingest,
            self.registry,
            kind,
            version,
            target_vehicles=self.cfg.canary_vehicles if staged else (),
            target_fraction=self.cfg.canary_fraction if staged else 1.0,
        )

    def start(self, kind: str, version: int) -> ModelUpdate:
        """Send ``version`` to the canaries and record the stage in the registry."""
        update = self._update(kind, version, staged=True)
        self.send(update)
        self.registry.set_tags(
            kind,
            version,
            {  # STAGE last: a check that runs meanwhile finds the rest already there
                STARTED_NS: str(self.clock_ns()),
                MODEL: json.dumps([update.name, update.version]),
                DETAIL: f"sent to the canaries: {', '.join(self.cfg.canary_vehicles) or 'none'}"
                f" by name, {self.cfg.canary_fraction:.0%} of the fleet",
                STAGE: "canary",
            },
        )
        log.info("%s %d: canary stage started (%s)", kind, version, update.version)
        return update

    def tick(self) -> list[Decision]:
        """Judge every production version in its canary stage; act on the decisions."""
        out = []
        for kind in KINDS:
            production = self.registry.alias(kind, "production")
            if production is not None and production.tags.get(STAGE) == "canary":
                decision = self.judge(production)
                self._act(production, decision)
                out.append(decision)
        return out

    def judge(self, model: RegisteredModel) -> Decision:
        """What to do with ``model`` in its canary stage now (records when canaries are ready)."""
        cfg = self.cfg
        if MODEL not in model.tags:
            return Decision(model.kind, model.version, "wait", "the stage is being recorded")
        name, version = json.loads(model.tags[MODEL])
        now = self.clock_ns()
        ready_ns = int(model.tags.get(READY_NS, "0"))
        window_s = cfg.canary_observe_s if not ready_ns else (now - ready_ns) / 1e9
        report = self.fleet.report(
            model.kind,
            (name, version),
            lambda v: stage_includes(
                v,
                name=name,
                version=version,
                vehicles=cfg.canary_vehicles,
                fraction=cfg.canary_fraction,
            ),
            max(window_s, 1.0),
        )

        def decide(action: Action, reason: str) -> Decision:
            return Decision(model.kind, model.version, action, reason)

        if report.local_rollbacks > 0:
            return decide("rollback", "a canary rolled the model back by itself (error rate)")
        if not report.canaries:
            return decide("wait", "no vehicle of the canary stage reports metrics yet")
        if len(report.running) < len(report.canaries):
            return decide(
                "wait",
                f"{len(report.running)} of {len(report.canaries)} canaries run {version}",
            )
        if not ready_ns:
            self.registry.set_tags(model.kind, model.version, {READY_NS: str(now)})
            return decide("wait", f"every canary runs {version}: observing them")
        rise = report.error_rate - report.baseline_error_rate
        rates = (
            f"canary model error rate {report.error_rate:.2%} over {report.frames:.0f} frames, "
            f"the rest of the fleet {report.baseline_error_rate:.2%} over "
            f"{report.baseline_frames:.0f}"
        )
        if report.frames >= cfg.canary_min_frames and rise > cfg.canary_max_error_rise:
            return decide("rollback", f"{rates}: a rise above {cfg.canary_max_error_rise:.2%}")
        if report.frames < cfg.canary_min_frames:
            return decide(
                "wait",
                f"the canaries scored {report.frames:.0f} of the "
                f"{cfg.canary_min_frames} frames needed on {version}",
            )
        observed_s = (now - ready_ns) / 1e9
        if observed_s < cfg.canary_observe_s:
            return decide(
                "wait", f"{rates}; observed {observed_s:.0f} of {cfg.canary_observe_s:.0f} s"
            )
        return decide("widen", f"{rates}; observed {observed_s:.0f} s")

    def _act(self, model: RegisteredModel, decision: Decision) -> None:
        kind, version = model.kind, model.version
        if decision.action == "widen":
            self.send(self._update(kind, version, staged=False))
            self.registry.set_tags(kind, version, {DETAIL: decision.reason, STAGE: "fleet"})
        elif decision.action == "rollback":
            try:
                previous = self.registry.rollback(kind)  # production -> the previous version
            except RegistryError as exc:
                decision = dataclasses.replace(
                    decision,
                    reason=f"{decision.reason}; but {exc}: the canaries keep it until a good "
                    "version is published (`ingest-service publish-model --kind "
                    f"{kind} --version N`)",
                )
                self.registry.set_tags(kind, version, {DETAIL: decision.reason, STAGE: "halted"})
            else:
                self.send(self._update(kind, previous.version, staged=True))
                self.registry.set_tags(
                    kind,
                    version,
                    {  # STAGE last, as at the start: whoever sees it sees the detail too
                        DETAIL: f"{decision.reason}; back to {previous.version}",
                        STAGE: "rolled_back",
                    },
                )
        if decision.action != "wait":
            log.warning("%s %d: %s (%s)", kind, version, decision.action, decision.reason)
        else:
            log.info("%s %d: waiting: %s", kind, version, decision.reason)
        if self.on_decision is not None:
            self.on_decision(decision)
