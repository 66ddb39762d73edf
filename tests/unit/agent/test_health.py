"""The agent's health from what it does: uplink, spool age, model errors, source stalls; and
``edge-agent check`` against a configuration and model files, without a daemon."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from edge_agent.cli import main
from edge_agent.config import MetricsSection
from edge_agent.health import HealthMonitor
from edge_agent.sink import SinkStats
from edge_agent.spool import Spool, SpoolStats
from tests.support.tiny_models import build_camera, build_lidar


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sink_stats(last_delivery_at: float | None, started_at: float = 1000.0) -> SinkStats:
    return SinkStats(
        frames_sent_total=0,
        chunks_sent_total=0,
        bytes_sent_total=0,
        send_errors_total=0,
        send_errors_by_type={},
        rounds_failed_total=0,
        producer_errors_total=0,
        dead_letter_total=0,
        spool_errors_total=0,
        latency_seconds_sum=0.0,
        latency_seconds_count=0,
        last_latency_s=0.0,
        consecutive_failures=0,
        backoff_s=0.0,
        connected=True,
        last_delivery_at=last_delivery_at,
        started_at=started_at,
    )


def spool_stats(pending: int, oldest_age_s: float, held: int = 0) -> SpoolStats:
    return SpoolStats(
        frames=pending + held,
        bytes=0,
        max_bytes=1,
        pending=pending,
        inflight=0,
        oldest_age_s=oldest_age_s,
        stored_total=0,
        duplicate_total=0,
        rejected_total=0,
        evicted_total=0,
        evicted_bytes_total=0,
        acked_total=0,
        nacked_total=0,
        dropped_total=0,
        errors_total=0,
        corrupt_recoveries_total=0,
        salvaged_total=0,
        held=held,
    )


def monitor(clock: Clock, sink: SinkStats, spool: SpoolStats, **cfg: float) -> HealthMonitor:
    settings: dict[str, float] = {
        "health_max_send_age_s": 60.0,
        "health_max_spool_age_s": 600.0,
        "health_max_source_gap_s": 30.0,
    }
    settings.update(cfg)
    return HealthMonitor(
        MetricsSection(**settings),  # type: ignore[arg-type]
        sink_stats=lambda: sink,
        spool_stats=lambda: spool,
        clock=clock,
    )


def test_kafka_down_fails_the_uplink_check_once_frames_wait_past_the_threshold() -> None:
    clock = Clock()
    m = monitor(clock, sink_stats(None), spool_stats(pending=5, oldest_age_s=30.0))
    m.frame("below_threshold")
    assert m.report().ok  # 30 s of backlog, under the 60 s threshold
    clock.now += 100
    m.frame("below_threshold")
    stalled = monitor(clock, sink_stats(None), spool_stats(pending=5, oldest_age_s=130.0))
    stalled.frame("selected")
    report = stalled.report()
    assert not report.ok
    assert report.failed == ("uplink",)
    assert report.text.startswith("unhealthy: uplink\nuplink: FAILED last delivery never")


def test_a_frame_arriving_after_an_idle_hour_is_no_stall_and_an_empty_spool_never_is() -> None:
    clock = Clock()
    clock.now += 3600
    m = monitor(clock, sink_stats(1000.0), spool_stats(pending=1, oldest_age_s=2.0))
    m.frame("selected")
    assert m.report().ok
    empty = monitor(clock, sink_stats(None, started_at=0.0), spool_stats(0, 0.0))
    empty.frame("selected")
    assert empty.report().ok


def test_old_waiting_frames_fail_the_spool_check_but_held_ones_do_not_count() -> None:
    clock = Clock()
    recent = sink_stats(clock.now - 1)
    m = monitor(clock, recent, spool_stats(pending=3, oldest_age_s=700.0))
    m.frame("selected")
    assert m.report().failed == ("spool",)
    held_only = monitor(clock, recent, spool_stats(pending=0, oldest_age_s=0.0, held=2))
    held_only.frame("selected")
    report = held_only.report()
    assert report.ok
    assert "2 held" in report.text


def test_every_frame_failing_in_the_model_fails_the_model_check() -> None:
    clock = Clock()
    m = monitor(clock, sink_stats(clock.now), spool_stats(0, 0.0))
    for _ in range(10):
        m.frame("model_error")
    assert m.report().ok  # not judged before health_model_min_frames (20)
    for _ in range(30):
        m.frame("model_error")
        m.frame("quality_image_dark")  # never reached the model: not counted either way
    report = m.report()
    assert report.failed == ("model",)
    assert "40 of the last 40" in report.text
    for _ in range(200):
        m.frame("below_threshold")
    assert m.report().ok  # the window moved on


def test_a_stalled_source_fails_the_source_check_and_the_metrics_show_it() -> None:
    clock = Clock()
    m = monitor(clock, sink_stats(clock.now), spool_stats(0, 0.0))
    registry = CollectorRegistry()
    m.register(registry)
    m.frame("selected")
    assert registry.get_sample_value("fleetal_edge_healthy") == 1
    clock.now += 31
    assert m.report().failed == ("source",)
    assert registry.get_sample_value("fleetal_edge_healthy") == 0
    labels = {"check": "source"}
    assert registry.get_sample_value("fleetal_edge_health_check_failed", labels) == 1
    m.fail("spool broke")
    assert m.report().failed == ("daemon", "source")


def _config(tmp_path: Path, *extra: str) -> Path:
    cam = build_camera(tmp_path / "camera.onnx")
    lid = build_lidar(tmp_path / "lidar.onnx")
    path = tmp_path / "agent.toml"
    path.write_text(
        "\n".join(
            [
                "[agent]",
                f'data_dir = "{tmp_path / "agent"}"',
                "[models]",
                f'camera = "{cam}"',
                f'lidar = "{lid}"',
                "[metrics]",
                "port = 0",  # no daemon to ask: the local checks run
                *extra,
                "",
            ]
        )
    )
    return path


def test_check_refuses_what_run_refuses_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path)  # no [source] path: run stops at once
    assert main(["check", "--config", str(cfg)]) == 2
    assert "source.path is not set" in capsys.readouterr().err
    assert main(["run", "--config", str(cfg)]) == 2
    assert "source.path is not set" in capsys.readouterr().err


def test_check_verifies_model_files_without_building_sessions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import edge_agent.models.runner as runner

    def no_sessions(*args: object, **kwargs: object) -> None:
        raise AssertionError("check built an onnxruntime session")

    monkeypatch.setattr(runner.ModelRunner, "_create_session", no_sessions)
    source = tmp_path / "bridge"
    cfg = _config(tmp_path, "[source]", f'path = "{source}"')
    assert main(["check", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "tiny-camera" in out
    assert "metadata valid" in out
    assert out.rstrip().endswith("edge-agent check: ok")
    # a held frame in the spool is shown; a corrupt model file is a problem (exit 1)
    with Spool(tmp_path / "agent" / "spool.sqlite", max_bytes=1 << 20) as spool:
        spool.put("veh/d/000001", b"x" * 10, 0.9)
        spool.lease(1, 100)
        spool.hold({"veh/d/000001": "MessageSizeTooLargeError"})
    (tmp_path / "lidar.onnx").write_bytes(b"not onnx")
    assert main(["check", "--config", str(cfg)]) == 1
    captured = capsys.readouterr()
    assert "1 held" in captured.out
    assert "veh/d/000001 (10 bytes): MessageSizeTooLargeError" in captured.out
    assert "models.lidar" in captured.err


def test_a_spool_that_cannot_be_read_is_unhealthy_not_a_crash() -> None:
    def closed() -> SpoolStats:
        raise ValueError("spool var/edge/spool.sqlite is closed")

    m = HealthMonitor(MetricsSection(), spool_stats=closed, sink_stats=lambda: sink_stats(None))
    m.frame("selected")
    report = m.report()
    assert report.failed == ("spool",)
    assert "cannot be read: spool var/edge/spool.sqlite is closed" in report.text
