"""``edge-agent replay --kafka`` with no broker ends, within its timeout, and keeps the frames.

Nothing listens on the port of the first part (a real closed port: the connects are refused by
the kernel); the frames the replay kept are then sent with ``edge-agent send`` to the real
broker and read back from the topic.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from pathlib import Path

import pytest

from deploy.demo.build_drive import build as build_demo_drive
from deploy.kafka.broker import LocalKafka
from edge_agent.cli import main
from edge_agent.spool import Spool
from tests.integration.test_agent_kafka import _consume_frames
from tests.support.kafka_leaks import LEAK_FILTER, collect_leaked_sockets
from tests.support.tiny_models import build_camera, build_lidar

__all__ = ["collect_leaked_sockets"]  # the autouse fixture, imported to take effect

pytestmark = [pytest.mark.integration, LEAK_FILTER]

STALL_S = 4.0
SUMMARY_S = 2.0


def _closed_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config_file(tmp: Path) -> Path:
    cam = build_camera(tmp / "camera.onnx")
    lid = build_lidar(tmp / "lidar.onnx")
    path = tmp / "agent.toml"
    path.write_text(
        "\n".join(
            [
                "[agent]",
                'vehicle_id = "veh-b"',
                f'data_dir = "{tmp / "agent"}"',
                "[models]",
                f'camera = "{cam}"',
                f'lidar = "{lid}"',
                "[selector]",
                'diversity = "none"',
                "[selector.budget]",
                "target_rate = 0.5",
                "cold_start_frames = 0",
                "window = 10",
                "[kafka]",
                f"stall_timeout_s = {STALL_S}",
                f"log_summary_s = {SUMMARY_S}",
                "bootstrap_timeout_ms = 1000",
                "max_block_ms = 1000",
                "backoff_initial_s = 0.2",
                "backoff_max_s = 1.0",
                "",
            ]
        )
    )
    return path


def test_replay_without_broker_ends_keeps_the_spool_and_send_delivers_it_later(
    kafka: LocalKafka,
    topic: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    drive = build_demo_drive(tmp_path / "drive", frames=20)
    cfg = _config_file(tmp_path)
    address = f"127.0.0.1:{_closed_port()}"
    caplog.set_level(logging.INFO)
    start = time.monotonic()
    rc = main(["replay", str(drive), "--config", str(cfg), "--kafka", address, "--no-progress"])
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err

    assert rc == 1
    # one clear message naming the address and the kept spool, not a traceback
    assert f"Kafka at {address} acknowledged nothing for {STALL_S:.0f} s" in err
    assert "Traceback" not in err
    # bounded: the stall timeout, plus scoring 20 frames, plus one bootstrap attempt to finish
    assert elapsed < STALL_S + 25.0
    kept = sorted((tmp_path / "agent" / "replay-spools").glob("*.sqlite"))
    assert len(kept) == 1
    assert str(kept[0]) in err
    # kafka-python's own lines never reach the log (with nothing listening no client is even
    # built, schemas.kafka_net); what is said of the link is a few lines naming the address
    kafka_lines = [r for r in caplog.records if r.name.split(".")[0] == "kafka"]
    said = [r for r in caplog.records if r.name in ("edge_agent.kafka_client", "edge_agent.sink")]
    assert kafka_lines == []
    assert 1 <= len(said) <= 2 * (elapsed / SUMMARY_S + 2)
    assert any(address in r.getMessage() for r in said)

    with Spool(kept[0], max_bytes=1 << 30) as spool:
        keys = set(spool.keys())
    assert len(keys) >= 3

    # later, with a broker: `edge-agent send` delivers what the replay kept, then deletes it
    rc = main(["send", str(kept[0]), "--kafka", kafka.bootstrap, "--topic", topic])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"{len(keys)} frame(s) sent, 0 left" in out
    assert not kept[0].exists()
    seen = _consume_frames(kafka.bootstrap, topic, keys, timeout_s=60)
    assert set(seen) == keys
    print(f"\nreplay with no broker at {address}: exit 1 after {elapsed:.1f} s")


def test_replay_into_a_topic_that_refuses_every_frame_ends_at_once_with_them_held(
    kafka: LocalKafka, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = f"t-refusing-{time.monotonic_ns()}"
    kafka.create_topic(topic, partitions=3, configs={"max.message.bytes": "20000"})
    drive = build_demo_drive(tmp_path / "drive", frames=10)
    cfg = _config_file(tmp_path)
    start = time.monotonic()
    args = ["replay", str(drive), "--config", str(cfg), "--kafka", kafka.bootstrap]
    rc = main([*args, "--topic", topic, "--no-progress"])
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    print(f"\nreplay into a refusing topic: exit {rc} after {elapsed:.1f} s")
    assert rc == 1
    assert f"Kafka at {kafka.bootstrap} refused" in err
    assert "MessageSizeTooLargeError" in err
    kept = sorted((tmp_path / "agent" / "replay-spools").glob("*.sqlite"))
    assert len(kept) == 1
    with Spool(kept[0], max_bytes=1 << 30) as spool:
        stats = spool.stats()
        assert stats.held == stats.frames
        assert stats.held >= 3
    assert elapsed < STALL_S * 10  # held frames end the wait: no stall timeout to sit out
