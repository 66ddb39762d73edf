"""``make demo``: one whole turn of the loop on the bundled real drive.

1. build the demo drive from ``data/`` (``deploy/demo/build_drive.py``; cached under ``var/``);
2. start a local Apache Kafka (KRaft, one node; ``deploy/kafka``);
3. start the ingest service: consumer into a SQLite label queue and a blob store, labeling
   API, retrain scheduler and worker, MLflow registry, signed rollout (``var/demo/run``); and
   the vehicle's model-update listener, with the centre's public key;
4. replay the drive through the edge agent's pipeline (``edge-agent replay --kafka``): gate,
   reference models on onnxruntime, selector, encoder, spool, Kafka sink;
5. wait until every selected frame is a label task;
6. a scripted annotator labels the queue over the labeling API with the drive's real boxes
   (``deploy/demo/annotator.py``);
7. a retrain of the camera model, asked for over the API: the fine-tune trainer, scored on a
   holdout it never trained on, registered and promoted in MLflow if not worse, signed and
   published on ``fleet.models``; the vehicle checks the signature and swaps to it;
8. replay the drive again with the model the vehicle now runs, and print what changed.

Models are trained beforehand by ``make`` (``models/``); run ``python -m deploy.demo.run --help``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.demo.annotator import AnnotationReport, DriveTruth, annotate
from deploy.demo.build_drive import DATA
from deploy.demo.build_drive import build as build_drive
from deploy.kafka.broker import LocalKafka, ensure_jars
from edge_agent.agent import load_slots
from edge_agent.config import AgentConfig, load_agent_config
from edge_agent.models import manifest
from edge_agent.replay import ReplayResult, parse_speed, replay
from edge_agent.rollout import ModelRollout, start_listener
from schemas.signing import generate_keypair, load_public_key

ROOT = Path(__file__).resolve().parents[2]
VAR = ROOT / "var" / "demo"

log = logging.getLogger("demo")


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


@dataclass(frozen=True, slots=True)
class Topics:
    frames: str = "fleet.frames"
    models: str = "fleet.models"


@dataclass(frozen=True, slots=True)
class LoopRun:
    """What one turn of the loop did (``make demo`` prints it; the test asserts it)."""

    first: ReplayResult
    queued: dict[str, int]
    annotation: AnnotationReport
    job: dict[str, Any]
    camera_version: str
    second: ReplayResult


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", type=Path, default=ROOT / "deploy" / "demo" / "agent.toml")
    p.add_argument("--models", type=Path, default=ROOT / "models", help="camera.onnx/.pt, lidar")
    p.add_argument("--out", type=Path, default=VAR)
    p.add_argument("--frames", type=int, help="only the first N frames of the drive")
    p.add_argument("--speed", default="max", help="replay speed: max, realtime or a factor")
    p.add_argument("--epochs", type=int, default=5, help="epochs of the fine-tune")
    p.add_argument(
        "--margin", type=float, default=0.0, help="holdout accuracy a fine-tune may lose"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out: Path = args.out
    models: Path = args.models.resolve()
    for model in ("camera.onnx", "camera.pt", "lidar.onnx"):
        if not (models / model).is_file():
            _say(f"{models / model} is missing: run `make demo` (it trains the reference models)")
            return 1

    _say("1/8 building the demo drive from data/ (real timestamps, track, images, sweeps)")
    drive = build_drive(out, args.frames)
    _say(f"    {drive}")
    cfg = demo_agent_config(args.config, models, out)
    _say("2/8 starting Apache Kafka (KRaft, single node) on a free loopback port")
    ensure_jars()
    topics = Topics()
    with LocalKafka() as kafka:
        _say(f"    bootstrap {kafka.bootstrap}, started in {kafka.start_time_s:.1f} s")
        kafka.create_topic(topics.frames, partitions=3)
        kafka.create_topic(topics.models, partitions=1)
        turn = run_loop(
            drive,
            cfg,
            kafka.bootstrap,
            out,
            models,
            topics=topics,
            speed=args.speed,
            epochs=args.epochs,
            margin=args.margin,
        )
    _say("reports:")
    for path in [*turn.first.report_files, *turn.second.report_files]:
        print(f"    {path}")
    return 0


def run_loop(
    drive: Path,
    cfg: AgentConfig,
    bootstrap: str,
    out: Path,
    models: Path,
    *,
    topics: Topics,
    speed: str = "max",
    epochs: int = 5,
    margin: float = 0.0,
) -> LoopRun:
    """Steps 3-8 on a running broker: the centre, the vehicle, two replays and a retrain."""
    run_dir = out / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    _say(
        "3/8 starting the ingest service (consumer -> blob store + SQLite label queue, API, "
        "retrain scheduler, MLflow registry, signed rollout)"
    )
    ingest = _Ingest(bootstrap, run_dir, models, topics, epochs=epochs, margin=margin)
    stop = threading.Event()
    try:
        vehicle = _start_vehicle_rollout(cfg, bootstrap, run_dir, topics.models, stop)
        _say("4/8 replaying the drive through the edge agent into Kafka")
        first = _replay(drive, cfg, speed, out / "report", bootstrap, topics.frames, None)
        _say("5/8 waiting for the ingest service to queue every selected frame")
        queued = ingest.wait_for(first.summary.frames_selected, timeout_s=120.0)
        _say(f"    label queue ({run_dir / 'queue.sqlite'}): {json.dumps(queued)}")
        _say("6/8 an annotator labels the queue over the labeling API (the drive's real boxes)")
        t_labels = time.monotonic()
        done = annotate(ingest.api_url, TOKEN, DriveTruth(DATA))
        t_labelled = time.monotonic()
        _say(f"    {done}")
        _say("7/8 retraining the camera model on the labels (on demand, as a labeling lead)")
        job = ingest.retrain("camera", timeout_s=900.0)
        t_trained = time.monotonic()
        _say(f"    job {job['id']} {job['state']}: {job['detail']}")
        version = _wait_for_rollout(vehicle, job, timeout_s=120.0)
        t_swapped = time.monotonic()
        _say(
            f"    labels to the vehicle's swap: {t_swapped - t_labels:.1f} s (labeling over the "
            f"API {t_labelled - t_labels:.1f} s, retrain job incl. registry and publish "
            f"{t_trained - t_labelled:.1f} s, then until the vehicle swapped "
            f"{t_swapped - t_trained:.1f} s)"
        )
        _say("8/8 replaying the drive again with the model the vehicle now runs")
        second = _replay(
            drive, cfg, speed, out / "report-retrained", bootstrap, topics.frames, cfg.manifest_path
        )
        _compare(first, second, version)
    finally:
        stop.set()
        ingest.stop()
    return LoopRun(first, queued, done, job, version, second)


def demo_agent_config(path: Path, models: Path, out: Path) -> AgentConfig:
    """The demo's agent configuration, its models from ``models``, its state under ``out``
    (a new run starts from the configured models: the last run's rollout is forgotten)."""
    cfg = load_agent_config(path)
    cfg = dataclasses.replace(
        cfg,
        agent=dataclasses.replace(cfg.agent, data_dir=out / "agent"),
        models=dataclasses.replace(
            cfg.models, camera=models / "camera.onnx", lidar=models / "lidar.onnx"
        ),
    )
    cfg.manifest_path.unlink(missing_ok=True)
    shutil.rmtree(cfg.agent.data_dir / "models", ignore_errors=True)
    return cfg


def _replay(
    drive: Path,
    cfg: AgentConfig,
    speed: str,
    report: Path,
    bootstrap: str,
    topic: str,
    manifest_path: Path | None,
) -> ReplayResult:
    result = replay(
        drive,
        cfg,
        speed=parse_speed(speed),
        report_dir=report,
        kafka=bootstrap,
        topic=topic,
        progress=sys.stderr.isatty(),
        manifest_path=manifest_path,
    )
    s = result.summary
    _say(
        f"    {s.frames_selected}/{s.frames_total} frames selected "
        f"({s.selection_rate:.1%} of {s.frames_scored} scored; budget {s.budget:.0%}), "
        f"{s.frames_per_second:.1f} frames/s on {s.provider}; models {json.dumps(s.model_versions)}"
    )
    _say(f"    not selected, by reason: {json.dumps(s.dropped_by_reason)}")
    return result


def _compare(first: ReplayResult, second: ReplayResult, version: str) -> None:
    def picked(result: ReplayResult) -> set[int]:
        return {r.seq for r in result.rows if r.selected}

    a, b = picked(first), picked(second)
    _say(
        f"    with {version}: {len(b)} selected, {len(a & b)} of them also before; "
        f"newly selected frames {sorted(b - a)}, no longer selected {sorted(a - b)}"
    )


TOKEN = "demo-token-0123456789abcdef"
FINISHED = ("succeeded", "failed", "rejected")


class _Ingest:
    """The centre for the demo, in this process: consumer, labeling API, retrain scheduler and
    worker (the camera fine-tune trainer as a subprocess), MLflow registry, signed rollout."""

    def __init__(
        self,
        bootstrap: str,
        run_dir: Path,
        models: Path,
        topics: Topics,
        *,
        epochs: int,
        margin: float,
    ) -> None:
        from ingest_service.config import load_ingest_config
        from ingest_service.service import IngestService

        tokens = run_dir / "tokens.toml"
        tokens.write_text(f'"{TOKEN}" = "demo-annotator"\n')
        generate_keypair(run_dir / "centre.pem", run_dir / "fleet.pub.pem")
        trainer = [sys.executable, "-m", "ingest_service.training.finetune"]
        trainer += ["--models", str(models), "--data", str(DATA), "--epochs", str(epochs)]
        trainer += ["--margin", str(margin)]
        cfg = load_ingest_config(
            data={
                "kafka": {"bootstrap_servers": [bootstrap], "topic": topics.frames},
                "queue": {"database": str(run_dir / "queue.sqlite")},
                "blobs": {"root": str(run_dir / "blobs")},
                "api": {"enabled": True, "port": 0, "tokens_file": str(tokens)},
                "metrics": {"port": 0},
                "retrain": {
                    "enabled": True,
                    "tick_s": 0.5,
                    "command": trainer,
                    "work_dir": str(run_dir / "retrain"),
                    # on demand in the demo (step 7); by policy, after this many new labels
                    "camera": {"every_labels": 1000, "timeout_s": 900.0},
                    "lidar": {"every_labels": 1000},
                },
                "registry": {"data_dir": str(run_dir / "registry")},
                "rollout": {
                    "topic": topics.models,
                    "signing_key": str(run_dir / "centre.pem"),
                    "auto_publish": True,
                },
            }
        )
        self.service = IngestService(cfg, tokens={TOKEN: "demo-annotator"})
        self.service.start()
        self.api_url = f"http://127.0.0.1:{self.service.api_port}/v1"

    def stats(self) -> dict[str, int]:
        return self.service.queue_stats()

    def wait_for(self, tasks: int, timeout_s: float) -> dict[str, int]:
        deadline = time.monotonic() + timeout_s
        stats = self.stats()
        while time.monotonic() < deadline and sum(stats.values()) < tasks:
            time.sleep(0.5)
            stats = self.stats()
        if sum(stats.values()) < tasks:
            _say(f"    only {sum(stats.values())} of {tasks} tasks after {timeout_s:.0f} s")
        return stats

    def _call(self, method: str, path: str) -> Any:
        req = urllib.request.Request(
            f"{self.api_url}{path}", method=method, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def retrain(self, kind: str, timeout_s: float) -> dict[str, Any]:
        """Ask for a retrain over the API and wait for the job to finish."""
        job: dict[str, Any] = self._call("POST", f"/retrain/{kind}")["job"]
        _say(f"    job {job['id']} queued ({job['trigger']}, {job['labels_at']} labels)")
        deadline = time.monotonic() + timeout_s
        while job["state"] not in FINISHED and time.monotonic() < deadline:
            time.sleep(1.0)
            jobs = self._call("GET", f"/retrain/jobs?kind={kind}")
            job = next(j for j in jobs if j["id"] == job["id"])
        if job["state"] not in FINISHED:
            raise RuntimeError(f"retrain job {job['id']} still {job['state']} after {timeout_s} s")
        return job

    def stop(self) -> None:
        self.service.request_stop()
        self.service.close()


def _start_vehicle_rollout(
    cfg: AgentConfig, bootstrap: str, run_dir: Path, topic: str, stop: threading.Event
) -> ModelRollout:
    """The vehicle's model-update listener (as in ``edge-agent run`` with rollout enabled):
    it checks the centre's signature, stores the model and records it in the active-model
    manifest, which the next start (here: the second replay) runs."""
    camera, lidar = load_slots(cfg)
    slots = {k: s for k, s in (("camera", camera), ("lidar", lidar)) if s is not None}
    rollout = ModelRollout(
        slots,
        cfg.agent.data_dir / "models",
        manifest_path=cfg.manifest_path,
        keep=[p for p in (cfg.models.camera, cfg.models.lidar) if p is not None],
        public_key=load_public_key(run_dir / "fleet.pub.pem"),
        vehicle_id=cfg.agent.vehicle_id,
    )
    start_listener(
        rollout,
        bootstrap_servers=(bootstrap,),
        topic=topic,
        group_id=f"edge-{cfg.agent.vehicle_id}",
        security={},
        stop=stop,
    )
    return rollout


def _wait_for_rollout(rollout: ModelRollout, job: dict[str, Any], timeout_s: float) -> str:
    """The camera model version the vehicle runs once the job's model reached it."""
    slot = rollout.slots["camera"]
    if job["state"] != "succeeded":
        _say(f"    nothing to roll out: the job {job['state']}; the vehicle keeps its model")
        return slot.current.metadata.version
    deadline = time.monotonic() + timeout_s
    wanted = f"-ft{job['id']}"
    while time.monotonic() < deadline:
        version = slot.current.metadata.version
        if version.endswith(wanted):
            entry = manifest.read(rollout.manifest_path or Path()).get("camera")
            where = entry.current.path if entry else "?"
            _say(f"    the vehicle verified the signature and swapped to {version} ({where})")
            return version
        time.sleep(0.5)
    raise RuntimeError(f"the vehicle did not receive the model of job {job['id']} in {timeout_s} s")


if __name__ == "__main__":
    sys.exit(main())
