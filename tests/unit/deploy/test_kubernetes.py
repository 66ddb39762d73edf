"""The centre's Kubernetes manifests: both overlays render with kustomize (built by make), and
every rendered object, and the trainer Job template, passes ``kubernetes-validate --strict``
against the Kubernetes API schemas offline; the overlays differ as documented; no Secret value
is in any manifest; the ConfigMap's ingest.toml loads as the service's configuration."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from ingest_service.config import load_ingest_config

REPO = Path(__file__).resolve().parents[3]
K8S = REPO / "deploy" / "kubernetes"
_VERSION = re.search(r"^KUSTOMIZE_VERSION := (\S+)$", (REPO / "Makefile").read_text(), re.M)
assert _VERSION is not None
KUSTOMIZE = Path.home() / ".cache" / "fleetal" / f"kustomize-{_VERSION.group(1)}" / "kustomize"
VALIDATE = REPO / ".venv" / "bin" / "kubernetes-validate"
OVERLAYS = ("staging", "production")


def _render(overlay: str) -> list[dict[str, object]]:
    assert KUSTOMIZE.is_file(), f"{KUSTOMIZE} missing: `make kustomize` builds it"
    run = subprocess.run(
        [str(KUSTOMIZE), "build", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return [d for d in yaml.safe_load_all(run.stdout) if d]


def _validate(tmp_path: Path, docs: list[dict[str, object]]) -> str:
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    run = subprocess.run(
        [str(VALIDATE), "--strict", "--no-warn", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def _by_kind(docs: list[dict[str, object]]) -> dict[str, list[dict[str, object]]]:
    out: dict[str, list[dict[str, object]]] = {}
    for d in docs:
        out.setdefault(str(d["kind"]), []).append(d)
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_overlay_renders_and_every_object_validates(overlay: str, tmp_path: Path) -> None:
    docs = _render(overlay)
    kinds = _by_kind(docs)
    assert set(kinds) == {
        "ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"
    }  # fmt: skip
    out = _validate(tmp_path, docs)
    assert out.count("passed for resource") == len(docs)
    namespace = {"staging": "fleetal-staging", "production": "fleetal"}[overlay]
    for d in docs:
        meta = d["metadata"]
        assert isinstance(meta, dict)
        assert meta["namespace"] == namespace


def test_the_validator_rejects_an_unknown_field(tmp_path: Path) -> None:
    docs = _render("staging")
    deployment = _by_kind(docs)["Deployment"][0]
    spec = deployment["spec"]
    assert isinstance(spec, dict)
    spec["replica"] = 3  # a typo of replicas
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(deployment))
    run = subprocess.run(
        [str(VALIDATE), "--strict", str(path)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode != 0
    assert "replica" in run.stdout + run.stderr


def test_the_overlays_scale_as_documented() -> None:
    def scale(overlay: str) -> tuple[object, ...]:
        kinds = _by_kind(_render(overlay))
        spec = {k: kinds[k][0]["spec"] for k in ("Deployment", "HorizontalPodAutoscaler",
                                                 "PodDisruptionBudget")}  # fmt: skip
        dep, hpa, pdb = (dict(v) for v in spec.values())  # type: ignore[call-overload]
        return dep["replicas"], hpa["minReplicas"], hpa["maxReplicas"], pdb["minAvailable"]

    assert scale("staging") == (1, 1, 2, 0)
    assert scale("production") == (3, 3, 12, 2)


def test_probes_are_wired_to_the_service_health() -> None:
    dep = _by_kind(_render("production"))["Deployment"][0]
    container = dep["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["livenessProbe"]["tcpSocket"] == {"port": "metrics"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_secrets_are_referenced_never_given() -> None:
    for path in K8S.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict):
                assert doc.get("kind") != "Secret", f"{path}: a Secret with values"
    dep = (K8S / "base" / "ingest-deployment.yaml").read_text()
    assert dep.count("secretKeyRef") == 4


def test_the_trainer_job_template_validates(tmp_path: Path) -> None:
    text = (K8S / "trainer-job.yaml").read_text()
    text = text.replace("${JOB_NAME}", "fleetal-trainer-camera-7-1")
    text = text.replace("${JOB_DIR}", "/var/lib/fleetal-ingest/retrain/camera-7-1")
    job = yaml.safe_load(text)
    _validate(tmp_path, [job])
    assert job["spec"]["backoffLimit"] == 0  # the retrain job's attempts decide retries


def _secret_env() -> dict[str, str]:
    """The FLEETAL_ variables the Deployment takes from the Secret, with stand-in values."""
    dep = yaml.safe_load((K8S / "base" / "ingest-deployment.yaml").read_text())
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    names = [e["name"] for e in env]
    assert all(n.startswith("FLEETAL_") for n in names)
    values = {"FLEETAL_QUEUE__DATABASE": "postgresql://fleetal@fleetal-postgres/fleetal"}
    return {n: values.get(n, "stand-in-secret") for n in names}


def test_the_configmap_is_a_valid_service_configuration(tmp_path: Path) -> None:
    ca = tmp_path / "kafka-ca.pem"  # the Secret's file, mounted in the pod
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    cfg = load_ingest_config(
        K8S / "base" / "ingest.toml",
        data={"api": {"tokens_file": None}, "kafka": {"security": {"ssl_cafile": str(ca)}}},
        env=_secret_env(),
    )
    assert cfg.blobs.backend == "s3"
    assert cfg.api.host == "0.0.0.0"
    assert cfg.registry.tracking_uri == "http://fleetal-mlflow:5000"
    assert cfg.kafka.security.kafka_kwargs()["security_protocol"] == "SASL_SSL"
