"""``make demo``: the main job end to end on the bundled real drive.

1. build the demo drive from ``data/`` (``deploy/demo/build_drive.py``; cached under ``var/``);
2. start a local Apache Kafka (KRaft, one node; ``deploy/kafka``);
3. start the ingest service's consumer into a SQLite label queue and a blob store (``var/``);
4. replay the drive through the edge agent's pipeline (``edge-agent replay --kafka``): gate,
   reference models on onnxruntime, selector, encoder, spool, Kafka sink;
5. wait until every selected frame is a label task, print the queue, the report and the plots.

Models are trained beforehand by ``make`` (``models/``); run ``python -m deploy.demo.run --help``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
import urllib.request
from pathlib import Path

from deploy.demo.build_drive import build as build_drive
from deploy.kafka.broker import LocalKafka, ensure_jars
from edge_agent.config import load_agent_config
from edge_agent.replay import replay

ROOT = Path(__file__).resolve().parents[2]
VAR = ROOT / "var" / "demo"
TOPIC = "fleet.frames"

log = logging.getLogger("demo")


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", type=Path, default=ROOT / "deploy" / "demo" / "agent.toml")
    p.add_argument("--out", type=Path, default=VAR)
    p.add_argument("--speed", default="max", help="replay speed: max, realtime or a factor")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out: Path = args.out
    for model in ("camera.onnx", "lidar.onnx"):
        if not (ROOT / "models" / model).is_file():
            _say(f"models/{model} is missing: run `make demo` (it trains the reference models)")
            return 1

    _say("1/5 building the demo drive from data/ (real timestamps, track, images, sweeps)")
    drive = build_drive(out)
    _say(f"    {drive}")

    _say("2/5 starting Apache Kafka (KRaft, single node) on a free loopback port")
    ensure_jars()
    run_dir = out / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    with LocalKafka() as kafka:
        _say(f"    bootstrap {kafka.bootstrap}, started in {kafka.start_time_s:.1f} s")
        kafka.create_topic(TOPIC, partitions=3)
        ingest = _start_ingest(kafka.bootstrap, run_dir)
        try:
            _say("4/5 replaying the drive through the edge agent into Kafka")
            cfg = load_agent_config(args.config)
            from edge_agent.replay import parse_speed

            result = replay(
                drive,
                cfg,
                speed=parse_speed(args.speed),
                report_dir=out / "report",
                kafka=kafka.bootstrap,
                topic=TOPIC,
                progress=sys.stderr.isatty(),
            )
            s = result.summary
            _say(
                f"    {s.frames_selected}/{s.frames_total} frames selected "
                f"({s.selection_rate:.1%} of {s.frames_scored} scored; budget {s.budget:.0%}), "
                f"{s.frames_per_second:.1f} frames/s on {s.provider}"
            )
            _say(f"    not selected, by reason: {json.dumps(s.dropped_by_reason)}")
            _say("5/5 waiting for the ingest service to queue every selected frame")
            stats = ingest.wait_for(s.frames_selected, timeout_s=120.0)
            _say(f"    label queue ({run_dir / 'queue.sqlite'}): {json.dumps(stats)}")
            _say(f"    labeling API: {ingest.label_one()}")
        finally:
            ingest.stop()
    _say("report:")
    for path in result.report_files:
        print(f"    {path}")
    return 0


TOKEN = "demo-token-0123456789abcdef"


class _Ingest:
    """The ingest service (consumer + labeling API), run in this process for the demo."""

    def __init__(self, bootstrap: str, run_dir: Path) -> None:
        from ingest_service.config import load_ingest_config
        from ingest_service.service import IngestService

        tokens = run_dir / "tokens.toml"
        tokens.write_text(f'"{TOKEN}" = "demo-annotator"\n')
        cfg = load_ingest_config(
            data={
                "kafka": {"bootstrap_servers": [bootstrap], "topic": TOPIC},
                "queue": {"database": str(run_dir / "queue.sqlite")},
                "blobs": {"root": str(run_dir / "blobs")},
                "api": {"enabled": True, "port": 0, "tokens_file": str(tokens)},
                "metrics": {"port": 0},
            }
        )
        self.service = IngestService(cfg, tokens={TOKEN: "demo-annotator"})
        self.service.start()

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

    def label_one(self) -> str:
        """Claim the most valuable task over the labeling API and skip it: the annotator's loop."""
        url = f"http://127.0.0.1:{self.service.api_port}/v1"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        req = urllib.request.Request(f"{url}/tasks/claim", method="POST", headers=headers)
        with urllib.request.urlopen(req, timeout=10) as resp:
            if resp.status == 204:
                return "nothing to claim"
            task = json.loads(resp.read())
        return (
            f"claimed task {task.get('task_id')} ({task.get('frame_key')}, priority "
            f"{float(task.get('priority', 0.0)):.3f}) over {url}"
        )

    def stop(self) -> None:
        self.service.request_stop()
        self.service.close()


def _start_ingest(bootstrap: str, run_dir: Path) -> _Ingest:
    _say("3/5 starting the ingest service (consumer -> blob store + SQLite label queue, API)")
    return _Ingest(bootstrap, run_dir)


if __name__ == "__main__":
    sys.exit(main())
