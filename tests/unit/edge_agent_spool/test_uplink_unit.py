"""The kafka-python log summariser and the bounded wait, with a fake clock."""

from __future__ import annotations

import logging

import pytest

from edge_agent.uplink import KafkaLogSummary, install_kafka_log_summary, remove_kafka_log_summary


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_reconnect_noise_becomes_one_line_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    target = logging.getLogger("test.kafka_summary")
    summary = KafkaLogSummary(30.0, target, clock=clock)
    client = logging.getLogger("kafka.net.manager.test")
    client.addHandler(summary)
    client.propagate = False
    client.setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="test.kafka_summary")
    try:
        # two lines a second for two minutes, as kafka-python does with no broker
        for i in range(240):
            clock.now = i * 0.5
            level = logging.ERROR if i % 2 else logging.INFO
            client.log(level, "Connection failed: %s", f"ECONNREFUSED #{i}")
        summary.close()
    finally:
        client.removeHandler(summary)
        client.propagate = True
        client.setLevel(logging.NOTSET)
    lines = [r for r in caplog.records if r.name == "test.kafka_summary"]
    # the first error at once, then one per 30 s interval, and what was left at close
    assert 4 <= len(lines) <= 6
    assert "ECONNREFUSED #1" in lines[0].getMessage()
    assert "ECONNREFUSED #239" in lines[-1].getMessage()
    assert all(r.levelno == logging.WARNING for r in lines)
    counted = sum(int(r.getMessage().split(": ", 1)[1].split(" ", 1)[0]) for r in lines)
    assert counted == 240


def test_install_routes_the_kafka_loggers_and_remove_restores_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    # an in-process `ingest-service` CLI test may have quietened the kafka loggers: the
    # summary sees what kafka-python's own level lets through, so start from the default
    caplog.set_level(logging.NOTSET, logger="kafka")
    summary = install_kafka_log_summary(30.0)
    assert summary is not None
    try:
        logging.getLogger("kafka.conn").error("refused")
        logging.getLogger("kafka.conn").error("refused again")
    finally:
        remove_kafka_log_summary(summary)
    names = [r.name for r in caplog.records]
    assert "kafka.conn" not in names
    assert names.count("edge_agent.kafka_client") == 2  # the first at once, the rest at close
    assert logging.getLogger("kafka").propagate
    assert install_kafka_log_summary(0.0) is None
