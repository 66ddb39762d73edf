"""The edge agent against a real Kafka broker: replay into a topic, the daemon killed and
restarted, the broker stopped for a while during a replay, SIGTERM draining."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.demo.build_drive import build as build_demo_drive
from deploy.kafka.broker import LocalKafka
from edge_agent.config import AgentConfig, load_agent_config
from edge_agent.frame import Frame
from edge_agent.replay import replay
from edge_agent.sources import open_source, write_spool_frame
from tests.support.agent_process import spawn_agent
from tests.support.frames_topic import frames_on
from tests.support.kafka_leaks import LEAK_FILTER, collect_leaked_sockets
from tests.support.tiny_models import build_camera, build_lidar

__all__ = ["collect_leaked_sockets"]  # the autouse fixture, imported to take effect

pytestmark = [pytest.mark.integration, LEAK_FILTER]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def drive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_drive(tmp_path_factory.mktemp("drive"), frames=30)


def _config_data(tmp: Path) -> dict[str, object]:
    cam = build_camera(tmp / "camera.onnx")
    lid = build_lidar(tmp / "lidar.onnx")
    return {
        "agent": {"vehicle_id": "veh-k", "data_dir": str(tmp / "agent"), "seed": 5},
        "models": {"camera": str(cam), "lidar": str(lid)},
        "selector": {
            "budget": {"target_rate": 0.5, "cold_start_frames": 0, "window": 10},
            "diversity": "none",
        },
    }


def _config(tmp: Path) -> AgentConfig:
    return load_agent_config(data=_config_data(tmp))


def _consume_frames(bootstrap: str, topic: str, want: set[str], timeout_s: float) -> dict[str, int]:
    """Read the topic from the start until every key in ``want`` came whole; key -> count."""
    seen: dict[str, int] = {}
    frames = frames_on(bootstrap, topic, timeout_s)
    try:
        for env in frames:
            seen[env.key] = seen.get(env.key, 0) + 1
            if want <= set(seen):
                break
    finally:
        frames.close()
    missing = want - set(seen)
    assert not missing, f"{len(missing)} selected frame(s) never arrived: {sorted(missing)[:5]}"
    return seen


def test_replay_sends_every_selected_frame(
    kafka: LocalKafka, topic: str, drive: Path, tmp_path: Path
) -> None:
    result = replay(drive, _config(tmp_path), kafka=kafka.bootstrap, topic=topic)
    selected = {f"veh-k/{result.summary.drive}/{seq:06d}" for seq in result.summary.selected_seqs}
    assert len(selected) >= 5
    seen = _consume_frames(kafka.bootstrap, topic, selected, timeout_s=60)
    assert set(seen) == selected  # only the selected frames left the vehicle


def test_broker_stopped_for_a_while_during_a_replay(drive: Path, tmp_path: Path) -> None:
    with LocalKafka() as broker:
        broker.create_topic("frames", partitions=3)
        box: dict[str, object] = {}

        def run() -> None:
            # 30 frames at 4x real time: ~0.75 s of replay; the outage spans most of it
            box["result"] = replay(
                drive, _config(tmp_path), kafka=broker.bootstrap, topic="frames", speed=4.0
            )

        broker.kill()
        thread = threading.Thread(target=run)
        thread.start()
        time.sleep(3.0)
        assert thread.is_alive(), "the replay must wait for the broker, not give up or crash"
        broker.restart()
        thread.join(timeout=150)
        assert not thread.is_alive(), "replay did not finish after the broker came back"
        result = box["result"]
        summary = result.summary  # type: ignore[attr-defined]
        want = {f"veh-k/{summary.drive}/{s:06d}" for s in summary.selected_seqs}
        _consume_frames(broker.bootstrap, "frames", want, timeout_s=60)


def _agent_env(cfg_file: Path, bootstrap: str, topic: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "FLEETAL_KAFKA__BOOTSTRAP_SERVERS": f'["{bootstrap}"]',
            "FLEETAL_KAFKA__TOPIC": topic,
            "PYTHONPATH": str(REPO),
        }
    )
    return env


def _write_config(tmp: Path, spool_dir: Path) -> Path:
    data = _config_data(tmp)
    lines = [
        "[agent]",
        'vehicle_id = "veh-k"',
        f'data_dir = "{tmp / "agent"}"',
        "drain_timeout_s = 30.0",
        "state_every_frames = 5",
        "[source]",
        'kind = "spool_dir"',
        f'path = "{spool_dir}"',
        "[models]",
        f'camera = "{data["models"]["camera"]}"',  # type: ignore[index]
        f'lidar = "{data["models"]["lidar"]}"',  # type: ignore[index]
        "[selector]",
        'diversity = "none"',
        "[selector.budget]",
        "target_rate = 1.0",  # every frame selected: all must arrive, whatever the crash
        "cold_start_frames = 0",
        "window = 10",
        "[metrics]",
        "port = 0",
    ]
    path = tmp / "agent.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _frames(drive: Path) -> Iterator[Frame]:
    with open_source(drive, vehicle_id="veh-k") as src:  # type: ignore[attr-defined]
        for item in src.frames():
            if isinstance(item, Frame):
                yield item


def _spool_keys(agent_dir: Path) -> int:
    import sqlite3

    path = agent_dir / "spool.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT count(*) FROM frames").fetchone()[0])
    except sqlite3.Error:
        return -1


def test_daemon_killed_mid_send_then_sigterm_drains(
    kafka: LocalKafka, topic: str, drive: Path, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "bridge"
    spool_dir.mkdir()
    cfg = _write_config(tmp_path, spool_dir)
    env = _agent_env(cfg, kafka.bootstrap, topic)
    log = tmp_path / "agent.log"
    frames = list(_frames(drive))
    first, second = frames[:15], frames[15:]
    for frame in first:
        write_spool_frame(spool_dir, frame)
    agent = spawn_agent(cfg, env, log)
    # kill -9 once the bridge's first frames have been consumed
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(spool_dir.glob("*.npz"))) > 8:
        time.sleep(0.05)
    agent.send_signal(signal.SIGKILL)
    agent.wait(timeout=10)
    # the bridge keeps writing; the agent comes back and carries on
    for frame in second:
        write_spool_frame(spool_dir, frame)
    agent = spawn_agent(cfg, env, log)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and any(spool_dir.glob("*.npz")):
        time.sleep(0.1)
    assert not any(spool_dir.glob("*.npz")), (
        f"agent did not take every frame:\n{log.read_text()[-3000:]}"
    )
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=60) == 0, log.read_text()[-3000:]
    assert "draining" in log.read_text()
    # at a 100 % budget every frame is selected: each one arrived despite the kill -9
    # (at least once; ingest de-duplicates), and nothing is left in the spool
    assert _spool_keys(tmp_path / "agent") == 0
    want = {f"veh-k/{f.drive_id}/{f.seq:06d}" for f in frames}
    seen = _consume_frames(kafka.bootstrap, topic, want, timeout_s=60)
    assert set(seen) == want
    print(f"\nkill -9 mid-send: {sum(seen.values()) - len(seen)} frame(s) delivered twice")
