"""The model registry: MLflow's Model Registry, embedded or on an MLflow tracking server.

Each trained model is a registered version of ``fleetal-<kind>`` (``fleetal-camera``,
``fleetal-lidar``) with its ONNX file as the artifact of an MLflow run that holds the holdout
metric, the training parameters and the lineage as tags (label-set digest, task ids digest,
parent version, code version, ONNX sha256). Aliases:

* ``candidate``: the last version registered;
* ``production``: the version the fleet should run; :meth:`ModelRegistry.promote` moves it
  only if the candidate's holdout metric is not worse than production's by more than the
  margin, and keeps the one it replaced as ``previous`` for :meth:`ModelRegistry.rollback`.

Tracking URI: a ``sqlite:///...`` file with a local artifact folder (the embedded default,
:meth:`ModelRegistry.embedded`, under the service's data directory) or ``http(s)://`` of an
MLflow server. MLflow is imported only here (the ``registry`` extra), never on a vehicle.
"""

from __future__ import annotations

import hashlib
import logging
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest_service.errors import IngestError

__all__ = ["ModelRegistry", "Promotion", "RegisteredModel", "RegistryError"]

log = logging.getLogger(__name__)

CANDIDATE = "candidate"
PRODUCTION = "production"
PREVIOUS = "previous"
_ARTIFACT_DIR = "model"


class RegistryError(IngestError):
    """The registry could not do what was asked (the message names the model and version)."""


@dataclass(frozen=True, slots=True)
class RegisteredModel:
    """One registered version."""

    kind: str
    name: str
    version: int
    metric: float | None
    sha256: str
    run_id: str
    aliases: tuple[str, ...]
    tags: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Promotion:
    """What :meth:`ModelRegistry.promote` decided."""

    promoted: bool
    version: int
    production: int | None  # production after the decision
    reason: str


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ModelRegistry:
    """Register, promote, roll back and fetch models of each kind."""

    def __init__(self, tracking_uri: str, *, artifact_root: Path | None = None) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    @classmethod
    def embedded(cls, data_dir: Path) -> ModelRegistry:
        """A registry in ``data_dir`` (a SQLite file and an artifact folder); no server."""
        data_dir.mkdir(parents=True, exist_ok=True)
        db = (data_dir / "mlflow.db").resolve()
        return cls(f"sqlite:///{db}", artifact_root=(data_dir / "artifacts").resolve())

    @staticmethod
    def model_name(kind: str) -> str:
        return f"fleetal-{kind}"

    def _experiment(self, kind: str) -> str:
        name = f"fleetal-retrain-{kind}"
        found = self._client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        location = None
        if self.artifact_root is not None:
            location = (self.artifact_root / name).as_uri()
        return str(self._client.create_experiment(name, artifact_location=location))

    def _ensure_model(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self._client.get_registered_model(name)
        except MlflowException:
            self._client.create_registered_model(name)

    # --- writing ------------------------------------------------------------------------------

    def register(
        self,
        kind: str,
        onnx_path: Path,
        *,
        metric: float | None,
        params: Mapping[str, Any] | None = None,
        lineage: Mapping[str, str] | None = None,
    ) -> RegisteredModel:
        """Log ``onnx_path`` with its metric, parameters and lineage; register it as the next
        version of ``fleetal-<kind>`` and point ``candidate`` at it."""
        if not onnx_path.is_file():
            raise RegistryError(f"{onnx_path}: no such model file to register")
        if metric is not None and not math.isfinite(metric):
            raise RegistryError(f"{onnx_path}: holdout metric must be finite, got {metric}")
        name = self.model_name(kind)
        digest = _sha256(onnx_path)
        tags = {
            "kind": kind,
            "onnx_sha256": digest,
            **{k: str(v) for k, v in (lineage or {}).items()},
        }
        run = self._client.create_run(self._experiment(kind), tags=tags)
        run_id = run.info.run_id
        try:
            for key, value in (params or {}).items():
                self._client.log_param(run_id, key, value)
            if metric is not None:
                self._client.log_metric(run_id, "holdout_metric", metric)
            self._client.log_artifact(run_id, str(onnx_path), _ARTIFACT_DIR)
            self._client.set_terminated(run_id, "FINISHED")
        except Exception:
            self._client.set_terminated(run_id, "FAILED")
            raise
        self._ensure_model(name)
        source = f"{run.info.artifact_uri}/{_ARTIFACT_DIR}"
        mv = self._client.create_model_version(name, source, run_id=run_id, tags=tags)
        version = int(mv.version)
        self._client.set_registered_model_alias(name, CANDIDATE, str(version))
        log.info(
            "registered %s version %d (sha256 %s, metric %s)", name, version, digest[:12], metric
        )
        return self.get(kind, version)

    def promote(self, kind: str, version: int, *, margin: float = 0.0) -> Promotion:
        """Make ``version`` production if its holdout metric is at least production's minus
        ``margin`` (or there is no production yet); the replaced one becomes ``previous``."""
        name = self.model_name(kind)
        candidate = self.get(kind, version)
        current = self.alias(kind, PRODUCTION)
        if current is not None and current.version == version:
            return Promotion(False, version, version, f"{name} {version} is already production")
        if current is not None:
            if candidate.metric is None or current.metric is None:
                return Promotion(
                    False, version, current.version, "a holdout metric is missing: not compared"
                )
            if candidate.metric < current.metric - margin:
                return Promotion(
                    False,
                    version,
                    current.version,
                    f"holdout {candidate.metric:.4f} is worse than production {current.version}'s"
                    f" {current.metric:.4f} by more than the margin {margin}",
                )
            self._client.set_registered_model_alias(name, PREVIOUS, str(current.version))
        self._client.set_registered_model_alias(name, PRODUCTION, str(version))
        was = "none" if current is None else str(current.version)
        return Promotion(True, version, version, f"{name} {version} is production (was {was})")

    def rollback(self, kind: str) -> RegisteredModel:
        """Point ``production`` back at ``previous`` (the version a promotion replaced)."""
        name = self.model_name(kind)
        previous = self.alias(kind, PREVIOUS)
        current = self.alias(kind, PRODUCTION)
        if previous is None:
            raise RegistryError(f"{name} has no previous production version to roll back to")
        self._client.set_registered_model_alias(name, PRODUCTION, str(previous.version))
        if current is not None:
            self._client.set_registered_model_alias(name, PREVIOUS, str(current.version))
        return self.get(kind, previous.version)

    def set_tags(self, kind: str, version: int, tags: Mapping[str, str]) -> None:
        """Set tags on a registered version (the staged rollout keeps its state there), one
        after the other in the mapping's order: a reader may see the first before the last, so
        put the key that marks a state last."""
        name = self.model_name(kind)
        for key, value in tags.items():
            self._client.set_model_version_tag(name, str(version), key, value)

    # --- reading ------------------------------------------------------------------------------

    def get(self, kind: str, version: int) -> RegisteredModel:
        from mlflow.exceptions import MlflowException

        name = self.model_name(kind)
        try:
            mv = self._client.get_model_version(name, str(version))
        except MlflowException as exc:
            raise RegistryError(f"{name} version {version} is not registered") from exc
        if mv.run_id is None:
            raise RegistryError(f"{name} version {version} has no run: not registered by us")
        run = self._client.get_run(mv.run_id)
        metric = run.data.metrics.get("holdout_metric")
        return RegisteredModel(
            kind=kind,
            name=name,
            version=int(mv.version),
            metric=None if metric is None else float(metric),
            sha256=str(mv.tags.get("onnx_sha256", "")),
            run_id=str(mv.run_id),
            aliases=tuple(sorted(mv.aliases)),
            tags=dict(mv.tags),
        )

    def alias(self, kind: str, alias: str) -> RegisteredModel | None:
        """The version behind ``alias``, or ``None``."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self._client.get_model_version_by_alias(self.model_name(kind), alias)
        except MlflowException:
            return None
        return self.get(kind, int(mv.version))

    def versions(self, kind: str) -> list[RegisteredModel]:
        """Every registered version of ``kind``, newest first."""
        found = self._client.search_model_versions(f"name = '{self.model_name(kind)}'")
        return [
            self.get(kind, int(v)) for v in sorted((int(m.version) for m in found), reverse=True)
        ]

    def download(self, kind: str, version: int, dest: Path) -> Path:
        """The version's ONNX file, copied to ``dest`` (a directory), checked against its sha256."""
        from mlflow.artifacts import download_artifacts

        model = self.get(kind, version)
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest) as tmp:
            local = Path(
                download_artifacts(
                    run_id=model.run_id, artifact_path=_ARTIFACT_DIR, dst_path=tmp,
                    tracking_uri=self.tracking_uri,
                )
            )  # fmt: skip
            files = sorted(local.glob("*.onnx"))
            if len(files) != 1:
                raise RegistryError(
                    f"{model.name} {version}: expected one .onnx artifact, got {files}"
                )
            target = dest / f"{model.name}-{version}.onnx"
            files[0].replace(target)
        if _sha256(target) != model.sha256:
            target.unlink()
            raise RegistryError(f"{model.name} {version}: the downloaded file's sha256 differs")
        return target
